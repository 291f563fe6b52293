"""Varlen prefill over a paged cache through TMA (the PagedKV twin of the TMA-only instance,
fwd_instantiate.cuh, sm90_paged_info): Q through a map over the packed rows, each K/V tile as
boxes that each lie within one page, at the block ids of the sequence's row of the block table.
Checked against the float64 reference per sequence, with pages at random block ids, page sizes
below, at and above the tile's 128 keys, GQA, empty sequences and seqlen_q != seqlen_k both
ways; with NaN in the cache rows past each sequence's last key (in its last page, and in the
blocks no sequence owns, which the table's entries past a sequence's pages name: they must reach
no output); and by the profiler: the twin is what runs where the pages fit its K/V tiles
(csrc/kernels/paged_boxes.h: powers of two from 8 keys; at 192 and 256, whose tiles of 112 and
80 keys cross larger pages, as boxes of 16 rows), the cp.async copies elsewhere, checked against
the same reference.
"""

from __future__ import annotations

import re

import pytest
import torch

import forge_flash
from forge_flash.validation import device_value_checks_off

from helpers.kernels import (
    assert_each_sequence_close,
    hopper_kernels_launched,
    is_packed_twin,
    kernel_backend,
    packed_qkv,
    sm90_only,
)

pytestmark = sm90_only

# Past the persistent kernel's 1024 keys (the plain launch, where the twin runs): lengths that
# end inside a page and inside a tile, an empty sequence, queries shorter and longer than keys.
LENGTHS = [(1500, 1500), (0, 1100), (1025, 3000), (2047, 1300), (700, 2049), (1111, 1111)]
SPARE_BLOCKS = 7  # blocks no sequence owns, at random ids among the others


