"""The CUDA kernels against a float64 reference, through the public API.

Tolerance (issue 3): our max error is at most 2x that of PyTorch's own attention on the
same 16-bit inputs, plus 1e-5, and never above 1e-2.
"""

from __future__ import annotations

import math

import pytest
import torch

import forge_flash

from helpers.kernels import (
    assert_close_to_reference,
    assert_each_sequence_close,
    assert_runs_on_kernels,
    hopper_kernels_launched,
    kernel_backend,
    packed_qkv,
    rand_qkv,
    reference_attention,
    split_workspace_bytes,
    torch_attention,
    workspace_bytes_needed,
)

DTYPES = [torch.float16, torch.bfloat16]


def _check(q, k, v, causal, *, scale=None, out=None):
    with kernel_backend():
        got, lse = forge_flash.flash_attn_fwd(
            q, k, v, softmax_scale=scale, causal=causal, out=out, return_lse=True
        )
    ref, ref_lse = reference_attention(q, k, v, causal=causal, scale=scale)
    assert_close_to_reference(got, ref, torch_attention(q, k, v, causal=causal, scale=scale))
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite), "rows that see no key must have LSE -inf"
    torch.testing.assert_close(lse[finite], ref_lse[finite].float(), atol=2e-3, rtol=1e-3)
    return got


# The design note's matrix: seq_len 1, 32, 128, 2048; head_dim 64, 128; GQA 32/8.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("seqlen", [1, 32, 128, 2048])
def test_design_note_matrix(seqlen, head_dim, causal, dtype):
    q, k, v = rand_qkv(2, seqlen, seqlen, 32, 8, head_dim, dtype)
    _check(q, k, v, causal)


# seqlen_q != seqlen_k both ways and odd lengths: bottom-right causal alignment, tails.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "seqlen_q,seqlen_k",
    [(113, 1023), (1023, 113), (1, 2048), (128, 2048), (2048, 128), (7, 7), (300, 1)],
)
@pytest.mark.parametrize("heads", [(32, 8), (8, 1), (6, 6)])
def test_uneven_lengths(seqlen_q, seqlen_k, heads, causal, dtype):
    q, k, v = rand_qkv(2, seqlen_q, seqlen_k, heads[0], heads[1], 64, dtype)
    _check(q, k, v, causal)


# Decode tiles divide a CTA's keys over its warps: fewer K/V tiles than warps (warps that see
# no key), tails, causal tiles of several queries times a GQA group (up to 16 rows), one CTA
# per tile and split-KV.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "seqlen_q,seqlen_k", [(1, 1), (1, 65), (1, 200), (4, 4), (4, 259), (2, 1500), (1, 5000)]
)
@pytest.mark.parametrize("batch", [1, 64])
def test_decode_tiles(batch, seqlen_q, seqlen_k, causal, dtype):
    _check(*rand_qkv(batch, seqlen_q, seqlen_k, 16, 4, 128, dtype), causal)


# Steps of several query tokens over a long cache (speculative decoding's verification of drafted
# tokens): 5-32 tokens times a GQA group of 4 are 20-128 rows a KV head, past a decode tile, so
# they run prefill-shaped with the group's heads packed into one query block's rows (plan_fwd):
# split over the keys where the grid is small (on Hopper the SM80 kernel: the Hopper kernel
# takes no split) and unsplit where it fills enough of the GPU (8 sequences: the Hopper kernel).
# The output starts as NaN, so every element must be written.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize(
    "batch,seqlen_q,seqlen_k",
    [(1, 5, 4096), (1, 8, 20000), (2, 16, 3001), (8, 8, 9000), (1, 32, 5000)],
)
def test_multi_token_steps_over_long_keys(batch, seqlen_q, seqlen_k, head_dim, causal, dtype):
    q, k, v = rand_qkv(batch, seqlen_q, seqlen_k, 32, 8, head_dim, dtype)
    out = torch.full_like(q, float("nan"))
    with assert_runs_on_kernels():
        _check(q, k, v, causal, out=out)
    assert not torch.isnan(out).any(), "every output element must be written"


