"""Plain references for KV caches: rotary, append and attention over a (paged) cache, and the
random cache layouts the CPU and GPU tests share.

Written as loops over sequences and tokens, independently of ``forge_flash.kvcache_append``:
explicit pair lists for rotary, a token-by-token address rule for paged caches, and
``helpers.reference.reference_attention`` (float64) on each sequence's gathered keys.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .reference import reference_attention


def rotary_pairs(rotary_dim: int, interleaved: bool) -> list[tuple[int, int, int]]:
    """(first feature, second feature, angle column) of every rotated pair."""
    half = rotary_dim // 2
    if interleaved:
        return [(2 * j, 2 * j + 1, j) for j in range(half)]
    return [(j, j + half, j) for j in range(half)]


def reference_rotary(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    positions: list[list[int]],
    interleaved: bool,
) -> torch.Tensor:
    """x (batch, seqlen, heads, head_dim) rotated in float64; token (b, i) at positions[b][i]."""
    out = x.double().clone()
    source = x.double()
    cos64, sin64 = cos.double(), sin.double()
    for b, row in enumerate(positions):
        for i, position in enumerate(row):
            for first, second, column in rotary_pairs(2 * cos.shape[1], interleaved):
                c, s = cos64[position, column], sin64[position, column]
                a, z = source[b, i, :, first], source[b, i, :, second]
                out[b, i, :, first] = a * c - z * s
                out[b, i, :, second] = a * s + z * c
    return out


def cache_slot(
    b: int, t: int, cache_rows: list[int] | None, block_table: list[list[int]] | None, page: int
) -> tuple[int, int]:
    """(index 0, index 1) in the cache tensor of key t of sequence b."""
    if block_table is not None:
        return block_table[b][t // page], t % page
    return (b if cache_rows is None else cache_rows[b]), t


def reference_append(
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cache_seqlens: list[int],
    *,
    cache_rows: list[int] | None = None,
    block_table: list[list[int]] | None = None,
    k_rotated: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The caches after the append, as float64 copies, and a bool mask of the written slots.

    ``k_rotated`` (float64) replaces k when the keys are rotated before they are stored.
    """
    k_out, v_out = k_cache.double().clone(), v_cache.double().clone()
    written = torch.zeros(k_cache.shape[:2], dtype=torch.bool)
    new_k = k.double() if k_rotated is None else k_rotated
    page = k_cache.shape[1]
    for b, length in enumerate(cache_seqlens):
        for i in range(k.shape[1]):
            slot = cache_slot(b, length + i, cache_rows, block_table, page)
            k_out[slot] = new_k[b, i]
            v_out[slot] = v[b, i].double()
            written[slot] = True
    return k_out, v_out, written


def sequence_keys(
    cache: torch.Tensor,
    b: int,
    start: int,
    end: int,
    *,
    cache_rows: list[int] | None = None,
    block_table: list[list[int]] | None = None,
) -> torch.Tensor:
    """Keys [start, end) of sequence b, (end - start, heads_k, head_dim): each key's slot by
    the address rule, token by token, then one gather."""
    page = cache.shape[1]
    slots = [cache_slot(b, t, cache_rows, block_table, page) for t in range(start, end)]
    if not slots:
        return cache.new_zeros((0, *cache.shape[2:]))
    index = torch.tensor(slots, dtype=torch.long, device=cache.device)
    return cache[index[:, 0], index[:, 1]]