def paged_cache(k, v, cu_k, page_size, *, fill=0.0):
    """k and v (total_k, heads_k, d) packed by cu_k, as caches (num_blocks, page_size, heads_k,
    d) whose pages sit at random block ids, every row no sequence owns set to ``fill``; the
    block table (batch, max_blocks) int32, its entries past a sequence's pages a block no
    sequence owns (the checks want every entry a block id)."""
    lengths = (cu_k[1:] - cu_k[:-1]).tolist()
    pages = [-(-n // page_size) for n in lengths]
    num_blocks = sum(pages) + SPARE_BLOCKS
    ids = torch.randperm(num_blocks, device=k.device).to(torch.int32)
    spare = int(ids[-1])  # no sequence's: ids[: sum(pages)] are theirs
    table = torch.full(
        (len(lengths), max(max(pages), 1)), spare, dtype=torch.int32, device=k.device
    )
    caches = []
    for x in (k, v):
        cache = x.new_full((num_blocks, page_size, *x.shape[1:]), fill)
        caches.append(cache)
    used = 0
    for b, (n, count) in enumerate(zip(lengths, pages, strict=True)):
        table[b, :count] = ids[used : used + count]
        start = int(cu_k[b])
        for x, cache in zip((k, v), caches, strict=True):
            rows = x.new_full((count * page_size, *x.shape[1:]), fill)
            rows[:n] = x[start : start + n]
            cache[table[b, :count].long()] = rows.view(count, page_size, *x.shape[1:])
        used += count
    return caches[0], caches[1], table


def _run(q, k_cache, v_cache, table, cu_q, cu_k, causal):
    seq_q = (cu_q[1:] - cu_q[:-1]).tolist()
    seq_k = (cu_k[1:] - cu_k[:-1]).tolist()
    out = torch.full_like(q, float("nan"))  # poisoned: every row the call owns must be written
    with kernel_backend():
        return forge_flash.flash_attn_varlen_fwd(
            q, k_cache, v_cache, cu_q, cu_k, max(seq_q), max(seq_k),
            causal=causal, block_table=table, out=out, return_lse=True,
        )  # fmt: skip


def _is_paged_twin(name: str) -> bool:
    """fwd_kernel_sm90<T, Cfg, PagedKV policies, kPackedSeqs = true>(...)."""
    return "Policies<true, false, false, false, false, true>" in name and is_packed_twin(name)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [64, 96, 128, 192, 256])
@pytest.mark.parametrize("page_size", [8, 16, 32, 64, 256])
def test_paged_sequences_match_the_reference(page_size, head_dim, causal, dtype):
    q, k, v, cu_q, cu_k = packed_qkv(LENGTHS, 8, 8, head_dim, dtype)
    k_cache, v_cache, table = paged_cache(k, v, cu_k, page_size)
    got, lse = _run(q, k_cache, v_cache, table, cu_q, cu_k, causal)
    assert_each_sequence_close(q, k, v, cu_q, cu_k, got, lse, causal)


@pytest.mark.parametrize("causal", [False, True])
def test_gqa_paged_sequences(causal):
    q, k, v, cu_q, cu_k = packed_qkv(LENGTHS, 16, 4, 128, torch.bfloat16)
    k_cache, v_cache, table = paged_cache(k, v, cu_k, 16)
    got, lse = _run(q, k_cache, v_cache, table, cu_q, cu_k, causal)
    assert_each_sequence_close(q, k, v, cu_q, cu_k, got, lse, causal)


@pytest.mark.parametrize("page_size", [16, 256])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_nan_past_a_sequences_keys_reaches_no_output(head_dim, page_size):
    # Every cache row no sequence owns holds NaN: the rows after each sequence's last key in its
    # last page (read with that tile: K masked, V zeroed) and the blocks no sequence owns, which
    # the table's entries past a sequence's pages name (boxes past the last key look none up).
    q, k, v, cu_q, cu_k = packed_qkv(LENGTHS, 8, 8, head_dim, torch.bfloat16)
    k_cache, v_cache, table = paged_cache(k, v, cu_k, page_size, fill=float("nan"))
    for causal in (False, True):
        got, lse = _run(q, k_cache, v_cache, table, cu_q, cu_k, causal)
        assert torch.isfinite(got).all()
        assert_each_sequence_close(q, k, v, cu_q, cu_k, got, lse, causal)


def test_a_nan_in_a_sequences_own_keys_reaches_its_rows():
    # NaN in, NaN out: a NaN in sequence 0's first key (every row of it sees that key).
    q, k, v, cu_q, cu_k = packed_qkv(LENGTHS, 8, 8, 128, torch.bfloat16)
    k[0, :, 3] = float("nan")
    k_cache, v_cache, table = paged_cache(k, v, cu_k, 16)
    got, _ = _run(q, k_cache, v_cache, table, cu_q, cu_k, True)
    rows = slice(0, int(cu_q[1]))
    assert not torch.isfinite(got[rows]).all(dim=-1).any()
    assert torch.isfinite(got[int(cu_q[2]) :]).all()


# Short keys too (within 1024: planned on the persistent kernel, which would copy the pages row by
# row), causal and not; each sequence against the float64 reference.
SHORT_LENGTHS = [(300, 301), (129, 500), (0, 64), (77, 77), (1000, 1024)]


# The twin's K/V tile by head dim (the variant table's TMA-only tiles; 128 keys in both
# instances at 64 and 96).
TWIN_TILE = {64: 128, 96: 128, 128: 128, 192: 112, 256: 80}
# Causal calls over longer keys (where the wide instance may run), queries up to 2k.
LONG_LENGTHS = [(1000, 8192), (2047, 9000), (0, 8200), (1500, 8300)]


def twin_consumers(
    head_dim: int, lengths: list[tuple[int, int]], causal: bool, page_size: int
) -> int:
    """The consumer warpgroups of the twin a call over 8 heads should run on: split_plan.h's
    takes_paged_wide restated. Three (the wide instance: 192-row query blocks) at head_dim 64
    and 96 where that grid takes at most 4/5 of the waves (one CTA an SM) of the 128-row grid
    and, for causal calls, the keys reach 2048 and, at 96, the pages hold fewer than 64; else
    two."""
    rows, keys = max(q for q, _ in lengths), max(k for _, k in lengths)
    if head_dim not in (64, 96):
        return 2
    if causal and (keys < 2048 or (head_dim == 96 and page_size >= 64)):
        return 2
    sms = torch.cuda.get_device_properties(0).multi_processor_count

    def waves(block_m: int) -> int:
        return -(-(-(-rows // block_m) * len(lengths) * 8) // sms)

    return 3 if 5 * waves(192) <= 4 * waves(128) else 2


def twin_config(head_dim: int, lengths: list[tuple[int, int]], causal: bool, page_size: int) -> str:
    """The Sm90Config (a regular expression) of the twin instance a call over 8 heads should run
    on. Within 1024 keys a sequence (dispatch.cu's kPersistentMaxKeys) the twin's persistent
    instance (two consumers, a CTA an SM drawing the work tiles) where split_plan.h's
    takes_paged_persistent takes it: up to head_dim 192. Else the plain launch's
    (twin_consumers)."""
    if max(k for _, k in lengths) <= 1024 and head_dim <= 192:
        return rf"Sm90Config<{head_dim}, {TWIN_TILE[head_dim]}, \d+, true, true, 2,"
    consumers = twin_consumers(head_dim, lengths, causal, page_size)
    return rf"Sm90Config<{head_dim}, {TWIN_TILE[head_dim]}, \d+, false, true, {consumers},"


@pytest.mark.parametrize(
    "head_dim,lengths,causal,page_size",
    [(64, LENGTHS, False, 16), (96, LENGTHS, True, 16), (128, LENGTHS, False, 16)]
    + [(64, LENGTHS, True, 16), (96, LENGTHS, False, 16)]
    + [(192, LENGTHS, False, 16), (256, LENGTHS, True, 16)]
    # pages that the 112- and 80-key tiles cross: boxes of 16 rows
    + [(192, LENGTHS, True, 64), (256, LENGTHS, False, 32), (256, SHORT_LENGTHS, True, 256)]
    + [(d, SHORT_LENGTHS, c, 16) for d in (64, 96, 128, 192, 256) for c in (False, True)]
    # causal calls over long keys: the wide instance at 64 and 96, not at 96 over pages of 64
    + [(64, LONG_LENGTHS, True, 16), (96, LONG_LENGTHS, True, 16), (96, LONG_LENGTHS, True, 64)]
    # one sequence over 8 heads: a grid of under a wave takes the narrow instance, one of two
    # waves (one of 192-row blocks) the wide one
    + [(96, [(1536, 4096)], False, 16), (64, [(2048, 4096)], False, 16)]
    + [(96, [(3072, 4096)], False, 16)],
)
def test_the_paged_twin_runs(head_dim, lengths, causal, page_size):
    q, k, v, cu_q, cu_k = packed_qkv(lengths, 8, 8, head_dim, torch.bfloat16)
    k_cache, v_cache, table = paged_cache(k, v, cu_k, page_size)
    results = []
    names = hopper_kernels_launched(
        lambda: results.append(_run(q, k_cache, v_cache, table, cu_q, cu_k, causal))
    )
    assert len(names) == 1 and _is_paged_twin(names[0]), names
    assert re.search(twin_config(head_dim, lengths, causal, page_size), names[0]), names
    got, lse = results[0]
    assert_each_sequence_close(q, k, v, cu_q, cu_k, got, lse, causal)


# The grouped maps (tma_maps.cu: one TMA load a page's box, every column block of a head)
# take whole column blocks of heads back to back in a row. Head dims with zero-filled columns
# (80 on the 96 tiles, 160 and 224 on the 192 and 256 ones) and caches whose heads lie apart (a
# view of every other head) take the twin's other loads: a column block of 8 rows each.
WITHOUT_GROUPED_MAPS = [(80, False, True), (160, False, False), (224, False, True)]
WITHOUT_GROUPED_MAPS += [(128, True, False), (96, True, True)]  # heads apart
# One column block a row (64): blocked tiles, maps whose boxes are a page's rows; heads apart too.
WITHOUT_GROUPED_MAPS += [(64, True, True)]


@pytest.mark.parametrize("head_dim,heads_apart,causal", WITHOUT_GROUPED_MAPS)
def test_the_twin_without_grouped_maps(head_dim, heads_apart, causal):
    q, k, v, cu_q, cu_k = packed_qkv(LENGTHS, 8, 8, head_dim, torch.bfloat16)
    k_cache, v_cache, table = paged_cache(k, v, cu_k, 16)
    if heads_apart:  # the same cache, its heads every other one of twice as many
        k_cache, v_cache = (
            torch.stack([c, torch.full_like(c, float("nan"))], dim=3).flatten(2, 3)[:, :, ::2]
            for c in (k_cache, v_cache)
        )
        assert k_cache.stride(2) == 2 * head_dim
    results = []
    names = hopper_kernels_launched(
        lambda: results.append(_run(q, k_cache, v_cache, table, cu_q, cu_k, causal))
    )
    assert len(names) == 1 and _is_paged_twin(names[0]), names
    got, lse = results[0]
    assert_each_sequence_close(q, k, v, cu_q, cu_k, got, lse, causal)


@pytest.mark.parametrize(
    "head_dim,page_size,lengths",
    [
        (256, 24, LENGTHS),  # pages not a power of two: no shift and mask finds a key's page
        (192, 48, SHORT_LENGTHS),  # the same within 1024 keys
        (128, 4, LENGTHS),  # pages of fewer than 8 rows: a box would not fill a swizzle atom
        (128, 4, SHORT_LENGTHS),  # the same within 1024 keys: the persistent kernel's copies
    ],
)
def test_other_paged_calls_keep_the_copies(head_dim, page_size, lengths):
    q, k, v, cu_q, cu_k = packed_qkv(lengths, 8, 8, head_dim, torch.bfloat16)
    k_cache, v_cache, table = paged_cache(k, v, cu_k, page_size)
    names = []

    def call():
        names.append(_run(q, k_cache, v_cache, table, cu_q, cu_k, True))

    kernels = hopper_kernels_launched(call)
    assert not any(_is_paged_twin(name) for name in kernels), kernels
    got, lse = names[0]
    assert_each_sequence_close(q, k, v, cu_q, cu_k, got, lse, True)


@pytest.mark.parametrize("lengths", [SHORT_LENGTHS, LENGTHS], ids=["persistent", "plain"])
def test_a_chunk_of_one_signature_stays_right_when_kept_and_replayed_from_a_cuda_graph(lengths):
    # As an engine runs chunked prefill: without the device value checks
    # (FORGE_FLASH_CHECK_DEVICE_VALUES=0), so that a repeated call of one signature is kept and
    # skips validation and planning (api.flash_attn_varlen_fwd). New values in the same tensors
    # every step (new block ids too), then the call captured in a CUDA graph and replayed over
    # new values; each step against the float64 reference.
    gen = torch.Generator(device="cuda").manual_seed(7)
    q, k, v, cu_q, cu_k = packed_qkv(lengths, 8, 2, 128, torch.bfloat16)
    k_cache, v_cache, table = paged_cache(k, v, cu_k, 16)
    out = torch.empty_like(q)
    seq_q, seq_k = (cu_q[1:] - cu_q[:-1]).tolist(), (cu_k[1:] - cu_k[:-1]).tolist()

    def call():
        return forge_flash.flash_attn_varlen_fwd(
            q, k_cache, v_cache, cu_q, cu_k, max(seq_q), max(seq_k),
            causal=True, block_table=table, out=out, return_lse=True,
        )  # fmt: skip

    def new_values():
        for x in (q, k, v):
            x.copy_(torch.randn(x.shape, generator=gen, device="cuda"))
        for mine, new in zip((k_cache, v_cache, table), paged_cache(k, v, cu_k, 16), strict=True):
            mine.copy_(new)
        out.fill_(float("nan"))  # every row the call owns must be written

    with kernel_backend(), device_value_checks_off():
        for _ in range(3):
            new_values()
            got, lse = call()
            assert_each_sequence_close(q, k, v, cu_q, cu_k, got, lse, True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            got, lse = call()
        for _ in range(2):
            new_values()
            graph.replay()
            assert_each_sequence_close(q, k, v, cu_q, cu_k, got, lse, True)