# Short K/V with many query blocks: on Hopper the persistent kernel, each CTA walking several
# work tiles (8 * 16 * 8 = 1024 tiles over about 132 CTAs); 1025 keys is the first length past
# its limit (the per-tile kernel).
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("seqlen,heads", [(1000, (16, 16)), (1024, (16, 4)), (1025, (16, 16))])
def test_short_kv_many_query_blocks(seqlen, heads, head_dim, causal, dtype):
    q, k, v = rand_qkv(8, seqlen, seqlen, heads[0], heads[1], head_dim, dtype)
    _check(q, k, v, causal)


# Every instantiated head_dim plus routed ones (8, 40, 200 run in larger tiles).
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [8, 32, 40, 64, 96, 128, 160, 192, 200, 224, 256])
@pytest.mark.parametrize("seqlen_q,seqlen_k", [(1, 777), (77, 300), (257, 257)])
def test_head_dims(seqlen_q, seqlen_k, head_dim, causal, dtype):
    q, k, v = rand_qkv(2, seqlen_q, seqlen_k, 8, 2, head_dim, dtype)
    _check(q, k, v, causal)


# The Hopper wgmma kernel's own tiles beyond head_dim 64/128: 96 (64-byte swizzle, 3 of the 4
# producer warps copy), 192 and 256 (K/V tiles of 112 and 80 keys in 2 stages with separate K
# and V barriers; 64 keys in the persistent variant at 256). Up to 1024 keys the persistent
# variant (each CTA walks several work tiles: 1000 and 1024 keys, and 333 keys under 2047
# queries), beyond a CTA per tile (1025, 2047 keys, many barrier phases); odd lengths leave
# partial K/V tiles and query blocks; seqlen_q != seqlen_k moves the causal diagonal (and with
# seqlen_q > seqlen_k leaves rows that see no key); GQA and not. Other GPUs run these shapes on
# the SM80 kernel, against the same reference. Head_dim 64 and 128 too. The persistent kernel
# at 96 alternates two Q buffers: here work tiles whose rows see no key (and get no Q) fall
# between those that do. With 100 keys every work tile is a single K/V tile: each tile's
# first turn follows another tile's epilogue.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [64, 96, 128, 192, 256])
@pytest.mark.parametrize(
    "batch,seqlen_q,seqlen_k,heads",
    [
        (4, 1000, 1000, (16, 16)),
        (2, 1024, 1024, (16, 4)),
        (2, 1025, 1025, (8, 8)),
        (1, 333, 2047, (8, 2)),
        (2, 2047, 333, (4, 4)),
        (3, 129, 77, (6, 3)),
        (2, 1500, 100, (8, 8)),
    ],
)
def test_hopper_head_dims(batch, seqlen_q, seqlen_k, heads, head_dim, causal, dtype):
    q, k, v = rand_qkv(batch, seqlen_q, seqlen_k, *heads, head_dim, dtype)
    out = torch.full_like(q, float("nan"))
    _check(q, k, v, causal, out=out)
    assert not torch.isnan(out).any(), "every output element must be written"


