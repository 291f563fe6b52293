"""Input checks of ``flash_attn_with_kvcache``, all run before the caches are touched.

The append writes into the caller's caches before the attention runs, so every argument,
the attention options included, is checked here first: a bad call raises with the caches as
they were. Values that live on the device (lengths, cache rows, block ids) are read back in
one transfer when ``validation.device_values_readable`` allows it (never while a CUDA graph is
captured); the append clamps every index, so skipping that check never lets it write out of
bounds.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .validation import (
    FLOAT_DTYPES,
    check_flag,
    check_head_dim,
    check_head_vector,
    check_heads,
    check_index_tensor,
    check_int,
    check_like,
    check_num_splits,
    check_softcap,
    check_tensor,
    check_window,
    device_values_readable,
    resolve_scale,
)


class KVCachePlan(NamedTuple):
    """What the checks established, for the append and the attention."""

    batch: int
    seqlen_q: int
    seqlen_new: int  # keys appended per sequence (0 without k/v)
    capacity: int  # keys a sequence can hold: cache rows, or max_blocks * page_size
    paged: bool
    rotary: bool
    #: Queries rotate at ``cache_seqlens[b] + i`` (causal or local), else all at cache_seqlens[b].
    query_per_token: bool
    #: window_size as two ints (it may be given as a tensor): what a cached plan may key on.
    window: tuple[int, int]


def check_with_kvcache(
    q: object,
    k_cache: object,
    v_cache: object,
    k: object,
    v: object,
    rotary_cos: object,
    rotary_sin: object,
    cache_seqlens: object,
    cache_batch_idx: object,
    cache_leftpad: object,
    block_table: object,
    softmax_scale: object,
    causal: object,
    window_size: object,
    softcap: object,
    rotary_interleaved: object,
    alibi_slopes: object,
    num_splits: object,
    return_softmax_lse: object,
    sinks: object,
) -> KVCachePlan:
    """Every argument of ``flash_attn_with_kvcache``; raises TypeError/ValueError naming it."""
    q = check_tensor("q", q, 4, "(batch, seqlen_q, num_heads, head_dim)")
    batch, seqlen_q, num_heads, head_dim = q.shape
    check_head_dim("q.shape[3]", head_dim)
    paged = block_table is not None
    k_cache, v_cache = _check_caches(k_cache, v_cache, paged, q)
    check_heads("q.shape[2]", num_heads, "k_cache.shape[2]", k_cache.shape[2])
    if paged:
        block_rows = batch if cache_batch_idx is None else None
        capacity = _check_block_table(block_table, block_rows, k_cache.shape[1], q)
    else:
        capacity = k_cache.shape[1]
        if cache_batch_idx is None and k_cache.shape[0] != batch:
            raise ValueError(
                f"k_cache must have batch = {batch} rows (that of q) when cache_batch_idx is "
                f"None; got shape {tuple(k_cache.shape)}"
            )
    seqlen_new = _check_new_kv(k, v, batch, k_cache, capacity, paged, q)
    _check_cache_seqlens(cache_seqlens, batch, seqlen_new, capacity, paged, q)
    if cache_batch_idx is not None:
        check_index_tensor("cache_batch_idx", cache_batch_idx, batch, q)
        rows = block_table.shape[0] if paged else k_cache.shape[0]
        if batch and not rows:
            raise ValueError(
                "cache_batch_idx points into an empty cache: "
                + ("block_table has 0 rows" if paged else "k_cache.shape[0] is 0")
            )
    if cache_leftpad is not None:
        check_index_tensor("cache_leftpad", cache_leftpad, batch, q)
    rotary = _check_rotary(rotary_cos, rotary_sin, k is not None, head_dim, q)
    check_flag("rotary_interleaved", rotary_interleaved)
    if softmax_scale is not None:  # the default needs no check (the attention computes it)
        resolve_scale("softmax_scale", softmax_scale, head_dim)
    causal = check_flag("causal", causal)
    left, right = check_window(window_size, False)
    check_softcap(softcap)
    if alibi_slopes is not None:
        shapes = {(num_heads,): "head", (batch, num_heads): "batch_head"}
        check_head_vector("alibi_slopes", alibi_slopes, shapes, q)
    if sinks is not None:
        check_head_vector("sinks", sinks, {(num_heads,): "head"}, q)
    check_num_splits(num_splits)
    check_flag("return_softmax_lse", return_softmax_lse)
    # FlashAttention-2 drops window edges that reach past the cache before it decides whether
    # the attention is local; the query positions follow that decision.
    local = 0 <= left < capacity or 0 <= right < capacity
    plan = KVCachePlan(
        batch, seqlen_q, seqlen_new, capacity, paged, rotary, causal or local, (left, right)
    )
    _check_values(plan, q, k_cache, cache_seqlens, cache_batch_idx, cache_leftpad, block_table,
                  rotary_cos)  # fmt: skip
    return plan


def _check_caches(
    k_cache: object, v_cache: object, paged: bool, q: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    if paged:
        layout = "(num_blocks, page_size, num_heads_k, head_dim) with block_table"
    else:
        layout = "(batch_cache, seqlen_cache, num_heads_k, head_dim)"
    k_cache = check_tensor("k_cache", k_cache, 4, layout)
    v_cache = check_tensor("v_cache", v_cache, 4, layout)
    check_like("k_cache", k_cache, "q", q)
    check_like("v_cache", v_cache, "q", q)
    head_dim = q.shape[3]
    if k_cache.shape[3] != head_dim or (paged and k_cache.shape[1] < 1):
        wanted = "page_size >= 1 and " if paged else ""
        raise ValueError(
            f"k_cache must have shape {layout} with {wanted}head_dim = {head_dim} (that of q); "
            f"got {tuple(k_cache.shape)}"
        )
    if v_cache.shape != k_cache.shape:
        raise ValueError(
            f"v_cache must have the shape of k_cache {tuple(k_cache.shape)}; "
            f"got {tuple(v_cache.shape)}"
        )
    return k_cache, v_cache


def _check_block_table(
    block_table: object, rows: int | None, page_size: int, q: torch.Tensor
) -> int:
    """int32 (rows, max_blocks) on q's device (any rows >= 0 when ``rows`` is None); returns
    the keys a sequence can hold."""
    if not isinstance(block_table, torch.Tensor):
        raise TypeError(
            f"block_table must be a torch.Tensor of int32 or None; got {type(block_table).__name__}"
        )
    if block_table.dtype != torch.int32:
        raise TypeError(f"block_table must have dtype torch.int32; got {block_table.dtype}")
    if block_table.dim() != 2 or (rows is not None and block_table.shape[0] != rows):
        wanted = f"batch={rows}" if rows is not None else "rows"
        raise ValueError(
            f"block_table must have shape ({wanted}, max_blocks_per_seq); "
            f"got {tuple(block_table.shape)}"
        )
    if block_table.device != q.device:
        raise ValueError(
            f"block_table must be on the device of q ({q.device}); got {block_table.device}"
        )
    return block_table.shape[1] * page_size


def _capacity_words(capacity: int, paged: bool) -> str:
    """What bounds a sequence's keys, for the messages: a paged cache's bound is its block
    table's width (FlashAttention names ``block_table`` there too), a contiguous one's its rows."""
    if paged:
        return f"the capacity of block_table ({capacity} keys per sequence: its width x page_size)"
    return f"the cache's capacity ({capacity} keys per sequence)"


def _check_new_kv(
    k: object,
    v: object,
    batch: int,
    k_cache: torch.Tensor,
    capacity: int,
    paged: bool,
    q: torch.Tensor,
) -> int:
    if k is None and v is None:
        return 0
    if k is None or v is None:
        given, missing = ("k", "v") if v is None else ("v", "k")
        raise ValueError(f"{missing} must be given with {given} (new keys and values go together)")
    layout = "(batch, seqlen_new, num_heads_k, head_dim)"
    k = check_tensor("k", k, 4, layout)
    v = check_tensor("v", v, 4, layout)
    check_like("k", k, "q", q)
    check_like("v", v, "q", q)
    wanted = (batch, k.shape[1], k_cache.shape[2], k_cache.shape[3])
    if tuple(k.shape) != wanted:
        raise ValueError(
            f"k must have shape (batch={batch}, seqlen_new, num_heads_k={wanted[2]}, "
            f"head_dim={wanted[3]}); got {tuple(k.shape)}"
        )
    if v.shape != k.shape:
        raise ValueError(f"v must have the shape of k {tuple(k.shape)}; got {tuple(v.shape)}")
    if k.shape[1] > capacity:
        raise ValueError(
            f"k must have seqlen_new <= {_capacity_words(capacity, paged)}; got {k.shape[1]}"
        )
    return k.shape[1]


def _check_cache_seqlens(
    cache_seqlens: object,
    batch: int,
    seqlen_new: int,
    capacity: int,
    paged: bool,
    q: torch.Tensor,
) -> None:
    if cache_seqlens is None:
        if seqlen_new:
            raise ValueError(
                "cache_seqlens must be given with k and v (it says where they are appended); "
                "got None"
            )
        return
    if isinstance(cache_seqlens, torch.Tensor):
        check_index_tensor("cache_seqlens", cache_seqlens, batch, q)
        return
    length = check_int("cache_seqlens", cache_seqlens, 0)
    if length + seqlen_new > capacity:
        raise ValueError(
            f"cache_seqlens + seqlen_new must be at most {_capacity_words(capacity, paged)}; "
            f"got {length} + {seqlen_new}"
        )


def _check_rotary(
    rotary_cos: object, rotary_sin: object, has_new_kv: bool, head_dim: int, q: torch.Tensor
) -> bool:
    if rotary_cos is None and rotary_sin is None:
        return False
    if rotary_cos is None or rotary_sin is None:
        given, missing = ("rotary_cos", "rotary_sin") if rotary_sin is None else (
            "rotary_sin", "rotary_cos")  # fmt: skip
        raise ValueError(f"{missing} must be given with {given}")
    if not has_new_kv:
        raise ValueError(
            "rotary_cos applies to the new keys: it needs k and v (the cached keys are "
            "already rotated); got k=None"
        )
    for name, table in (("rotary_cos", rotary_cos), ("rotary_sin", rotary_sin)):
        if not isinstance(table, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or None; got {type(table).__name__}")
        if table.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be float16, bfloat16 or float32; got {table.dtype}")
        if table.dim() != 2 or table.shape[0] < 1 or not 1 <= 2 * table.shape[1] <= head_dim:
            raise ValueError(
                f"{name} must have shape (seqlen_ro >= 1, rotary_dim / 2) with 2 <= rotary_dim "
                f"<= head_dim = {head_dim}; got {tuple(table.shape)}"
            )
        if table.device != q.device:
            raise ValueError(f"{name} must be on the device of q ({q.device}); got {table.device}")
    if rotary_sin.shape != rotary_cos.shape:
        raise ValueError(
            f"rotary_sin must have the shape of rotary_cos {tuple(rotary_cos.shape)}; "
            f"got {tuple(rotary_sin.shape)}"
        )
    return True


def _check_values(
    plan: KVCachePlan,
    q: torch.Tensor,
    k_cache: torch.Tensor,
    cache_seqlens: object,
    cache_batch_idx: torch.Tensor | None,
    cache_leftpad: torch.Tensor | None,
    block_table: torch.Tensor | None,
    rotary_cos: torch.Tensor | None,
) -> None:
    """Lengths, pads, cache rows, block ids and rotary rows in range, from one read-back of
    the device values (none when they are not readable: see the module docstring)."""
    if plan.rotary and not isinstance(cache_seqlens, torch.Tensor):
        _check_rotary_rows(plan, cache_seqlens, rotary_cos)  # known on the host
    on_device = [
        x
        for x in (cache_seqlens, cache_batch_idx, cache_leftpad, block_table)
        if isinstance(x, torch.Tensor)
    ]
    # Decided before any device op: a skipped check (a CUDA graph capture) adds no GPU work.
    if not plan.batch or not on_device or not device_values_readable(on_device[0]):
        return
    checks: list[tuple[str, torch.Tensor]] = []
    if isinstance(cache_seqlens, torch.Tensor):
        lengths = cache_seqlens.to(torch.int64)
        checks.append(("cache_seqlens", lengths))
    if cache_leftpad is not None:
        if not isinstance(cache_seqlens, torch.Tensor):  # an int, or None: the whole cache
            full = plan.capacity if cache_seqlens is None else cache_seqlens
            lengths = torch.full((plan.batch,), full, dtype=torch.int64, device=q.device)
        pads = cache_leftpad.to(torch.int64)
        checks += [("cache_leftpad", pads), ("cache_leftpad room", lengths - pads)]
    if cache_batch_idx is not None:
        checks.append(("cache_batch_idx", cache_batch_idx.to(torch.int64)))
    if block_table is not None:
        checks.append(("block_table", block_table.to(torch.int64).flatten()))
    checks = [(name, x) for name, x in checks if x.numel()]
    if not checks:
        return
    bounds = torch.stack([bound for _, x in checks for bound in torch.aminmax(x)]).tolist()
    found = {name: bounds[2 * i : 2 * i + 2] for i, (name, _) in enumerate(checks)}
    if "cache_seqlens" in found:
        low, high = found["cache_seqlens"]
        if low < 0 or high + plan.seqlen_new > plan.capacity:
            raise ValueError(
                f"cache_seqlens must lie in [0, capacity - seqlen_new = {plan.capacity} - "
                f"{plan.seqlen_new}], capacity being {_capacity_words(plan.capacity, plan.paged)}; "
                f"got {low if low < 0 else high}"
            )
    if "cache_leftpad" in found:
        if found["cache_leftpad"][0] < 0:
            raise ValueError(f"cache_leftpad must be >= 0; got {found['cache_leftpad'][0]}")
        if found["cache_leftpad room"][0] < 0:
            raise ValueError(
                "cache_leftpad must be at most cache_seqlens for every sequence (the padding "
                "lies inside the cached keys); got a larger pad"
            )
    if "cache_batch_idx" in found:
        rows = block_table.shape[0] if plan.paged else k_cache.shape[0]
        first, last = found["cache_batch_idx"]
        if first < 0 or last >= rows:
            what = "block_table.shape[0]" if plan.paged else "k_cache.shape[0]"
            raise ValueError(
                f"cache_batch_idx must lie in [0, {what} = {rows}); "
                f"got {first if first < 0 else last}"
            )
    if "block_table" in found:
        first, last = found["block_table"]
        if first < 0 or last >= k_cache.shape[0]:
            raise ValueError(
                f"block_table ids must lie in [0, num_blocks = {k_cache.shape[0]}); "
                f"got {first if first < 0 else last}"
            )
    if plan.rotary and "cache_seqlens" in found:
        _check_rotary_rows(plan, found["cache_seqlens"][1], rotary_cos)


def _check_rotary_rows(plan: KVCachePlan, longest: int, rotary_cos: torch.Tensor) -> None:
    """The table has a row for the last rotated position of the longest cache."""
    span = max(plan.seqlen_new, plan.seqlen_q if plan.query_per_token else 1)
    if longest + span > rotary_cos.shape[0]:
        raise ValueError(
            f"rotary_cos must have a row for every rotated position (up to cache_seqlens + "
            f"{span} - 1 = {longest + span - 1}); got seqlen_ro = {rotary_cos.shape[0]}"
        )
