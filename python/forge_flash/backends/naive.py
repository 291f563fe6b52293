"""The naive path: attention in plain PyTorch, on any device torch runs on.

It is the CPU user's real path and the GPU fallback, so it is built for bounded memory and
reasonable speed rather than as a textbook formula:

* Without an LSE, for 16 query rows or more, it calls torch's fused
  ``scaled_dot_product_attention`` (SDPA). SDPA's
  ``is_causal`` is aligned top-left, ours bottom-right; they agree only when
  ``seqlen_q == seqlen_k``, so other causal shapes pass an explicit mask, built for a block of
  query rows at a time so the mask stays small.
* Otherwise (an LSE, per-sequence key counts, decode-sized queries) it computes the scores
  itself, a block of query rows at a time so the float32 score block stays under
  ``SCORE_BLOCK_BYTES``.
* GQA never repeats K/V: SDPA runs once per position inside a query-head group, and the
  explicit path folds the group into the query rows of one matmul.
* On the CPU, float16/bfloat16 inputs are computed in float32 (CPU half arithmetic is slow and
  less accurate); on other devices SDPA takes them as they are (its kernels accumulate in
  float32) and the explicit path uses float32.
* A query row that sees no key (causal with ``seqlen_q > seqlen_k``, an empty KV sequence, a
  cache length of 0) gives output 0 and LSE -inf, never NaN.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .base import Backend

#: Largest float32 score block the explicit path materialises at once.
SCORE_BLOCK_BYTES = 128 * 2**20
#: Largest boolean mask (elements) the SDPA path builds at once.
MASK_BLOCK_ELEMENTS = 32 * 2**20
#: Fewer query rows than this take the explicit path (measured on CPU: with GQA 32/8 over 4k
#: keys, 1 row took 3.8 ms explicit vs 8.1 ms through SDPA; 16 rows were even).
SDPA_MIN_QUERY_ROWS = 16


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.device.type == "cpu" else x.dtype


def _row_blocks(start: int, stop: int, rows: int) -> Iterator[tuple[int, int]]:
    for r0 in range(start, stop, rows):
        yield r0, min(stop, r0 + rows)


def _causal_visible(r0: int, r1: int, keys: int, offset: int, device: torch.device) -> torch.Tensor:
    """(r1 - r0, keys) bool: query row i sees key j iff j <= i + offset.

    ``offset`` is seqlen_k - seqlen_q: the bottom-right alignment.
    """
    rows = torch.arange(r0 + offset, r1 + offset, device=device).unsqueeze(1)
    return torch.arange(keys, device=device) <= rows


@torch.no_grad()  # forward only, like the kernels: no autograd graph, no saved activations
def naive_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor | None = None,
    *,
    softmax_scale: float,
    causal: bool,
    seqused_k: torch.Tensor | None = None,
) -> None:
    """Uniform batch; the contract of ``Backend.fwd``."""
    seqlen_q, seqlen_k = q.shape[1], k.shape[1]
    if out.numel() == 0:
        return
    # Causal rows above the first diagonal see no key (only when seqlen_q > seqlen_k).
    first_row = min(seqlen_q, max(0, seqlen_q - seqlen_k)) if causal and seqused_k is None else 0
    if seqlen_k == 0:
        first_row = seqlen_q
    if first_row:
        out[:, :first_row].zero_()
        if lse is not None:
            lse[:, :, :first_row].fill_(float("-inf"))
    if first_row == seqlen_q:
        return
    # The explicit path when: an LSE or per-sequence key counts are wanted; few query rows
    # (decode: one matmul over the whole query-head group reads K/V once, where SDPA runs once
    # per group member); a scale <= 0 (torch's fused causal SDPA scales after masking, turning
    # masked -inf scores into NaN).
    use_sdpa = (
        lse is None
        and seqused_k is None
        and seqlen_q - first_row >= SDPA_MIN_QUERY_ROWS
        and softmax_scale > 0
    )
    if use_sdpa:
        _sdpa_fwd(q, k, v, out, first_row, softmax_scale, causal)
    else:
        _explicit_fwd(q, k, v, out, lse, first_row, softmax_scale, causal, seqused_k)


def _sdpa_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    first_row: int,
    scale: float,
    causal: bool,
) -> None:
    seqlen_q, num_heads = q.shape[1], q.shape[2]
    seqlen_k, num_heads_k = k.shape[1], k.shape[2]
    group = num_heads // num_heads_k
    dtype = _compute_dtype(q)
    # (batch, heads_k, seqlen_k, head_dim): SDPA's layout; a copy only when the dtype changes.
    kt = k.transpose(1, 2).to(dtype)
    vt = v.transpose(1, 2).to(dtype)
    q_groups = q.unflatten(2, (num_heads_k, group))
    out_groups = out.unflatten(2, (num_heads_k, group))
    offset = seqlen_k - seqlen_q
    square_causal = causal and offset == 0
    masked = causal and not square_causal
    # Only a mask needs blocking: SDPA's fused kernels bound their own memory.
    rows = max(1, MASK_BLOCK_ELEMENTS // seqlen_k) if masked else seqlen_q
    for r0, r1 in _row_blocks(first_row, seqlen_q, rows):
        keys, mask = seqlen_k, None
        if masked:
            keys = min(seqlen_k, r1 + offset)  # keys past the block's last diagonal are unseen
            mask = _causal_visible(r0, r1, keys, offset, q.device)
        for g in range(group):
            block = F.scaled_dot_product_attention(
                q_groups[:, r0:r1, :, g].transpose(1, 2).to(dtype),
                kt[:, :, :keys],
                vt[:, :, :keys],
                attn_mask=mask,
                is_causal=square_causal,
                scale=scale,
            )
            out_groups[:, r0:r1, :, g].copy_(block.transpose(1, 2))


def _explicit_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor | None,
    first_row: int,
    scale: float,
    causal: bool,
    seqused_k: torch.Tensor | None,
) -> None:
    batch, seqlen_q, num_heads, head_dim = q.shape
    seqlen_k, num_heads_k = k.shape[1], k.shape[2]
    group = num_heads // num_heads_k
    # (batch, heads_k, seqlen_k, head_dim), contiguous: matmul over a transposed view was
    # 10x slower on the CPU (it copies inside every call).
    f32, dense = torch.float32, torch.contiguous_format
    kt = k.transpose(1, 2).to(f32, memory_format=dense)
    vt = v.transpose(1, 2).to(f32, memory_format=dense)
    # (batch, heads_k, group, seqlen_q, head_dim): the group joins the query rows of one matmul.
    q_groups = q.unflatten(2, (num_heads_k, group)).permute(0, 2, 3, 1, 4)
    out_groups = out.unflatten(2, (num_heads_k, group))
    lse_groups = None if lse is None else lse.unflatten(1, (num_heads_k, group))
    key_idx = torch.arange(seqlen_k, device=q.device)
    key_len = None
    if seqused_k is not None:
        key_len = seqused_k.to(torch.int64).clamp(0, seqlen_k).view(batch, 1, 1, 1, 1)
        # Cache slots past a sequence's length may hold anything (an uninitialised cache can
        # hold NaN); masking scores is not enough since 0 * NaN = NaN in the product with V.
        in_use = key_idx.view(-1, 1) < key_len.view(batch, 1, 1, 1)  # (batch, 1, seqlen_k, 1)
        vt = torch.where(in_use, vt, 0.0)
    offset = seqlen_k - seqlen_q
    row_bytes = batch * num_heads * seqlen_k * 4
    rows = max(1, SCORE_BLOCK_BYTES // max(1, row_bytes))
    for r0, r1 in _row_blocks(first_row, seqlen_q, rows):
        n = r1 - r0
        keys = seqlen_k
        if causal and key_len is None:
            keys = min(seqlen_k, r1 + offset)
        q_block = q_groups[:, :, :, r0:r1].to(f32).reshape(batch, num_heads_k, group * n, head_dim)
        scores = torch.matmul(q_block, kt[:, :, :keys].transpose(-1, -2))
        scores = scores.mul_(scale).view(batch, num_heads_k, group, n, keys)
        visible = _visible(r0, r1, keys, offset, causal, key_len, seqlen_q, key_idx)
        if visible is not None:
            scores.masked_fill_(~visible, float("-inf"))
        block_lse = torch.logsumexp(scores, dim=-1)  # (batch, heads_k, group, n)
        # A row that sees nothing has lse -inf; subtracting 0 keeps exp(-inf) = 0, not NaN.
        shift = torch.where(torch.isneginf(block_lse), 0.0, block_lse)
        probs = torch.exp_(scores.sub_(shift.unsqueeze(-1)))
        block_out = torch.matmul(probs.view(batch, num_heads_k, group * n, keys), vt[:, :, :keys])
        block_out = block_out.view(batch, num_heads_k, group, n, head_dim).permute(0, 3, 1, 2, 4)
        out_groups[:, r0:r1].copy_(block_out)
        if lse_groups is not None:
            lse_groups[:, :, :, r0:r1].copy_(block_lse)


def _visible(
    r0: int,
    r1: int,
    keys: int,
    offset: int,
    causal: bool,
    key_len: torch.Tensor | None,
    seqlen_q: int,
    key_idx: torch.Tensor,
) -> torch.Tensor | None:
    """Which keys each query row of the block sees, broadcastable to (b, hk, group, n, keys)."""
    if key_len is None:
        return _causal_visible(r0, r1, keys, offset, key_idx.device) if causal else None
    idx = key_idx[:keys]
    visible = idx < key_len  # (b, 1, 1, 1, keys)
    if causal:
        # Bottom-right alignment relative to each sequence's own key count.
        rows = torch.arange(r0, r1, device=idx.device).view(1, 1, 1, -1, 1)
        visible = visible & (idx <= rows + (key_len - seqlen_q))
    return visible


@torch.no_grad()
def naive_varlen_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor | None,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    *,
    softmax_scale: float,
    causal: bool,
) -> None:
    """Packed batch, one sequence at a time (reads ``cu_seqlens`` back to the host)."""
    bounds_q = cu_seqlens_q.tolist()
    bounds_k = cu_seqlens_k.tolist()
    for i in range(len(bounds_q) - 1):
        q0, q1 = bounds_q[i], bounds_q[i + 1]
        k0, k1 = bounds_k[i], bounds_k[i + 1]
        if q1 == q0:
            continue
        naive_fwd(
            q[q0:q1].unsqueeze(0),
            k[k0:k1].unsqueeze(0),
            v[k0:k1].unsqueeze(0),
            out[q0:q1].unsqueeze(0),
            None if lse is None else lse[:, q0:q1].unsqueeze(0),
            softmax_scale=softmax_scale,
            causal=causal,
        )


class NaiveBackend(Backend):
    """Plain PyTorch on any device; always available."""

    name = "naive"

    def fwd(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        out: torch.Tensor,
        lse: torch.Tensor | None,
        *,
        softmax_scale: float,
        causal: bool,
        seqused_k: torch.Tensor | None = None,
    ) -> None:
        naive_fwd(
            q, k, v, out, lse, softmax_scale=softmax_scale, causal=causal, seqused_k=seqused_k
        )

    def varlen_fwd(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        out: torch.Tensor,
        lse: torch.Tensor | None,
        cu_seqlens_q: torch.Tensor,
        cu_seqlens_k: torch.Tensor,
        max_seqlen_q: int,
        max_seqlen_k: int,
        *,
        softmax_scale: float,
        causal: bool,
    ) -> None:
        naive_varlen_fwd(
            q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k,
            softmax_scale=softmax_scale, causal=causal,
        )  # fmt: skip


NAIVE = NaiveBackend()