# Head_dim 96 over more keys than the persistent kernel takes, dense Q/K/V: on Hopper a
# non-causal call runs the TMA-only instance of its own (3 consumer warpgroups, 128-key tiles,
# P through shared memory: Sm90Tiles::kPFromSmem), a causal one the 2-consumer instance of
# 192-key tiles; routed head_dim 80 too. Grids of 860+ query blocks (a smaller one may split
# its keys on the SM80 kernel) over few queries each, so that the float64 reference stays near
# 1 GB. The instance by its name in torch's profiler (the
# template arguments of Sm90Config up to its ninth, kPFromSmem), the output against the float64
# reference on every GPU.
NON_CAUSAL_96 = "Sm90Config<96, 128, 2, false, true, 3, 1, 0, true,"
CAUSAL_96 = "Sm90Config<96, 192, 2, false, true, 2, 1, 0, false,"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "batch,seqlen_q,seqlen_k,heads,head_dim",
    [(8, 512, 1100, (28, 4), 96), (4, 1100, 1300, (24, 8), 96), (4, 1100, 1200, (28, 4), 80)],
)
def test_head_dim_96_non_causal_calls_run_their_own_hopper_instance(
    batch, seqlen_q, seqlen_k, heads, head_dim, causal, dtype
):
    q, k, v = rand_qkv(batch, seqlen_q, seqlen_k, *heads, head_dim, dtype)
    out = torch.full_like(q, float("nan"))
    names = hopper_kernels_launched(lambda: _check(q, k, v, causal, out=out))
    assert not torch.isnan(out).any(), "every output element must be written"
    if torch.cuda.get_device_capability() != (9, 0):
        return  # the SM80 kernel: the output check above is the test
    assert len(names) == 1, names
    assert (CAUSAL_96 if causal else NON_CAUSAL_96) in names[0], names[0]


# Head dims between those: Hopper runs them on the next kernel up (72-88 on 96, 136-184 on
# 192, 200-248 on 256) with the extra columns zero-filled and never stored; 64 and 128 take
# only their own head_dim (40 and 112 stay on the SM80 kernel there).
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [40, 72, 80, 112, 136, 160, 200, 224, 248])
@pytest.mark.parametrize(
    "batch,seqlen_q,seqlen_k,heads", [(2, 1000, 1000, (8, 2)), (1, 333, 2047, (8, 8))]
)
def test_hopper_padded_head_dims(batch, seqlen_q, seqlen_k, heads, head_dim, causal, dtype):
    q, k, v = rand_qkv(batch, seqlen_q, seqlen_k, *heads, head_dim, dtype)
    out = torch.full_like(q, float("nan"))
    _check(q, k, v, causal, out=out)
    assert not torch.isnan(out).any(), "every output element must be written"


# Which Hopper instance those head dims run on, by its name in torch's profiler (the first
# template argument of Sm90Config: its head_dim; none: the SM80 kernel). The 160 and 224 tables
# hold no Hopper instances of their own: dispatch takes those of 192 and 256
# (kernel_registry.h, sm90_head_dim). A grid that fills the GPU, so that no call splits its keys
# (split calls stay on the SM80 kernel); the output against the float64 reference on every GPU.
HOPPER_TILES_ABOVE = {40: None, 72: 96, 80: 96, 112: None, 136: 192, 160: 192, 224: 256, 248: 256}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", sorted(HOPPER_TILES_ABOVE))
def test_padded_head_dims_run_the_hopper_instance_above(head_dim, causal, dtype):
    q, k, v = rand_qkv(4, 1100, 1100, 16, 4, head_dim, dtype)
    out = torch.full_like(q, float("nan"))
    names = hopper_kernels_launched(lambda: _check(q, k, v, causal, out=out))
    assert not torch.isnan(out).any(), "every output element must be written"
    if torch.cuda.get_device_capability() != (9, 0):
        return  # the SM80 kernel: the output check above is the test
    tiles = HOPPER_TILES_ABOVE[head_dim]
    if tiles is None:
        assert names == [], names
    else:
        assert len(names) == 1 and f"Sm90Config<{tiles}," in names[0], names


