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
  under ``SCORE_BLOCK_BYTES``; on the CPU, windows, sinks and the LSE run on the op SDPA runs
  there instead (``_masked_sdpa_fwd``: a 0 / -inf mask and the op's logsumexp), 6-15x faster.
* Per-sequence key counts on the CPU cost nothing to read: each sequence attends to its own
  slice of the cache, so slots past its length (which may hold anything, NaN included) are
  never read.
* The variants (sliding window, softcap, ALiBi, sinks), a zero or negative scale, per-sequence
  key starts (left padding), a cache batch index and paged caches take the explicit path
  (but for the CPU's fused op above): it is the definition of their semantics on every
  device (docs: ``forge_flash.call``). Paged and batch-indexed caches are first gathered into
  a dense copy (the naive path's cost is its arithmetic; the kernels read pages in place).
* A query row that sees no key (causal with ``seqlen_q > seqlen_k``, an empty KV sequence, a
  cache length of 0, a window that holds no key) gives output 0 and LSE -inf (the sink's
  logit with sinks), never NaN; a NaN in q, k or v gives NaN in every row that sees it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch.torch_version import TorchVersion

from ..call import AttentionCall, AttentionTensors
from .base import Backend

#: Largest float32 score block the explicit path materialises at once.
SCORE_BLOCK_BYTES = 128 * 2**20
#: Scores this far below their row's maximum would give float32 exp a subnormal result (the
#: smallest normal float32 is e^-87.34): the explicit path makes them exactly 0 (_explicit_fwd).
_SUBNORMAL_EXP = -87.0
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
def naive_fwd(call: AttentionCall, t: AttentionTensors) -> None:
    """Dense layout (``Backend.run`` with ``call.layout == "dense"``)."""
    if t.out.numel() == 0:
        return
    k, v = _dense_kv(call, t)
    key_len = t.seqused_k
    if key_len is not None and t.k_start is None and _lengths_on_host(key_len):
        # Each sequence attends to its own slice of the cache (nothing past its end is read).
        for b, used in enumerate(key_len.tolist()):
            used = min(max(used, 0), k.shape[1])
            one = _sequence_tensors(t, b, k[b : b + 1, :used], v[b : b + 1, :used])
            _dense_fwd(call, one, None, None)
        return
    _dense_fwd(call, replace(t, k=k, v=v), key_len, t.k_start)


def _dense_kv(call: AttentionCall, t: AttentionTensors) -> tuple[torch.Tensor, torch.Tensor]:
    """K/V as (batch, keys, heads_k, head_dim): pages and a cache batch index gathered."""
    k, v = t.k, t.v
    if call.page_size:
        table = t.block_table.to(torch.int64).clamp(0, call.num_blocks - 1)
        # (batch, max_blocks, page_size, hk, d) -> (batch, max_blocks * page_size, hk, d)
        k = k[table].flatten(1, 2)
        v = v[table].flatten(1, 2)
    elif t.kv_batch_idx is not None:
        rows = t.kv_batch_idx.to(torch.int64).clamp(0, k.shape[0] - 1)
        k, v = k[rows], v[rows]
    return k, v


def _sequence_tensors(t: AttentionTensors, b: int, k: torch.Tensor, v: torch.Tensor):
    """Batch row b of ``t`` (dense layout) with its own K/V slice and no per-row lengths."""
    alibi = t.alibi_slopes
    if alibi is not None and alibi.dim() == 2:
        alibi = alibi[b : b + 1]
    return AttentionTensors(
        q=t.q[b : b + 1], k=k, v=v, out=t.out[b : b + 1],
        lse=None if t.lse is None else t.lse[b : b + 1], alibi_slopes=alibi, sinks=t.sinks,
    )  # fmt: skip


def _dense_fwd(
    call: AttentionCall,
    t: AttentionTensors,
    key_len: torch.Tensor | None,
    k_start: torch.Tensor | None,
) -> None:
    q, k, v, out, lse = t.q, t.k, t.v, t.out, t.lse
    seqlen_q, seqlen_k = q.shape[1], k.shape[1]
    if call.plain and call.softmax_scale > 0 and key_len is None and lse is None:
        # Causal rows above the first diagonal see no key (only when seqlen_q > seqlen_k).
        first_row = min(seqlen_q, max(0, seqlen_q - seqlen_k)) if call.causal else 0
        if seqlen_k == 0:
            first_row = seqlen_q
        out[:, :first_row].zero_()
        if first_row < seqlen_q:
            _sdpa_fwd(q, k, v, out, first_row, call.softmax_scale, call.causal)
            if q.device.type != "cpu":
                _poison_nan_query_rows(q, out, first_row)
            elif _sdpa_answer_in_doubt(q, k, out[:, first_row:]):
                _explicit_fwd(call, t, None, None)
        return
    if _masked_sdpa_serves(call, t) and key_len is None and k_start is None:
        _masked_sdpa_fwd(call, t)
        return
    _explicit_fwd(call, t, key_len, k_start)


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


def _sdpa_answer_in_doubt(q: torch.Tensor, k: torch.Tensor, out: torch.Tensor) -> bool:
    """Whether SDPA's fused CPU kernel may have answered some rows of ``out`` wrongly, which
    only a NaN or inf in q or k can cause (its running max skips NaN scores): a row whose every
    score is NaN comes back 0, not NaN (a NaN query row; a row that sees one key, a NaN one),
    and with an explicit mask a NaN score at a key the row does not see (NaN + -inf) makes that
    row NaN. The caller then runs the explicit path, which masks scores by a select.

    Tested the cheaper way: q's and K's sums (finite: no doubt), or, where K is long against
    the output (decode), the output's rows exactly (``_rows_all_zero_or_nan``, about 4.5x a
    sum's time per element). On 2 cores, 2026-12-05: a finiteness check of K alone cost 11-19%
    of a decode call over 4k-32k keys; the output's rows, 0.7 ms for 512 tokens of 32 heads of
    128 in bf16 (a 6.5 ms call), where the sums take 0.2."""
    if q.numel() + k.numel() <= 4 * out.numel():
        return not bool(torch.isfinite(q.sum() + k.sum()))
    return _rows_all_zero_or_nan(out)


#: Per float dtype: the integer type of its bits, the mask of all bits but the sign, and the
#: bits of inf (a NaN's magnitude bits lie above inf's).
_FLOAT_BITS = {
    torch.float16: (torch.int16, 0x7FFF, 0x7C00),
    torch.bfloat16: (torch.int16, 0x7FFF, 0x7F80),
    torch.float32: (torch.int32, 0x7FFFFFFF, 0x7F800000),
}


def _rows_all_zero_or_nan(out: torch.Tensor) -> bool:
    """Whether a row of ``out`` (its last dimension) is all zero or holds a NaN: exactly, from
    each row's largest magnitude as integer bits (0: all zero; above inf's: a NaN), in one pass
    (testing each element as a float for NaN and for 0 took 6x longer; a row sum's exact zeros
    are not rare enough in bf16)."""
    if out.dtype not in _FLOAT_BITS:  # the same test in floats
        return bool((out.isnan().any(dim=-1) | (out == 0).all(dim=-1)).any())
    int_dtype, magnitude, inf = _FLOAT_BITS[out.dtype]
    largest = (out.view(int_dtype) & magnitude).amax(dim=-1)
    return bool(((largest == 0) | (largest > inf)).any())


def _may_hold_nan(x: torch.Tensor) -> bool:
    """False only where ``x`` surely holds no NaN: on the CPU, where reading its sum back costs
    nothing and a NaN anywhere makes that sum NaN (infinities of both signs can too: then
    True). Elsewhere True, with no host sync: the caller tests the rows. The row test (a
    boolean tensor the size of q) only where this is True: a bf16 call of 4 x 256 tokens of 16
    heads of 64 took 2.73 ms instead of 4.10 (2 cores, docs/benchmarks.md, 2026-12-05)."""
    return x.device.type != "cpu" or bool(x.sum().isnan())


def _poison_nan_query_rows(q: torch.Tensor, out: torch.Tensor, first_row: int) -> None:
    """Off the CPU, where reading a check back would wait for the device: SDPA's fused CPU
    kernel returns 0, not NaN, for a query row holding a NaN (``_sdpa_answer_in_doubt``), and
    other devices' kernels are not trusted to do better. Every row from ``first_row`` on sees
    at least one key here, so a NaN in its query reaches its output: put it there. One pass
    over q, no host sync."""
    rows = q[:, first_row:].isnan().any(dim=-1, keepdim=True)
    out[:, first_row:].masked_fill_(rows, float("nan"))


@functools.cache
def _cpu_flash_op() -> Callable | None:
    """torch's fused CPU attention with each row's logsumexp, taking an additive mask of the
    query's dtype (``aten::_scaled_dot_product_flash_attention_for_cpu``, what SDPA runs on the
    CPU), where this torch has it in that form: a private op, so checked once on a tiny call
    against the definition. None: the explicit path serves (``_masked_sdpa_serves``)."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, rows, 4, generator=gen) for rows in (3, 5, 5))
    mask = torch.zeros(3, 5).masked_fill_(torch.rand(3, 5, generator=gen) < 0.4, float("-inf"))
    mask[:, 0] = 0.0  # every row sees a key
    scores = (q.double() @ k.double().transpose(-1, -2)) * 0.7 + mask.double()
    want_out, want_lse = torch.softmax(scores, dim=-1) @ v.double(), torch.logsumexp(scores, -1)
    try:
        op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        out, lse = op(q, k, v, 0.0, False, attn_mask=mask, scale=0.7)
        ok = torch.allclose(out.double(), want_out, atol=1e-5) and torch.allclose(
            lse.double(), want_lse, atol=1e-5
        )
    except (AttributeError, RuntimeError, TypeError, ValueError, IndexError):
        return None
    return op if ok else None


def _masked_sdpa_serves(call: AttentionCall, t: AttentionTensors) -> bool:
    """Whether the fused CPU op computes this call (``_masked_sdpa_fwd``): scores left as they
    are (no softcap; ALiBi's bias would have to be a mask in the inputs' dtype, which bf16 and
    fp16 cannot hold exactly), a window only as a 0 / -inf mask, sinks and the LSE from the op's
    logsumexp. On the CPU only: there the explicit path's float32 score blocks took 6-15x
    longer (bf16, 2 cores: 1k tokens of 16 heads of 64, causal with the LSE, 111.8 ms against
    8.5; with a window of 256, 130.5 against 8.5; docs/benchmarks.md, 2026-12-05). And only
    with every key finite (its sum is: one pass, no copy): the op adds the mask to the scores,
    and a NaN or inf key's score plus -inf is NaN in rows that do not see it, where the
    explicit path's select keeps them clean."""
    return (
        t.q.device.type == "cpu"
        and call.softcap == 0.0
        and call.alibi is None
        and call.softmax_scale > 0
        and _cpu_flash_op() is not None
        and bool(torch.isfinite(t.k.sum()))
    )


def _masked_sdpa_fwd(call: AttentionCall, t: AttentionTensors) -> None:
    """The fused CPU op, a block of query rows and a query head of each group at a time, the
    window (and the causal diagonal) as an additive 0 / -inf mask. Its logsumexp gives the LSE,
    and the sink (joined once per row: out * exp(lse - lse'), lse' = logaddexp(lse, sink)). A
    row that sees no key gets output 0 and LSE -inf (the sink's logit with sinks); a NaN query
    row that sees a key gets NaN (the op's running max skips it)."""
    q, k, v, out, lse = t.q, t.k, t.v, t.out, t.lse
    batch, seqlen_q, num_heads, head_dim = q.shape
    seqlen_k, num_heads_k = k.shape[1], k.shape[2]
    group = num_heads // num_heads_k
    dtype = _sdpa_dtype(q)
    op = _cpu_flash_op()
    kt, vt = k.transpose(1, 2).to(dtype), v.transpose(1, 2).to(dtype)
    q_groups = q.unflatten(2, (num_heads_k, group))
    out_groups = out.unflatten(2, (num_heads_k, group))
    lse_groups = None if lse is None else lse.unflatten(1, (num_heads_k, group))
    sinks = None if t.sinks is None else t.sinks.to(torch.float32).view(1, num_heads_k, group, 1)
    keys = _KeyRange(call, batch, seqlen_q, seqlen_k, None, None, q.device)
    q_may_hold_nan = _may_hold_nan(q)  # else no row test (a boolean tensor the size of q)
    # Square causal calls without a window: the op's own causal mask, which skips the tiles
    # above the diagonal, over every row at once. Else a mask a block of rows at a time; with a
    # left window edge, blocks of about the window's rows, so that each sees about two windows
    # of keys (keys.span), not all of them.
    square_causal = call.window == (-1, 0) and seqlen_q == seqlen_k
    block_rows = max(1, MASK_BLOCK_ELEMENTS // max(seqlen_k, 1))
    if square_causal:
        block_rows = max(1, seqlen_q)
    elif call.window[0] >= 0:
        block_rows = min(block_rows, max(128, call.window[0]))
    for r0, r1 in _row_blocks(0, seqlen_q, block_rows):
        n = r1 - r0
        lo, hi = keys.span(r0, r1)
        visible = None if square_causal else keys.visible(r0, r1, lo, hi)
        if visible is not None:  # the same for every sequence here (no per-sequence keys)
            visible = visible.expand(-1, 1, 1, n, hi - lo)[0, 0, 0]
        sees = torch.full((n,), hi > lo) if visible is None else visible.any(dim=-1)
        mask = None
        if visible is not None and hi > lo:
            mask = torch.zeros(n, hi - lo, dtype=dtype).masked_fill_(~visible, float("-inf"))
        for g in range(group):
            rows = q_groups[:, r0:r1, :, g]  # (batch, n, heads_k, head_dim)
            if hi > lo:
                block, block_lse = op(
                    rows.transpose(1, 2).to(dtype), kt[:, :, lo:hi], vt[:, :, lo:hi], 0.0,
                    square_causal, attn_mask=mask, scale=call.softmax_scale,
                )  # fmt: skip
                block_lse = block_lse.to(torch.float32)
            else:  # no key in the block's reach
                block = torch.zeros(batch, num_heads_k, n, head_dim, dtype=dtype)
                block_lse = torch.zeros(batch, num_heads_k, n)
            # (batch, heads_k, n): rows that see no key, and NaN query rows that see one.
            block_lse = block_lse.masked_fill(~sees, float("-inf"))
            nan_rows = None
            if q_may_hold_nan:
                nan_rows = rows.isnan().any(dim=-1).transpose(1, 2) & sees
                block_lse = block_lse.masked_fill(nan_rows, float("nan"))
            block = block.masked_fill((~sees).view(1, 1, n, 1), 0.0)
            if sinks is not None:
                joined = torch.logaddexp(block_lse, sinks[:, :, g].expand_as(block_lse))
                block = block.float() * torch.exp(block_lse - joined).unsqueeze(-1)  # one rounding
                # Again for the rows that see no key: with a sink of -inf (no sink) their factor
                # is exp(-inf - -inf) = NaN, and 0 times it NaN.
                block = block.masked_fill((~sees).view(1, 1, n, 1), 0.0)
                block_lse = joined
            if nan_rows is not None:
                block = block.masked_fill(nan_rows.unsqueeze(-1), float("nan"))
            out_groups[:, r0:r1, :, g].copy_(block.transpose(1, 2))
            if lse_groups is not None:
                lse_groups[:, :, g, r0:r1].copy_(block_lse)


def _explicit_fwd(
    call: AttentionCall,
    t: AttentionTensors,
    key_len: torch.Tensor | None,
    k_start: torch.Tensor | None,
) -> None:
    """Scores in float32, a block of query rows at a time: every option's definition."""
    q, k, v, out, lse = t.q, t.k, t.v, t.out, t.lse
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
    keys = _KeyRange(call, batch, seqlen_q, seqlen_k, key_len, k_start, q.device)
    if keys.per_sequence:
        # Cache slots outside a sequence's keys may hold anything (an uninitialised cache can
        # hold NaN); masking scores is not enough since 0 * NaN = NaN in the product with V.
        vt = torch.where(keys.in_range().view(batch, 1, seqlen_k, 1), vt, 0.0)
    slopes = None
    if t.alibi_slopes is not None:  # per query head: (batch or 1, heads_k, group, 1, 1)
        slopes = t.alibi_slopes.to(f32).reshape(-1, num_heads_k, group, 1, 1)
    sinks = None
    if t.sinks is not None:  # (1, heads_k, group, 1)
        sinks = t.sinks.to(f32).view(1, num_heads_k, group, 1)
    row_bytes = batch * num_heads * max(seqlen_k, 1) * 4
    rows = max(1, SCORE_BLOCK_BYTES // row_bytes)
    for r0, r1 in _row_blocks(0, seqlen_q, rows):
        n = r1 - r0
        lo, hi = keys.span(r0, r1)
        q_block = q_groups[:, :, :, r0:r1].to(f32).reshape(batch, num_heads_k, group * n, head_dim)
        scores = torch.matmul(q_block, kt[:, :, lo:hi].transpose(-1, -2))
        scores = scores.mul_(call.softmax_scale).view(batch, num_heads_k, group, n, hi - lo)
        if call.softcap:
            scores = torch.tanh_(scores.div_(call.softcap)).mul_(call.softcap)
        if slopes is not None:
            scores = scores.sub_(slopes * keys.distance(r0, r1, lo, hi))
        visible = keys.visible(r0, r1, lo, hi)
        if visible is not None:
            scores.masked_fill_(~visible, float("-inf"))
        # Each row's scores less its maximum (NaN stays NaN); a row that sees nothing has
        # maximum -inf, and subtracting 0 keeps its exp(-inf) = 0, not NaN.
        top = (
            scores.amax(dim=-1, keepdim=True)
            if hi > lo
            else scores.new_full((*scores.shape[:-1], 1), -math.inf)
        )
        shift = torch.where(torch.isneginf(top), 0.0, top)
        scores = scores.sub_(shift)
        # Terms whose exp would be subnormal (below e^-87, against the row's 1): exactly 0.
        # They change no float32 sum, and x86 takes 15x longer for such an exp and over 100x
        # for a matrix product that reads them (2 cores, bf16, 1k tokens of 16 heads of 64:
        # ALiBi 219 -> 120 ms, softcap 50 107 -> 90, with the single exp below; docs/benchmarks.md).
        scores = scores.masked_fill_(scores < _SUBNORMAL_EXP, float("-inf"))
        probs = torch.exp_(scores)
        shift = shift.squeeze(-1)  # (batch, heads_k, group, n)
        block_lse = shift + torch.log(probs.sum(dim=-1))  # -inf for a row that sees nothing
        if sinks is not None:  # the sink joins each row's denominator once
            block_lse = torch.logaddexp(block_lse, sinks.expand_as(block_lse))
        # 1 / the denominator; 0 for a row that sees nothing (its P V is 0: 0, not 0 * inf)
        weight = torch.where(torch.isneginf(block_lse), 0.0, torch.exp(shift - block_lse))
        block_out = torch.matmul(
            probs.view(batch, num_heads_k, group * n, hi - lo), vt[:, :, lo:hi]
        )
        block_out = block_out.view(batch, num_heads_k, group, n, head_dim) * weight.unsqueeze(-1)
        block_out = block_out.permute(0, 3, 1, 2, 4)
        out_groups[:, r0:r1].copy_(block_out)
        if lse_groups is not None:
            lse_groups[:, :, :, r0:r1].copy_(block_lse)


class _KeyRange:
    """Which keys each query row sees, and how far they lie from its diagonal.

    Sequence b's keys are [start_b, end_b) of the K/V rows (start 0 and end seqlen_k unless
    per-sequence values are given); a query row i sits at position i + offset_b of that range,
    offset_b = (end_b - start_b) - seqlen_q (bottom-right alignment). Tensors broadcast to
    (batch, heads_k, group, rows, keys).
    """

    def __init__(self, call, batch, seqlen_q, seqlen_k, key_len, k_start, device):
        self.call = call
        self.device = device
        self.seqlen_q, self.seqlen_k = seqlen_q, seqlen_k
        self.idx = torch.arange(seqlen_k, device=device)
        self.per_sequence = key_len is not None or k_start is not None
        end = torch.full((batch,), seqlen_k, device=device, dtype=torch.int64)
        if key_len is not None:
            end = key_len.to(torch.int64).clamp(0, seqlen_k)
        start = torch.zeros_like(end)
        if k_start is not None:
            start = torch.minimum(k_start.to(torch.int64).clamp(min=0), end)
        self.start = start.view(batch, 1, 1, 1, 1)
        self.end = end.view(batch, 1, 1, 1, 1)
        self.offset = (end - start - seqlen_q).view(batch, 1, 1, 1, 1)

    def in_range(self) -> torch.Tensor:
        """(batch, keys): key j belongs to its sequence."""
        idx = self.idx.view(1, -1)
        return (idx >= self.start.view(-1, 1)) & (idx < self.end.view(-1, 1))

    def span(self, r0: int, r1: int) -> tuple[int, int]:
        """The keys [lo, hi) that rows [r0, r1) can see at all: the window's band, where every
        sequence has the same keys (else all keys; the mask then decides)."""
        lo, hi = 0, self.seqlen_k
        if self.per_sequence:
            return lo, hi
        left, right = self.call.window
        offset = self.seqlen_k - self.seqlen_q
        if right >= 0:
            hi = max(0, min(hi, r1 - 1 + offset + right + 1))
        if left >= 0:
            lo = min(hi, max(0, r0 + offset - left))
        return lo, hi

    def _diagonal(self, r0: int, r1: int, lo: int, hi: int) -> torch.Tensor:
        """(j - start) - (i + offset) for the block's rows: 0 on the aligned diagonal."""
        rows = torch.arange(r0, r1, device=self.device).view(1, 1, 1, -1, 1)
        return (self.idx[lo:hi].view(1, 1, 1, 1, -1) - self.start) - (rows + self.offset)

    def distance(self, r0: int, r1: int, lo: int, hi: int) -> torch.Tensor:
        return self._diagonal(r0, r1, lo, hi).abs().to(torch.float32)

    def visible(self, r0: int, r1: int, lo: int, hi: int) -> torch.Tensor | None:
        left, right = self.call.window
        if left < 0 and right < 0 and not self.per_sequence:
            return None
        diag = self._diagonal(r0, r1, lo, hi)
        visible = torch.ones_like(diag, dtype=torch.bool)
        if self.per_sequence:
            idx = self.idx[lo:hi].view(1, 1, 1, 1, -1)
            visible = (idx >= self.start) & (idx < self.end) & visible
        if left >= 0:
            visible &= diag >= -left
        if right >= 0:
            visible &= diag <= right
        return visible


@torch.no_grad()
def naive_varlen_fwd(call: AttentionCall, t: AttentionTensors) -> None:
    """Packed batch, one sequence at a time (reads ``cu_seqlens`` back to the host)."""
    bounds_q = t.cu_seqlens_q.tolist()
    bounds_k = t.cu_seqlens_k.tolist()
    used = None if t.seqused_k is None else t.seqused_k.tolist()
    for b in range(len(bounds_q) - 1):
        q0, q1 = bounds_q[b], bounds_q[b + 1]
        k0, k1 = bounds_k[b], bounds_k[b + 1]
        if q1 == q0:
            continue
        length = k1 - k0 if used is None else max(0, min(used[b], k1 - k0))
        if call.page_size:
            # Keys past the table's row are clamped away, as the kernels do, where validation
            # could not read the lengths (it refuses them otherwise).
            length = min(length, t.block_table.shape[1] * call.page_size)
            table = t.block_table[b].to(torch.int64).clamp(0, call.num_blocks - 1)
            keys = torch.arange(length, device=t.q.device)
            rows = table[keys // call.page_size], keys % call.page_size
            k, v = t.k[rows], t.v[rows]
        else:
            k, v = t.k[k0 : k0 + length], t.v[k0 : k0 + length]
        alibi = t.alibi_slopes
        if alibi is not None and alibi.dim() == 2:
            alibi = alibi[b : b + 1]
        one = AttentionTensors(
            q=t.q[q0:q1].unsqueeze(0), k=k.unsqueeze(0), v=v.unsqueeze(0),
            out=t.out[q0:q1].unsqueeze(0),
            lse=None if t.lse is None else t.lse[:, q0:q1].unsqueeze(0),
            alibi_slopes=alibi, sinks=t.sinks,
        )  # fmt: skip
        _dense_fwd(call, one, None, None)


@torch.no_grad()
def naive_merge_states(
    outs: Sequence[torch.Tensor],
    lses: Sequence[torch.Tensor],
    out: torch.Tensor,
    out_lse: torch.Tensor,
) -> None:
    """``merge_attention_states`` in plain PyTorch: validated inputs, written into
    ``out``/``out_lse`` only after everything is computed, so any aliasing is safe."""
    wide = any(x.dtype == torch.float64 for x in (*outs, out))
    acc_dtype = torch.float64 if wide else torch.float32
    lse = torch.stack([x.to(acc_dtype) for x in lses])  # (parts, batch, heads, seqlen)
    top = lse.amax(dim=0)  # NaN propagates: a NaN part makes the row NaN
    # Every part -inf: weigh against 0, so every weight is exp(-inf) = 0 (never -inf - -inf).
    top = torch.where(top == -math.inf, torch.zeros_like(top), top)
    weights = torch.exp(lse - top)
    total = weights.sum(dim=0)
    acc = torch.zeros(out.shape, dtype=acc_dtype, device=out.device)
    for part, part_lse, weight in zip(outs, lses, weights, strict=True):
        # To the out layout: (batch, heads, seqlen) -> (batch, seqlen, heads, 1).
        term = part.to(acc_dtype) * weight.transpose(1, 2).unsqueeze(-1)
        empty = torch.isneginf(part_lse).transpose(1, 2).unsqueeze(-1)
        acc += torch.where(empty, torch.zeros_like(term), term)  # an empty part is never read
    inverse = torch.where(total == 0, torch.zeros_like(total), total.reciprocal())
    acc *= inverse.transpose(1, 2).unsqueeze(-1)
    merged_lse = top + total.log()  # log 0 = -inf: no part saw a key
    out.copy_(acc)
    out_lse.copy_(merged_lse)


class NaiveBackend(Backend):
    """Plain PyTorch on any device; always available, for every call."""

    name = "naive"

    def run(self, call: AttentionCall, t: AttentionTensors) -> None:
        if call.layout == "varlen":
            naive_varlen_fwd(call, t)
        else:
            naive_fwd(call, t)

    def merge_states(self, outs, lses, out, out_lse) -> bool:
        naive_merge_states(outs, lses, out, out_lse)
        return True


NAIVE = NaiveBackend()
