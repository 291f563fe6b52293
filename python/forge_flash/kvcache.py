"""``flash_attn_with_kvcache``: FlashAttention-2's decoding call, on forge-flash.

One call per decoding step: (a) the new keys/values are rotated and appended to the caches in
place (``forge_flash.kvcache_append``: one kernel launch on the plugin, torch ops elsewhere;
device-side indices only), then (b) the queries attend over each sequence's cached keys plus
the new ones (``forge_flash.api.cache_attention``; after the kernel, launched so that its start
overlaps the append's tail). Where the backend takes the two as one call
(``Backend.attend_appending``: the plugin's ``ff_attn_fwd_append``), the step is one launch
that waits for nothing (the append inside the decode kernel), or two launches the C API makes
itself where the decode kernel loads the cached keys while the append kernel runs.

Under ``torch.compile`` the call is one custom op, ``torch.ops.forge_flash.with_kvcache``, that
declares the caches as written in place (``forge_flash.ops`` says why the entry points are ops;
this module evaluates its annotations for the op's schema).
"""

import torch

from . import api, ops
from .call import NewKeys
from .discovery import active_backend
from .kvcache_append import append_step
from .kvcache_checks import check_with_kvcache
from .validation import Options, as_int


def flash_attn_with_kvcache(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k: torch.Tensor | None = None,
    v: torch.Tensor | None = None,
    rotary_cos: torch.Tensor | None = None,
    rotary_sin: torch.Tensor | None = None,
    cache_seqlens: int | torch.Tensor | None = None,
    cache_batch_idx: torch.Tensor | None = None,
    cache_leftpad: torch.Tensor | None = None,
    block_table: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    rotary_interleaved: bool = True,
    alibi_slopes: torch.Tensor | None = None,
    num_splits: int = 0,
    return_softmax_lse: bool = False,
    *,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Append new keys/values to a KV cache in place, then attend over the cache.

    FlashAttention-2's ``flash_attn_with_kvcache``, with the same parameters, defaults, shapes
    and return values, plus the keyword ``sinks``.

    **The caches are modified in place** when ``k``/``v`` are given: new key ``i`` of sequence
    ``b`` is written at position ``cache_seqlens[b] + i`` of that sequence's cache. ``q``,
    ``k`` and ``v`` are never modified (rotary works on copies). Every argument is checked
    before anything is written: a call that raises leaves the caches as they were.

    Sequence ``b`` then attends to keys ``[cache_leftpad[b], cache_seqlens[b] + seqlen_new)``
    of its cache: causal and window masks, and ALiBi distances, are aligned bottom-right on that
    range (the last query sits at the last key). A query row that sees no key gives output 0
    and LSE -inf (the sink's logit with ``sinks``).

    Args:
        q: (batch, seqlen_q, num_heads, head_dim), float16/bfloat16/float32.
        k_cache, v_cache: (batch_cache, seqlen_cache, num_heads_k, head_dim), or paged with
            ``block_table``: (num_blocks, page_size, num_heads_k, head_dim), any page_size >= 1;
            key ``t`` of sequence ``b`` is row ``t % page_size`` of block
            ``block_table[b, t // page_size]``. Same dtype and device as q.
        k, v: optional (batch, seqlen_new, num_heads_k, head_dim): keys/values to append.
        rotary_cos, rotary_sin: optional (seqlen_ro, rotary_dim / 2), rotary_dim <= head_dim,
            float16/bfloat16/float32; need ``k``/``v``. The new keys rotate at their positions
            ``cache_seqlens[b] + i``. The queries rotate at ``cache_seqlens[b] + i`` too when
            the attention is causal or local (a window edge below the cache's capacity), else
            all at ``cache_seqlens[b]``. Positions are indices into the cache row: with
            ``cache_leftpad`` they count the padding (as in FlashAttention-2). Rotated in
            float32, rounded to q's dtype; only the first ``rotary_dim`` features rotate.
        cache_seqlens: int, or int32 (batch,): keys already cached per sequence (counting the
            left padding). Required with ``k``; None attends to the whole cache.
        cache_batch_idx: optional int32 (batch,): sequence ``b`` uses cache row
            ``cache_batch_idx[b]`` (with ``block_table``: block_table row, an extension of
            FlashAttention-2, which refuses the pair). Duplicate rows with ``k``: either
            sequence's keys may end up in the cache.
        cache_leftpad: optional int32 (batch,): the first ``cache_leftpad[b]`` rows of sequence
            ``b`` are padding and never attended (with paged caches too: an extension).
        block_table: optional int32 (batch, max_blocks_per_seq) (rows selected by
            ``cache_batch_idx`` when given): the paged cache's block ids, in [0, num_blocks).
            Rows may share blocks (a common prefix), read by all of them; a new key written
            into a slot another sequence of the same call reads may or may not be seen by it
            (the append and the attention of different sequences are not ordered).
        softmax_scale: default ``head_dim ** -0.5``.
        causal: bottom-right causal mask.
        window_size: (left, right) sliding window, -1 = unbounded.
        softcap: > 0 caps the scores: ``softcap * tanh(score / softcap)``.
        rotary_interleaved: pairs (0, 1), (2, 3), ... when True, else (j, j + rotary_dim / 2).
        alibi_slopes: optional float32 (num_heads,) or (batch, num_heads).
        num_splits: split-KV parts of each sequence's keys, as FlashAttention's: 0 lets the
            kernels choose, 1 splits nothing, n > 1 asks for n (fewer where the keys are
            short). Timing only: the answer is the same up to rounding.
        return_softmax_lse: also return the float32 LSE, (batch, num_heads, seqlen_q).
        sinks: optional float32 (num_heads,): a per-head logit joining every row's softmax.

    Returns:
        out (batch, seqlen_q, num_heads, head_dim), or ``(out, softmax_lse)`` when
        ``return_softmax_lse``.

    Sync-free and CUDA-graph capturable: the append indexes on the device. The checks of
    device values (lengths, rows, block ids) read them back when allowed, as every entry point
    does (see ``forge_flash.validation``); every index is clamped, so skipping them never lets
    a write or read go out of bounds.
    """
    if torch.compiler.is_compiling():  # one opaque op for Dynamo
        return _with_kvcache_traced(
            q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx,
            cache_leftpad, block_table, softmax_scale, causal, window_size, softcap,
            rotary_interleaved, alibi_slopes, num_splits, return_softmax_lse, sinks,
        )  # fmt: skip
    plan = check_with_kvcache(
        q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx,
        cache_leftpad, block_table, softmax_scale, causal, window_size, softcap,
        rotary_interleaved, alibi_slopes, num_splits, return_softmax_lse, sinks,
    )  # fmt: skip
    if cache_seqlens is None or not isinstance(cache_seqlens, torch.Tensor):
        length = plan.capacity if cache_seqlens is None else cache_seqlens
        cache_seqlens = torch.full((plan.batch,), length, dtype=torch.int32, device=q.device)
    if block_table is not None and cache_batch_idx is not None:
        # A paged cache's rows are the block table's: select them once, for both steps.
        rows = cache_batch_idx.to(torch.int64).clamp(0, max(block_table.shape[0] - 1, 0))
        block_table, cache_batch_idx = block_table.index_select(0, rows), None
    seqlens, fused = cache_seqlens, False
    new = None  # rotary comes only with k and v (checked)
    if k is not None and v is not None:
        new = NewKeys(k, v, rotary_cos, rotary_sin, rotary_interleaved, plan.query_per_token)
    if new is not None and cache_leftpad is None:
        # One call where the backend takes the append with the attention. The window goes on
        # as the checks read it (plan.window): a window held in tensors is read once, and the
        # bound step's cache key holds values, never objects that may change in place.
        options = (
            softmax_scale, causal, plan.window, softcap, return_softmax_lse, num_splits
        )  # fmt: skip
        result = active_backend().attend_appending(
            lambda: api.cache_attention_call(
                q, k_cache, v_cache, cache_seqlens, cache_batch_idx=cache_batch_idx,
                block_table=block_table, softmax_scale=softmax_scale, causal=causal,
                window_size=plan.window, softcap=softcap, alibi_slopes=alibi_slopes,
                sinks=sinks, return_lse=return_softmax_lse, num_splits=num_splits,
            ),
            q, k_cache, v_cache, cache_seqlens, new, cache_batch_idx=cache_batch_idx,
            block_table=block_table, alibi_slopes=alibi_slopes, sinks=sinks, options=options,
        )  # fmt: skip
        if result is not None:
            return result
    if new is not None:
        q, seqlens, fused = append_step(
            q, k_cache, v_cache, cache_seqlens, new, cache_batch_idx=cache_batch_idx,
            block_table=block_table,
        )  # fmt: skip
    return api.cache_attention(
        q, k_cache, v_cache, seqlens, cache_batch_idx=cache_batch_idx,
        cache_leftpad=cache_leftpad, block_table=block_table, softmax_scale=softmax_scale,
        causal=causal, window_size=plan.window, softcap=softcap, alibi_slopes=alibi_slopes,
        sinks=sinks, return_lse=return_softmax_lse, programmatic_launch=fused,
        num_splits=num_splits,
    )  # fmt: skip


def _with_kvcache_traced(
    q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, cache_batch_idx,
    cache_leftpad, block_table, softmax_scale, causal, window_size, softcap, rotary_interleaved,
    alibi_slopes, num_splits, return_lse, sinks,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The op call Dynamo records for ``flash_attn_with_kvcache``. An op's argument has one
    type: ``cache_seqlens`` travels as a tensor or as an int (``cache_seqlens_value``, whose
    range the op checks when it runs, as for every other value); the window as its two edges."""
    seqlens_value = None
    if cache_seqlens is not None and not isinstance(cache_seqlens, torch.Tensor):
        seqlens_value, cache_seqlens = as_int("cache_seqlens", cache_seqlens), None
    options = Options(softmax_scale, causal, window_size, softcap, alibi_slopes, sinks)
    left, right, softcap, alibi_slopes, sinks = ops.option_args(options)
    result, lse = torch.ops.forge_flash.with_kvcache(
        q, k_cache, v_cache, k, v, rotary_cos, rotary_sin, cache_seqlens, seqlens_value,
        cache_batch_idx, cache_leftpad, block_table, softmax_scale, causal, left, right, softcap,
        rotary_interleaved, alibi_slopes, num_splits, return_lse, sinks,
    )  # fmt: skip
    return (result, lse) if return_lse else result


@ops.custom_op("forge_flash::with_kvcache", mutates_args=("k_cache", "v_cache"))
def _with_kvcache_op(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k: torch.Tensor | None,
    v: torch.Tensor | None,
    rotary_cos: torch.Tensor | None,
    rotary_sin: torch.Tensor | None,
    cache_seqlens: torch.Tensor | None,
    cache_seqlens_value: int | None,
    cache_batch_idx: torch.Tensor | None,
    cache_leftpad: torch.Tensor | None,
    block_table: torch.Tensor | None,
    softmax_scale: float | None,
    causal: bool,
    window_left: int,
    window_right: int,
    softcap: float,
    rotary_interleaved: bool,
    alibi_slopes: torch.Tensor | None,
    num_splits: int,
    return_lse: bool,
    sinks: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    result = flash_attn_with_kvcache(
        q, k_cache, v_cache, k, v, rotary_cos, rotary_sin,
        cache_seqlens if cache_seqlens is not None else cache_seqlens_value, cache_batch_idx,
        cache_leftpad, block_table, softmax_scale, causal, (window_left, window_right), softcap,
        rotary_interleaved, alibi_slopes, num_splits, return_lse, sinks=sinks,
    )  # fmt: skip
    return ops.with_lse(result, return_lse, q)


@_with_kvcache_op.register_fake
def _(q, k_cache, v_cache, *args):
    return_lse = args[-2]  # the schema ends (..., return_lse, sinks)
    return ops.fake_outputs(q, (q.shape[0], q.shape[2], q.shape[1]), return_lse)