# Small prefill grids: the SM80 kernel's grid (2-3 CTAs per SM) would split their keys, but on
# Hopper a grid that fills enough of the SMs runs unsplit on the Hopper kernel (split_plan.h,
# hopper_prefill_unsplit): a quarter of them over at most 1024 keys, 0.45 over more (0.6 at
# head_dim 64, whose TMA-only query blocks hold 192 rows). One sequence over 8 heads: 1k-2k
# tokens, or 768 / 1024 queries over 4096 keys (48 / 64 CTAs of 128 rows); 512 tokens (32 CTAs)
# and 768 queries over 4096 keys stay split on the SM80 kernel. Which kernel ran, by torch's
# profiler and the split workspace; the output against the float64 reference on every GPU.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "seqlen_q,seqlen_k,head_dim,unsplit",
    [
        (2048, 2048, 128, True),
        (2048, 2048, 64, True),
        (1024, 1024, 128, True),
        (512, 512, 128, False),
        (1024, 4096, 128, True),
        (768, 4096, 128, False),
        (1024, 4096, 64, False),
    ],
)
def test_small_prefill_grids_run_unsplit_on_hopper(
    seqlen_q, seqlen_k, head_dim, unsplit, causal, dtype
):
    q, k, v = rand_qkv(1, seqlen_q, seqlen_k, 8, 8, head_dim, dtype)
    out = torch.full_like(q, float("nan"))
    names = hopper_kernels_launched(lambda: _check(q, k, v, causal, out=out))
    assert not torch.isnan(out).any(), "every output element must be written"
    props = torch.cuda.get_device_properties(0)
    if (props.major, props.minor) != (9, 0) or props.multi_processor_count <= 128:
        return  # the SM80 kernel (or a smaller Hopper part): the output check above is the test
    workspace = workspace_bytes_needed(q, k, v, causal=causal)
    if unsplit:
        assert workspace == 0 and len(names) == 1, (workspace, names)
    else:
        assert workspace > 0 and names == [], (workspace, names)


# Paged K/V over longer keys (chunked prefill over a paged cache) stay split on the SM80 kernel
# longer than dense K/V (split_plan.h, hopper_unsplit_fill): below 0.7 of the SMs where the
# unsplit grid would copy the rows (the IndexedKV instance: pages of 12, no power of two), below
# 0.3 at head_dim 128 and 0.5 at 96 where the PagedKV twin loads the pages through maps (pages
# of 16). One sequence over 8 heads, 256-1536 queries over about 4k keys at random block ids
# (16-96 CTAs of 128 rows), through flash_attn_varlen_fwd with a block table; the output
# against the float64 reference.
@pytest.mark.parametrize(
    "seqlen_q,page,head_dim,unsplit",
    [
        (256, 16, 128, False),
        (768, 16, 128, True),
        (1024, 16, 96, False),
        (1280, 16, 96, True),
        (1024, 12, 128, False),
        (1536, 12, 128, True),
    ],
)
def test_small_paged_prefill_grids_stay_split_longer(seqlen_q, page, head_dim, unsplit):
    seqlen_k, heads = 4096 // page * page, 8
    q, k, v = rand_qkv(1, seqlen_q, seqlen_k, heads, heads, head_dim, torch.bfloat16)
    blocks = seqlen_k // page
    table = torch.randperm(blocks, device="cuda").to(torch.int32).view(1, blocks)

    def cache_of(x):
        cache = torch.empty(blocks, page, heads, head_dim, dtype=x.dtype, device=x.device)
        cache[table.flatten().long()] = x[0].reshape(blocks, page, heads, head_dim)
        return cache

    k_cache, v_cache = cache_of(k), cache_of(v)
    cu_q = torch.tensor([0, seqlen_q], dtype=torch.int32, device="cuda")
    cu_k = torch.tensor([0, seqlen_k], dtype=torch.int32, device="cuda")
    got = []

    def call():
        with kernel_backend():
            got.append(
                forge_flash.flash_attn_varlen_fwd(
                    q[0], k_cache, v_cache, cu_q, cu_k, seqlen_q, seqlen_k, block_table=table
                )
            )

    names = hopper_kernels_launched(call)
    ref, _ = reference_attention(q, k, v, causal=False)
    assert_close_to_reference(got[0].unsqueeze(0), ref, torch_attention(q, k, v, causal=False))
    props = torch.cuda.get_device_properties(0)
    if (props.major, props.minor) != (9, 0) or props.multi_processor_count <= 128:
        return  # the SM80 kernel (or a smaller Hopper part): the output check above is the test
    assert (len(names) == 1) == unsplit, names


