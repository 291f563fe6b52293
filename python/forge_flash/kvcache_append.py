"""Step (a) of ``flash_attn_with_kvcache``: rotary embedding and the in-place append of new K/V.

Plain torch ops whose indices are built on the device from device tensors (``cache_seqlens``,
``cache_batch_idx``, ``block_table``): nothing is read back to the host, so a decode step that
appends stays free of synchronisation and can be captured in a CUDA graph. Every index is
clamped into its tensor, so invalid values (which validation reports when it may read them)
can never make these ops read or write out of bounds.

``append_step`` is what ``flash_attn_with_kvcache`` runs: the active backend's fused append
(``Backend.append_kv``: the plugin's one-launch kernel, ``ff_append_kv``) where it takes the
tensors, else these torch ops, which stay the CPU path and the reference the kernel matches
bit for bit.

Positions follow FlashAttention-2: new key ``i`` of sequence ``b`` goes to row
``cache_seqlens[b] + i`` of its cache row (contiguous) or of its logical sequence (paged:
block ``block_table[b, t // page_size]``, row ``t % page_size``), and is rotated at that same
position. Left padding does not shift positions: they count the padding rows too.
"""

from __future__ import annotations

import torch

from .call import NewKeys
from .discovery import active_backend


def new_key_positions(cache_seqlens: torch.Tensor, count: int) -> torch.Tensor:
    """(batch, count) int64: ``cache_seqlens[b] + i``, where new key ``i`` of row ``b`` goes."""
    steps = torch.arange(count, dtype=torch.int64, device=cache_seqlens.device)
    return cache_seqlens.to(torch.int64).unsqueeze(1) + steps


def query_positions(cache_seqlens: torch.Tensor, seqlen_q: int, per_token: bool) -> torch.Tensor:
    """(batch, seqlen_q) int64 rotary positions of the queries.

    ``per_token`` (causal or local attention): query ``i`` sits at ``cache_seqlens[b] + i``,
    like the new keys. Otherwise every query of row ``b`` sits at ``cache_seqlens[b]``
    (FlashAttention-2's rule: without a mask that orders them, the queries share a position).
    """
    if per_token:
        return new_key_positions(cache_seqlens, seqlen_q)
    return cache_seqlens.to(torch.int64).unsqueeze(1).expand(-1, seqlen_q)


def apply_rotary(
    x: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    positions: torch.Tensor,
    interleaved: bool,
) -> torch.Tensor:
    """A rotated copy of ``x`` (batch, seqlen, heads, head_dim); ``x`` is not modified.

    ``cos``/``sin`` are (seqlen_ro, rotary_dim / 2); token ``(b, i)`` uses row
    ``positions[b, i]`` (clamped into the table). The first ``rotary_dim`` features rotate in
    pairs, ``(2j, 2j + 1)`` when ``interleaved``, else ``(j, j + rotary_dim / 2)`` (GPT-NeoX);
    the rest pass through. Computed in float32, rounded once to ``x``'s dtype.
    """
    half = cos.shape[1]
    rows = positions.clamp(0, cos.shape[0] - 1)
    # (batch, seqlen, 1, half): one angle per token and pair, shared by the heads.
    c = cos[rows].unsqueeze(-2).float()
    s = sin[rows].unsqueeze(-2).float()
    part = x[..., : 2 * half].float()
    if interleaved:
        first, second = part[..., 0::2], part[..., 1::2]
    else:
        first, second = part[..., :half], part[..., half:]
    new_first = first * c - second * s
    new_second = first * s + second * c
    if interleaved:
        rotated = torch.stack((new_first, new_second), dim=-1).flatten(-2)
    else:
        rotated = torch.cat((new_first, new_second), dim=-1)
    return torch.cat((rotated.to(x.dtype), x[..., 2 * half :]), dim=-1)


def append_kv(
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cache_seqlens: torch.Tensor,
    *,
    cache_batch_idx: torch.Tensor | None = None,
    block_table: torch.Tensor | None = None,
    rotary_cos: torch.Tensor | None = None,
    rotary_sin: torch.Tensor | None = None,
    rotary_interleaved: bool = True,
) -> None:
    """Write ``k``/``v`` (batch, seqlen_new, heads_k, head_dim) into the caches in place.

    Contiguous caches are (batch_cache, capacity, heads_k, head_dim) and row ``b`` writes cache
    row ``cache_batch_idx[b]`` (``b`` without it). Paged caches are (num_blocks, page_size,
    heads_k, head_dim) with ``block_table`` (batch, max_blocks); ``cache_batch_idx`` does not
    apply to them (select the block_table rows instead). With ``rotary_cos``/``rotary_sin`` the
    keys are rotated at their positions before they are written; ``k`` itself is untouched.
    Duplicate cache rows in ``cache_batch_idx`` leave either row's keys (unspecified which).
    """
    seqlen_new = k.shape[1]
    positions = new_key_positions(cache_seqlens, seqlen_new)
    if rotary_cos is not None and rotary_sin is not None:
        k = apply_rotary(k, rotary_cos, rotary_sin, positions, rotary_interleaved)
    if block_table is None:
        capacity = k_cache.shape[1]
        if cache_batch_idx is None:
            rows = torch.arange(k.shape[0], dtype=torch.int64, device=k.device)
        else:
            rows = cache_batch_idx.to(torch.int64).clamp(0, k_cache.shape[0] - 1)
        index = (rows.unsqueeze(1).expand_as(positions), positions.clamp(0, capacity - 1))
    else:
        page_size, max_blocks = k_cache.shape[1], block_table.shape[1]
        slots = positions.clamp(0, max_blocks * page_size - 1)
        columns = torch.div(slots, page_size, rounding_mode="floor")
        blocks = block_table.gather(1, columns).to(torch.int64).clamp(0, k_cache.shape[0] - 1)
        index = (blocks, slots.remainder(page_size))
    # index_put_ with (batch, seqlen_new) index tensors addresses (batch, seqlen_new, heads_k,
    # head_dim) slices: exactly the shape of k and v.
    k_cache.index_put_(index, k)
    v_cache.index_put_(index, v)


def append_step(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    new: NewKeys,
    *,
    cache_batch_idx: torch.Tensor | None,
    block_table: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``append_kv`` of ``new``, and with its rotary tables the queries rotated at
    ``query_positions``.

    Returns the queries to attend with (a rotated copy with rotary, else ``q``), the int32 key
    counts after the append (``cache_seqlens + seqlen_new``) and whether the backend's fused
    kernel ran (then the attention may launch programmatically behind it).
    """
    fused = active_backend().append_kv(
        k_cache, v_cache, cache_seqlens, new, cache_batch_idx=cache_batch_idx,
        block_table=block_table, q=q,
    )  # fmt: skip
    if fused is not None:
        rotated, seqlens = fused
        return (q if rotated is None else rotated), seqlens, True
    cos, sin, interleaved = new.rotary_cos, new.rotary_sin, new.rotary_interleaved
    append_kv(
        k_cache, v_cache, new.k, new.v, cache_seqlens, cache_batch_idx=cache_batch_idx,
        block_table=block_table, rotary_cos=cos, rotary_sin=sin, rotary_interleaved=interleaved,
    )  # fmt: skip
    seqlens = cache_seqlens + new.k.shape[1]  # int32: the keys attended, new ones included
    if cos is not None and sin is not None:
        positions = query_positions(cache_seqlens, q.shape[1], new.query_per_token)
        q = apply_rotary(q, cos, sin, positions, interleaved)
    return q, seqlens, False
