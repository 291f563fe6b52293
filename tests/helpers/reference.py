"""A float64 reference for attention, written independently of forge_flash's naive path.

It is deliberately the plainest formula: repeat K/V heads explicitly, materialise every
score, mask with explicit index comparisons, softmax, multiply.

The variants (issue 14), with offset = (keys of the row's sequence) - seqlen_q:

* ``window_size=(left, right)``: query i sees key j iff
  ``i + offset - left <= j <= i + offset + right``; -1 leaves that side unbounded; causal forces
  right = 0;
* ``softcap > 0``: score = softcap * tanh(scale * q.k / softcap), before masks and biases;
* ``alibi_slopes`` (num_heads,) or (batch, num_heads): score -= slope * |i + offset - j|;
* ``sinks`` (num_heads,): one extra logit per query head in every row's logsumexp, whose value
  vector is zero. A row that sees no key gives output 0 and LSE = the sink (-inf without sinks).
"""

from __future__ import annotations

import torch

NO_WINDOW = (-1, -1)


def visible_keys(
    seqlen_q: int,
    seqlen_k: int,
    key_lengths: list[int],
    *,
    causal: bool = False,
    window_size: tuple[int, int] = NO_WINDOW,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """(batch, 1, seqlen_q, seqlen_k) bool: which keys each query row sees.

    Row b has ``key_lengths[b]`` keys (the first ones); its diagonal, the key aligned with query
    row i, is ``i + key_lengths[b] - seqlen_q`` (bottom-right alignment).
    """
    left, right = window_size
    if causal:
        right = 0
    rows = torch.arange(seqlen_q, device=device).view(seqlen_q, 1)
    cols = torch.arange(seqlen_k, device=device).view(1, seqlen_k)
    visible = torch.zeros(len(key_lengths), 1, seqlen_q, seqlen_k, dtype=torch.bool, device=device)
    for b, length in enumerate(key_lengths):
        diagonal = rows + (length - seqlen_q)
        seen = cols < length
        if right >= 0:
            seen = seen & (cols <= diagonal + right)
        if left >= 0:
            seen = seen & (cols >= diagonal - left)
        visible[b, 0] = seen
    return visible


def key_distance(
    seqlen_q: int, seqlen_k: int, key_lengths: list[int], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(batch, 1, seqlen_q, seqlen_k) float64: |i + offset_b - j|, the ALiBi distance."""
    rows = torch.arange(seqlen_q, device=device, dtype=torch.float64).view(seqlen_q, 1)
    cols = torch.arange(seqlen_k, device=device, dtype=torch.float64).view(1, seqlen_k)
    offsets = torch.tensor(
        [length - seqlen_q for length in key_lengths], dtype=torch.float64, device=device
    )
    return (rows + offsets.view(-1, 1, 1, 1) - cols).abs()


def per_row_slopes(alibi_slopes: torch.Tensor, batch: int, heads: int) -> torch.Tensor:
    """(batch, heads) float64 slopes from the (heads,) or (batch, heads) argument."""
    slopes = alibi_slopes.double()
    return slopes.expand(batch, heads) if slopes.dim() == 1 else slopes


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    scale: float | None = None,
    causal: bool = False,
    key_lengths: list[int] | None = None,
    window_size: tuple[int, int] = NO_WINDOW,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q (b, sq, h, d), k/v (b, sk, hk, d) -> out (b, sq, h, d), lse (b, h, sq), both float64
    on the inputs' device.

    Query head h reads KV head h // (h_total // hk). Causal masks and windows are bottom-right
    aligned relative to each row's key count; ``key_lengths[b]`` limits row b to its first keys
    (decode: the offset is then ``key_lengths[b] - seqlen_q``). ALiBi slopes and sinks are per
    query head.
    """
    batch, seqlen_q, heads, head_dim = q.shape
    seqlen_k, heads_k = k.shape[1], k.shape[2]
    if scale is None:
        scale = head_dim**-0.5
    group = heads // heads_k
    # Computed where the inputs live (the GPU tests' references would take minutes on a CPU).
    device = q.device
    # Query head h = kv * group + g: q viewed as (b, sq, heads_k, group, d) meets its KV head
    # without copying K/V once per query head (that copy was half of a long cache's reference).
    q64 = q.double().reshape(batch, seqlen_q, heads_k, group, head_dim)
    k64, v64 = k.double(), v.double()
    if key_lengths is not None:
        # Rows past a sequence's keys are no keys: whatever they hold (an unwritten cache slot
        # may hold NaN) must not reach the product with the probabilities as 0 * NaN.
        v64 = v64.clone()
        for b, length in enumerate(key_lengths):
            v64[b, max(length, 0) :] = 0
    scores = torch.einsum("bqkgd,bskd->bkgqs", q64, k64).reshape(batch, heads, seqlen_q, seqlen_k)
    scores = scores * scale
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    lengths = key_lengths if key_lengths is not None else [seqlen_k] * batch
    if alibi_slopes is not None:
        slopes = per_row_slopes(alibi_slopes.to(device), batch, heads)
        distance = key_distance(seqlen_q, seqlen_k, lengths, device)
        scores = scores - slopes.view(batch, heads, 1, 1) * distance
    visible = visible_keys(
        seqlen_q, seqlen_k, lengths, causal=causal, window_size=window_size, device=device
    )
    scores = scores.masked_fill(~visible, float("-inf"))
    logits = scores
    if sinks is not None:
        # The sink: one more logit per row whose value vector is zero.
        sink_column = sinks.double().to(device).view(1, heads, 1, 1).expand(batch, -1, seqlen_q, 1)
        logits = torch.cat([scores, sink_column], dim=-1)
    lse = torch.logsumexp(logits, dim=-1)
    finite_lse = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    probs = torch.exp(scores - finite_lse.unsqueeze(-1)) * visible
    probs = probs.reshape(batch, heads_k, group, seqlen_q, seqlen_k)
    out = torch.einsum("bkgqs,bskd->bqkgd", probs, v64).reshape(batch, seqlen_q, heads, head_dim)
    return out, lse


def reference_flat(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    kv_heads: int,
    head_dim: int,
    **options,
) -> torch.Tensor:
    """reference_attention on flat projections, (batch, seqlen, heads * head_dim) or unbatched
    (seqlen, heads * head_dim), as the model-layer calls take them; the output in that layout
    (float64). ``options`` are reference_attention's (causal, scale, variants)."""
    unbatched = q.dim() == 2
    if unbatched:
        q, k, v = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
    out, _ = reference_attention(
        q.unflatten(-1, (heads, head_dim)),
        k.unflatten(-1, (kv_heads, head_dim)),
        v.unflatten(-1, (kv_heads, head_dim)),
        **options,
    )
    out = out.flatten(-2)
    return out[0] if unbatched else out


def reference_varlen(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seqlens_q: list[int],
    seqlens_k: list[int],
    *,
    scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = NO_WINDOW,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed q (total_q, h, d) -> out (total_q, h, d), lse (h, total_q), one sequence at a time.

    Each sequence has its own offset (its key count minus its query count); (batch, h) ALiBi
    slopes give sequence b row b.
    """
    outs, lses = [], []
    q0 = k0 = 0
    for b, (length_q, length_k) in enumerate(zip(seqlens_q, seqlens_k, strict=True)):
        slopes = alibi_slopes
        if alibi_slopes is not None and alibi_slopes.dim() == 2:
            slopes = alibi_slopes[b : b + 1]
        out, lse = reference_attention(
            q[q0 : q0 + length_q].unsqueeze(0),
            k[k0 : k0 + length_k].unsqueeze(0),
            v[k0 : k0 + length_k].unsqueeze(0),
            scale=scale,
            causal=causal,
            window_size=window_size,
            softcap=softcap,
            alibi_slopes=slopes,
            sinks=sinks,
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