# Causal calls on the persistent kernel whose K/V fit in half the L2 and that have more work
# tiles than CTAs take their tiles by query block height in snake order (cta_work,
# tile_order.h; split_plan.h, orders_causal_tiles_by_height): one prompt of 1k tokens over 32
# heads, batches of odd lengths, GQA, queries shorter and longer than keys (rows that see no
# key), every Hopper head dim the persistent kernel serves. Every output row written, each
# against the float64 reference.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "batch,seqlen_q,seqlen_k,heads,head_dim",
    [
        (1, 1024, 1024, (32, 32), 128),
        (1, 1024, 1024, (32, 8), 64),
        (4, 1000, 1000, (8, 2), 128),
        (3, 1000, 1000, (21, 7), 96),
        (2, 700, 333, (16, 4), 64),
        (2, 300, 1000, (24, 8), 192),
    ],
)
def test_persistent_causal_tiles_by_height(batch, seqlen_q, seqlen_k, heads, head_dim, dtype):
    q, k, v = rand_qkv(batch, seqlen_q, seqlen_k, *heads, head_dim, dtype)
    out = torch.full_like(q, float("nan"))
    _check(q, k, v, True, out=out)
    assert not torch.isnan(out).any(), "every output element must be written"


@pytest.mark.parametrize("scale", [0.05, 1.0])
def test_softmax_scale(scale):
    q, k, v = rand_qkv(2, 100, 200, 4, 4, 64, torch.bfloat16)
    _check(q, k, v, True, scale=scale)


def test_large_logits_do_not_overflow():
    q, k, v = rand_qkv(1, 64, 256, 4, 4, 128, torch.float16)
    _check(q * 8, k * 8, v, False)


@pytest.mark.parametrize("causal", [False, True])
def test_split_kv_on_and_off_agree(causal):
    # One long sequence splits its KV range; a batch of 256 copies of it fills the GPU without
    # splitting. The single one must match the reference, and every batch row must match it.
    single = rand_qkv(1, 1, 8192, 32, 8, 128, torch.bfloat16)
    # Split partials go to a workspace for the combine kernel, except on Hopper, where they
    # merge inside a thread-block cluster.
    if torch.cuda.get_device_capability()[0] != 9:
        assert workspace_bytes_needed(*single, causal=causal) > 0, "expected a split-KV plan"
    q, k, v = (x.expand(256, *x.shape[1:]).contiguous() for x in single)
    assert workspace_bytes_needed(q, k, v, causal=causal) == 0, "expected a single pass"
    got_split = _check(*single, causal)
    with kernel_backend():
        got_full = forge_flash.flash_attn_fwd(q, k, v, causal=causal)
    # Different summation orders: each is within the bar of the reference, so of each other.
    torch.testing.assert_close(got_full, got_split.expand_as(got_full), atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [32, 40, 64, 128, 256])
@pytest.mark.parametrize("heads", [(32, 8), (8, 8)])
@pytest.mark.parametrize("seqlen_k", [300, 1000, 4096, 16384, 65536])
def test_decode_split_kv(seqlen_k, heads, head_dim, dtype):
    # One query over a cache splits its KV range over CTAs, and each CTA's range over its
    # warps. On Hopper the splits of a tile merge inside their thread-block cluster while they
    # fit one (at most 4 splits, or 16 of at most 512 keys each at one CTA per SM), and in the
    # combine kernel beyond; elsewhere always in the combine kernel.
    _check(*rand_qkv(1, 1, seqlen_k, *heads, head_dim, dtype), False)