def reference_cache_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    key_ends: list[int],
    *,
    key_starts: list[int] | None = None,
    cache_rows: list[int] | None = None,
    block_table: list[list[int]] | None = None,
    scale: float | None = None,
    causal: bool = False,
    **variants: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 out (batch, seqlen_q, heads, head_dim) and lse (batch, heads, seqlen_q).

    Sequence b attends to its keys [key_starts[b], key_ends[b]), masks aligned bottom-right
    on that range. ``variants`` (window_size, softcap, alibi_slopes, sinks) go to
    ``reference_attention``; per-batch ALiBi slopes are sliced per sequence.
    """
    outs, lses = [], []
    for b, end in enumerate(key_ends):
        start = 0 if key_starts is None else key_starts[b]
        where = {"cache_rows": cache_rows, "block_table": block_table}
        keys = sequence_keys(k_cache, b, start, end, **where)
        values = sequence_keys(v_cache, b, start, end, **where)
        options = dict(variants)
        slopes = options.get("alibi_slopes")
        if isinstance(slopes, torch.Tensor) and slopes.dim() == 2:
            options["alibi_slopes"] = slopes[b : b + 1]
        out, lse = reference_attention(
            q[b : b + 1], keys.unsqueeze(0), values.unsqueeze(0), scale=scale, causal=causal,
            **options,
        )  # fmt: skip
        outs.append(out)
        lses.append(lse)
    return torch.cat(outs), torch.cat(lses)


# -- random inputs ----------------------------------------------------------------------------


def randn(gen: torch.Generator, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=gen).to(dtype)


def random_block_table(
    gen: torch.Generator, batch: int, max_blocks: int, num_blocks: int
) -> torch.Tensor:
    """Distinct random block ids, so a wrong address rule reads another sequence's keys."""
    ids = torch.randperm(num_blocks, generator=gen)[: batch * max_blocks]
    return ids.view(batch, max_blocks).to(torch.int32)


def rotary_tables(
    gen: torch.Generator, rows: int, rotary_dim: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (rows, rotary_dim / 2) of random angles."""
    angles = torch.rand(rows, rotary_dim // 2, generator=gen, dtype=torch.float64) * 2 * math.pi
    return angles.cos().to(dtype), angles.sin().to(dtype)


class CacheCase(NamedTuple):
    lengths: list[int]  # cached keys per sequence, counting the left padding
    pads: list[int]  # left padding per sequence
    rows: list[int] | None  # contiguous: the cache row of each sequence
    table: torch.Tensor | None  # paged: the block table
    capacity: int  # keys a sequence can hold
    k_cache: torch.Tensor
    v_cache: torch.Tensor

    @property
    def table_rows(self) -> list[list[int]] | None:
        return None if self.table is None else self.table.tolist()


def cache_case(
    layout: str,
    dtype: torch.dtype,
    seqlen_new: int,
    gen: torch.Generator,
    *,
    heads_k: int = 2,
    head_dim: int = 32,
) -> CacheCase:
    """Three sequences in a ``contiguous`` cache (with cache rows) or a ``paged-<page_size>``
    one: cached lengths at page boundaries and inside a page, one empty, left padding. Every
    slot outside a sequence's keys (padding, past the end, spare blocks and rows) holds NaN:
    reading any of them would show in the output."""
    batch = 3
    if layout == "contiguous":
        page, lengths, pads = 0, [3, 0, 9], [1, 0, 4]
        rows, table, capacity = [4, 1, 2], None, 12
        k_cache = randn(gen, 5, capacity, heads_k, head_dim, dtype=dtype)
    else:
        page = int(layout.split("-")[1])
        lengths = [min(page, 9), 0, 2 * page + 1]
        pads = [1, 0, min(4, lengths[2])]
        max_blocks = (max(lengths) + seqlen_new + page - 1) // page
        rows, capacity = None, max_blocks * page
        table = random_block_table(gen, batch, max_blocks, batch * max_blocks + 2)
        k_cache = randn(gen, batch * max_blocks + 2, page, heads_k, head_dim, dtype=dtype)
    v_cache = randn(gen, *k_cache.shape, dtype=dtype)
    keep = torch.zeros(k_cache.shape[:2], dtype=torch.bool)
    table_rows = None if table is None else table.tolist()
    for b in range(batch):
        for t in range(pads[b], lengths[b]):
            keep[cache_slot(b, t, rows, table_rows, page)] = True
    k_cache[~keep] = float("nan")
    v_cache[~keep] = float("nan")
    return CacheCase(lengths, pads, rows, table, capacity, k_cache, v_cache)
