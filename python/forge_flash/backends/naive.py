"""The naive path: attention in plain PyTorch, on any device torch runs on.

It is the CPU user's real path and the GPU fallback, so it is built for bounded memory and
reasonable speed rather than as a textbook formula:

* Without an LSE it calls torch's fused ``scaled_dot_product_attention`` (SDPA) on the inputs
  as they are (float16 on the CPU before torch 2.5 excepted: ``_sdpa_dtype``). Its kernels
  accumulate in float32; the float32 copies of the inputs this path used to make on the CPU
  cost 1.1-3x on prefill and 6-12x on decode (CPU benchmark, docs/benchmarks.md).
* SDPA's ``is_causal`` is aligned top-left, ours bottom-right; they agree only when
  ``seqlen_q == seqlen_k``, so other causal shapes pass an explicit mask, built for a block of
  query rows at a time so the mask stays small.
* GQA never repeats K/V. Where the mask does not depend on the query row's position (no mask,
  or few rows: decode), the query heads of a group join the query rows of one SDPA call, which
  reads each KV head once; square and long causal calls run SDPA once per group member.
* With an LSE (or per-sequence key counts off the CPU, which stay on the device) it computes
  the scores itself in float32, a block of query rows at a time so the score block stays
  under ``SCORE_BLOCK_BYTES``.
* Per-sequence key counts on the CPU cost nothing to read: each sequence attends to its own
  slice of the cache, so slots past its length (which may hold anything, NaN included) are
  never read.
* A query row that sees no key (causal with ``seqlen_q > seqlen_k``, an empty KV sequence, a
  cache length of 0) gives output 0 and LSE -inf, never NaN.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.torch_version import TorchVersion

from .base import Backend

#: Largest float32 score block the explicit path materialises at once.
SCORE_BLOCK_BYTES = 128 * 2**20
#: Largest boolean mask (elements) the SDPA path builds at once.
MASK_BLOCK_ELEMENTS = 32 * 2**20
#: Causal calls with fewer query rows than this fold a GQA group into one SDPA call's rows
#: (with an explicit mask, while it stays within MASK_BLOCK_ELEMENTS); more rows keep SDPA's
#: own causal masking, which skips the blocks above the diagonal.
FOLD_MAX_CAUSAL_ROWS = 16
_CPU_SDPA_FLOAT16_ACCURATE = TorchVersion(torch.__version__) >= (2, 5)


def _row_blocks(start: int, stop: int, rows: int) -> Iterator[tuple[int, int]]:
    for r0 in range(start, stop, rows):
        yield r0, min(stop, r0 + rows)


def _sdpa_dtype(x: torch.Tensor) -> torch.dtype:
    """What SDPA computes in: the input's dtype, but float32 for float16 on the CPU before
    torch 2.5 (torch 2.4's CPU SDPA erred by up to 27 times our float16 tolerance there; 2.5,
    2.6, 2.8 and 2.13 stayed within it, and bfloat16 within its own on all: docs/benchmarks.md)."""
    if x.dtype == torch.float16 and x.device.type == "cpu" and not _CPU_SDPA_FLOAT16_ACCURATE:
        return torch.float32
    return x.dtype


def _lengths_on_host(seqused_k: torch.Tensor) -> bool:
    """Whether reading per-sequence key counts costs nothing (no wait for a device)."""
    return seqused_k.device.type == "cpu"


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
    if out.numel() == 0:
        return
    if seqused_k is not None and _lengths_on_host(seqused_k):
        # Each sequence attends to its own slice of the cache.
        for b, used in enumerate(seqused_k.tolist()):
            used = min(max(used, 0), k.shape[1])
            naive_fwd(
                q[b : b + 1], k[b : b + 1, :used], v[b : b + 1, :used], out[b : b + 1],
                None if lse is None else lse[b : b + 1],
                softmax_scale=softmax_scale, causal=causal,
            )  # fmt: skip
        return
    seqlen_q, seqlen_k = q.shape[1], k.shape[1]
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
    # The explicit path when an LSE or per-sequence key counts are wanted, or the scale is
    # <= 0 (torch's fused causal SDPA scales after masking, turning masked -inf scores into NaN).
    if lse is None and seqused_k is None and softmax_scale > 0:
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
    batch, seqlen_q, num_heads, head_dim = q.shape
    seqlen_k, num_heads_k = k.shape[1], k.shape[2]
    group = num_heads // num_heads_k
    dtype = _sdpa_dtype(q)
    # (batch, heads_k, seqlen_k, head_dim): SDPA's layout; a copy only when the dtype changes.
    kt, vt = k.transpose(1, 2).to(dtype), v.transpose(1, 2).to(dtype)
    q_groups = q.unflatten(2, (num_heads_k, group))
    out_groups = out.unflatten(2, (num_heads_k, group))
    offset = seqlen_k - seqlen_q
    rows = seqlen_q - first_row
    small_mask = rows < FOLD_MAX_CAUSAL_ROWS and group * rows * seqlen_k <= MASK_BLOCK_ELEMENTS
    if not causal or small_mask:
        # (batch, heads_k, group * rows, head_dim): the group's query heads as rows of one call.
        folded = q_groups[:, first_row:].permute(0, 2, 3, 1, 4)
        mask = None
        if causal:  # row g * rows + i is query row first_row + i
            mask = _causal_visible(first_row, seqlen_q, seqlen_k, offset, q.device).repeat(group, 1)
        block = F.scaled_dot_product_attention(
            folded.reshape(batch, num_heads_k, group * rows, head_dim).to(dtype), kt, vt,
            attn_mask=mask, scale=scale,
        )  # fmt: skip
        out_groups[:, first_row:].copy_(
            block.view(batch, num_heads_k, group, rows, head_dim).permute(0, 3, 1, 2, 4)
        )
        return
    square_causal = offset == 0
    # Only a mask needs blocking: SDPA's fused kernels bound their own memory.
    block_rows = seqlen_q if square_causal else max(1, MASK_BLOCK_ELEMENTS // seqlen_k)
    for r0, r1 in _row_blocks(first_row, seqlen_q, block_rows):
        keys, mask = seqlen_k, None
        if not square_causal:
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