def test_hopper_decode_merges_splits_without_workspace():
    if torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("the in-cluster combine is Hopper-only")
    # One sequence of 8 KV heads over 4k keys: 16 splits of 256 keys, one CTA per SM.
    short = rand_qkv(1, 1, 4096, 32, 8, 128, torch.bfloat16)
    assert workspace_bytes_needed(*short, causal=False) == 0, "expected the in-cluster combine"
    # From 8k keys one or two sequences split 8-warp CTAs to one per SM, merged by the combine
    # kernel (split_plan.h, kWideMinKeys); at 16k keys 16 splits would hold 1024 keys each (more
    # than 512). One KV head wants far more than 16 splits.
    for keys in (8192, 16384):
        long = rand_qkv(1, 1, keys, 32, 8, 128, torch.bfloat16)
        assert workspace_bytes_needed(*long, causal=False) > 0, "expected the combine kernel"
    for keys in (32768, 131072):
        long = rand_qkv(1, 1, keys, 8, 1, 128, torch.bfloat16)
        assert workspace_bytes_needed(*long, causal=False) > 0, "expected the combine kernel"


def test_hopper_decode_clusters_only_in_one_wave():
    # 34 sequences x 8 KV heads: 272 tiles (two per SM of an H100/H200 or more) of 4 splits
    # each, more clusters than the GPU holds at once, so the splits merge in the combine kernel;
    # the answer is the same either way.
    if torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("the in-cluster combine is Hopper-only")
    many = rand_qkv(34, 1, 1024, 32, 8, 128, torch.bfloat16)
    assert workspace_bytes_needed(*many, causal=False) > 0, "expected the combine kernel"
    _check(*many, False)
    few = rand_qkv(2, 1, 1024, 32, 8, 128, torch.bfloat16)
    assert workspace_bytes_needed(*few, causal=False) == 0, "expected the in-cluster combine"
    _check(*few, False)


def test_hopper_decode_splits_a_short_last_wave():
    """Hopper decode grids larger than the GPU holds at once (three 4-warp decode CTAs per SM at
    head_dim 128) split each tile's keys 4 ways where the last of up to four waves is at most
    70% full and the cache holds at least 8192 keys (split_plan.h, hopper_full_grid_splits): the
    plan's workspace is that of 4 splits and the answer matches the reference. A fuller last
    wave, a fifth wave, or a cache of 4096 keys keeps one pass; and 1.3 waves run as one of
    3-warp CTAs (four per SM: DecodeFullGridConfig, which fills its waves better there), also
    in one pass."""
    if torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("the rule is Hopper's")
    capacity = 3 * torch.cuda.get_device_properties(0).multi_processor_count

    def batch_for(waves):  # sequences of 8 heads: one CTA per (sequence, head)
        return math.ceil(waves * capacity / 8)

    short_tail = batch_for(1.5)
    q, k, v = rand_qkv(short_tail, 1, 8192, 8, 8, 128, torch.bfloat16)
    assert workspace_bytes_needed(q, k, v, causal=False) == split_workspace_bytes(short_tail * 8, 4)
    _check(q, k, v, False)
    del q, k, v
    # A fourth wave 30% full splits; a 90% full second one, a fifth wave, or 1.3 waves (one of
    # 3-warp CTAs) keeps one pass.
    for waves, splits in ((3.3, 4), (1.9, 1), (4.3, 1), (1.3, 1)):
        grid = rand_qkv(batch_for(waves), 1, 8192, 8, 8, 128, torch.bfloat16)
        expected = split_workspace_bytes(batch_for(waves) * 8, splits) if splits > 1 else 0
        assert workspace_bytes_needed(*grid, causal=False) == expected, f"{waves} waves"
        del grid
    short_cache = rand_qkv(short_tail, 1, 4096, 8, 8, 128, torch.bfloat16)
    assert workspace_bytes_needed(*short_cache, causal=False) == 0, "4096 keys: one pass"


