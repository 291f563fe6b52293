"""A float64 reference for attention, written independently of forge_flash's naive path.

It is deliberately the plainest formula: repeat K/V heads explicitly, materialise every
score, mask with explicit index comparisons, softmax, multiply.
"""

from __future__ import annotations

import torch


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    causal: bool = False,
    key_lengths: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q (b, sq, h, d), k/v (b, sk, hk, d) -> out (b, sq, h, d), lse (b, h, sq), both float64
    on the inputs' device.

    Query head h reads KV head h // (h_total // hk). Causal is bottom-right aligned relative to
    each row's key count; ``key_lengths[b]`` limits row b to its first keys.
    """
    batch, seqlen_q, heads, head_dim = q.shape
    seqlen_k, heads_k = k.shape[1], k.shape[2]
    if scale is None:
        scale = head_dim**-0.5
    group = heads // heads_k
    # Computed where the inputs live (the GPU tests' references would take minutes on a CPU).
    device = q.device
    q64 = q.double()
    k64 = k.double().repeat_interleave(group, dim=2)
    v64 = v.double().repeat_interleave(group, dim=2)
    scores = torch.einsum("bqhd,bkhd->bhqk", q64, k64) * scale
    rows = torch.arange(seqlen_q, device=device).view(seqlen_q, 1)
    cols = torch.arange(seqlen_k, device=device).view(1, seqlen_k)
    lengths = key_lengths if key_lengths is not None else [seqlen_k] * batch
    visible = torch.zeros(batch, 1, seqlen_q, seqlen_k, dtype=torch.bool, device=device)
    for b, length in enumerate(lengths):
        seen = cols < length
        if causal:
            seen = seen & (cols <= rows + (length - seqlen_q))
        visible[b, 0] = seen
    scores = scores.masked_fill(~visible, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    finite_lse = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    probs = torch.exp(scores - finite_lse.unsqueeze(-1)) * visible
    out = torch.einsum("bhqk,bkhd->bqhd", probs, v64)
    return out, lse


def reference_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seqlens_q: list[int],
    seqlens_k: list[int],
    *,
    scale: float | None = None,
    causal: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed q (total_q, h, d) -> out (total_q, h, d), lse (h, total_q), one sequence at a time."""
    outs, lses = [], []
    q0 = k0 = 0
    for length_q, length_k in zip(seqlens_q, seqlens_k, strict=True):
        out, lse = reference_attention(
            q[q0 : q0 + length_q].unsqueeze(0),
            k[k0 : k0 + length_k].unsqueeze(0),
            v[k0 : k0 + length_k].unsqueeze(0),
            scale=scale,
            causal=causal,
        )
        outs.append(out[0])
        lses.append(lse[0])
        q0, k0 = q0 + length_q, k0 + length_k
    heads, head_dim = q.shape[1], q.shape[2]
    out = (
        torch.cat(outs)
        if outs
        else torch.zeros(0, heads, head_dim, dtype=torch.float64, device=q.device)
    )
    lse = (
        torch.cat(lses, dim=1)
        if lses
        else torch.zeros(heads, 0, dtype=torch.float64, device=q.device)
    )
    return out, lse