# Hopper: in-cluster combine, either; combine kernel.
@pytest.mark.parametrize("seqlen_k,heads", [(4096, (32, 8)), (131072, (32, 8)), (131072, (8, 1))])
def test_split_kv_is_deterministic(seqlen_k, heads):
    q, k, v = rand_qkv(1, 1, seqlen_k, *heads, 128, torch.bfloat16)
    with kernel_backend():
        first = forge_flash.flash_attn_fwd(q, k, v)
        second = forge_flash.flash_attn_fwd(q, k, v)
    assert torch.equal(first, second)


def test_strided_views_from_packed_qkv():
    b, s, h, hk, d = 2, 333, 16, 4, 128
    qkv = torch.randn(b, s, (h + 2 * hk) * d, device="cuda", dtype=torch.float16)
    q = qkv[..., : h * d].view(b, s, h, d)
    k = qkv[..., h * d : (h + hk) * d].view(b, s, hk, d)
    v = qkv[..., (h + hk) * d :].view(b, s, hk, d)
    assert not q.is_contiguous()
    before = qkv.clone()
    out_buf = torch.full((b, h, s, d), float("nan"), device="cuda", dtype=torch.float16)
    out = out_buf.transpose(1, 2)  # a strided out= view
    got = _check(q, k, v, True, out=out)
    assert got.data_ptr() == out.data_ptr()
    assert not torch.isnan(out_buf).any(), "every output element must be written"
    assert torch.equal(qkv, before), "inputs must not be modified"


def test_every_output_element_written():
    q, k, v = rand_qkv(3, 130, 70, 6, 3, 96, torch.bfloat16)
    out = torch.full_like(q, float("nan"))
    _check(q, k, v, True, out=out)
    assert not torch.isnan(out).any()


def test_non_default_stream():
    q, k, v = rand_qkv(2, 512, 512, 8, 8, 64, torch.float16)
    ref = torch_attention(q, k, v, causal=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), kernel_backend():
        got = forge_flash.flash_attn_fwd(q, k, v, causal=True)
    torch.cuda.current_stream().wait_stream(side)
    torch.testing.assert_close(got, ref, atol=1e-2, rtol=0)


def test_cuda_graph_capture_and_replay():
    shape = dict(batch=4, seqlen_q=1, seqlen_k=4096, heads=32, heads_k=8, head_dim=128)
    q, k, v = rand_qkv(shape["batch"], 1, 4096, 32, 8, 128, torch.bfloat16)
    with kernel_backend():
        forge_flash.flash_attn_fwd(q, k, v)  # warm up: plan caches, allocator
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = forge_flash.flash_attn_fwd(q, k, v)
    for _ in range(2):
        fresh = rand_qkv(shape["batch"], 1, 4096, 32, 8, 128, torch.bfloat16)
        for dst, src in zip((q, k, v), fresh, strict=True):
            dst.copy_(src)
        graph.replay()
        ref, _ = reference_attention(q, k, v, causal=False)
        assert_close_to_reference(out, ref, torch_attention(q, k, v, causal=False))


# The last case: 40 short sequences (some empty), so persistent CTAs walk tiles of different
# lengths and tiles with no rows.
_MANY_SHORT = [((i * 37) % 300 if i % 7 else 0, (i * 53) % 900 + (i % 3)) for i in range(40)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "lens", [[(5, 300), (0, 17), (130, 130), (1, 4000)], [(1, 9000)] * 3, _MANY_SHORT]
)
@pytest.mark.parametrize("d", [128, 96, 64, 256])
def test_varlen(d, lens, causal, dtype):
    q, k, v, cu_q, cu_k = packed_qkv(lens, 16, 4, d, dtype)
    max_q, max_k = max(a for a, _ in lens), max(b for _, b in lens)
    out = torch.full_like(q, float("nan"))
    with kernel_backend():
        got, lse = forge_flash.flash_attn_varlen_fwd(
            q, k, v, cu_q, cu_k, max_q, max_k, causal=causal, out=out, return_lse=True
        )
    assert not torch.isnan(out).any()
    assert_each_sequence_close(q, k, v, cu_q, cu_k, got, lse, causal)


@pytest.mark.parametrize("heads", [(32, 8), (8, 8), (16, 1)])
def test_batched_decode(heads):
    h, hk = heads
    b, cache_len, d = 5, 3000, 128
    q = torch.randn(b, h, d, device="cuda", dtype=torch.bfloat16)
    k_cache = torch.randn(b, cache_len, hk, d, device="cuda", dtype=torch.bfloat16)
    v_cache = torch.randn_like(k_cache)
    lens = torch.tensor([1, 3000, 0, 17, 2049], dtype=torch.int32, device="cuda")
    with kernel_backend():
        got, lse = forge_flash.batched_decode_attention(q, k_cache, v_cache, lens, return_lse=True)
    for i, n in enumerate(lens.tolist()):
        one = (q[i : i + 1, None], k_cache[i : i + 1, :n], v_cache[i : i + 1, :n])
        ref, ref_lse = reference_attention(*one, causal=False)
        assert_close_to_reference(got[i : i + 1, None], ref, torch_attention(*one, causal=False))
        if n == 0:
            assert torch.isneginf(lse[i]).all()
        else:
            torch.testing.assert_close(lse[i], ref_lse[0, :, 0].float(), atol=2e-3, rtol=1e-3)


def test_dispatch_naive_and_kernel_agree_with_float32_autocast():
    torch.manual_seed(1)
    b, s, h, hk, d = 2, 200, 8, 2, 64
    q = torch.randn(b, s, h * d, device="cuda")
    k = torch.randn(b, s, hk * d, device="cuda")
    v = torch.randn(b, s, hk * d, device="cuda")
    args = (q, k, v, h, hk, d, 1 / math.sqrt(d), True)
    with kernel_backend():
        fast = forge_flash.multi_head_attention(*args)
    with kernel_backend("naive"):
        slow = forge_flash.multi_head_attention(*args)
    assert fast.dtype == torch.float32 and fast.shape == q.shape
    torch.testing.assert_close(fast, slow, atol=5e-3, rtol=0)


def test_float32_autocast_keeps_large_values_finite():
    # q and v beyond float16's range (65504), logits of ordinary size: the kernel path must
    # not cast to float16 (inf), and a bfloat16 answer is accurate to its precision.
    b, s, h, d = 1, 64, 4, 64
    q = torch.randn(b, s, h * d, device="cuda") * 1e5
    k = torch.randn(b, s, h * d, device="cuda") * 1e-5
    v = torch.randn(b, s, h * d, device="cuda") * 1e5
    with kernel_backend():
        got = forge_flash.multi_head_attention(q, k, v, h, h, d, 1 / math.sqrt(d), False)
    assert torch.isfinite(got).all()
    ref, _ = reference_attention(
        q.view(b, s, h, d), k.view(b, s, h, d), v.view(b, s, h, d), causal=False
    )
    rel = (got.view(b, s, h, d).double() - ref).norm() / ref.norm()
    assert rel < 2e-2


# A head_dim that is not a multiple of 8 (FlashAttention-2 takes any up to 256) runs on the
# kernels on zero-padded copies: prefill, causal and not, GQA, and a decode step over a cache.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [36, 59, 111, 250])
def test_an_odd_head_dim_runs_on_the_kernels(head_dim, causal, dtype):
    q, k, v = rand_qkv(2, 300, 1500, 8, 2, head_dim, dtype)
    with assert_runs_on_kernels():
        _check(q, k, v, causal)
    lens = torch.tensor([1500, 777], dtype=torch.int32, device="cuda")
    with assert_runs_on_kernels():
        got = forge_flash.batched_decode_attention(q[:, 0], k, v, lens)
    for i, n in enumerate(lens.tolist()):
        one = (q[i : i + 1, :1], k[i : i + 1, :n], v[i : i + 1, :n])
        ref, _ = reference_attention(*one, causal=False)
        assert_close_to_reference(got[i : i + 1, None], ref, torch_attention(*one, causal=False))
