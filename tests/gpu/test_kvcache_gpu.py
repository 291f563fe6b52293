"""flash_attn_with_kvcache on the kernels: paged vs contiguous caches for every page-size class,
ragged lengths on page boundaries, the decode instance a paged step runs (PagedKV or IndexedKV),
append + rotary + cache_batch_idx + cache_leftpad against the float64 reference, the decode step
whose append runs inside the attention kernel (the caches bit for bit as the append kernel
writes them), out-of-range block ids refused, a decode step with append captured in a CUDA
graph, the steps the C API makes two launches (the append kernel, then a decode instance that
loads cached keys early, except over a contiguous cache where the append kernel would push a
one-wave decode grid into a second wave), and a decode loop with rotary over a contiguous cache
replayed from graphs against the adapter's calls.

Tolerance: issue 3's rule (helpers.kernels.assert_close_to_reference): at most twice PyTorch's
own error on the same 16-bit inputs (SDPA on each sequence's gathered keys), plus 1e-5.
Like the CPU whole-call tests, these skip while ``forge_flash.api.cache_attention`` is missing.
"""

from __future__ import annotations

import pytest
import torch

import forge_flash
from forge_flash.backends.cuda import CudaBackend

from helpers.kernels import (
    assert_close_to_reference,
    kernel_backend,
    rand_qkv,
    split_workspace_bytes,
    torch_attention,
    torch_variant_attention,
    workspace_bytes_needed,
)
from helpers.kvcache_reference import (
    cache_case,
    cache_slot,
    randn,
    random_block_table,
    reference_append,
    reference_cache_attention,
    reference_rotary,
    rotary_tables,
    sequence_keys,
)

HEADS, HEADS_K, HEAD_DIM = 8, 2, 128


def _index(values, device="cuda"):
    return None if values is None else torch.tensor(values, dtype=torch.int32, device=device)


def _torch_yardstick(q, k_cache, v_cache, key_ends, key_starts, *, causal, variants=None, **where):
    """PyTorch per sequence on the gathered 16-bit keys (SDPA, or its precision model for the
    score variants): the error yardstick."""
    outs = []
    for b, end in enumerate(key_ends):
        keys = sequence_keys(k_cache, b, key_starts[b], end, **where)
        values = sequence_keys(v_cache, b, key_starts[b], end, **where)
        if keys.shape[0] == 0:  # SDPA over no key: our convention is 0
            outs.append(torch.zeros_like(q[b : b + 1]))
        elif variants:
            one = {**variants}
            if one.get("alibi_slopes") is not None and one["alibi_slopes"].dim() == 2:
                one["alibi_slopes"] = one["alibi_slopes"][b : b + 1]
            pair = (keys[None], values[None])
            outs.append(torch_variant_attention(q[b : b + 1], *pair, causal=causal, **one))
        else:
            outs.append(torch_attention(q[b : b + 1], keys[None], values[None], causal=causal))
    return torch.cat(outs)


def _check(out, lse, q, k_cache, v_cache, key_ends, key_starts, *, causal, variants=None, **where):
    """out/lse of a call against the float64 reference (computed on the CPU copies)."""
    variants = variants or {}
    cpu_variants = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in variants.items()}
    expected_out, expected_lse = reference_cache_attention(
        q.cpu(), k_cache.cpu(), v_cache.cpu(), key_ends, key_starts=key_starts, causal=causal,
        **where, **cpu_variants,
    )  # fmt: skip
    yardstick = _torch_yardstick(
        q, k_cache, v_cache, key_ends, key_starts, causal=causal, variants=variants, **where
    )
    assert_close_to_reference(out.cpu(), expected_out, yardstick.cpu())
    finite = torch.isfinite(expected_lse)
    assert torch.equal(torch.isfinite(lse.cpu()), finite), "rows that see no key: LSE -inf"
    torch.testing.assert_close(
        lse.cpu()[finite], expected_lse[finite].float(), atol=2e-3, rtol=1e-3
    )


PAGE_SIZES = [1, 7, 16, 64, 128, 256]


@pytest.mark.parametrize("seqlen_q", [1, 4], ids=["decode", "chunked"])
@pytest.mark.parametrize("page_size", PAGE_SIZES)
def test_paged_equals_contiguous_on_the_kernels(page_size, seqlen_q):
    """The same sequences in a contiguous and a paged cache: lengths 0, one page, one page
    and a key, three pages less a key (every page-size class, ragged, on boundaries)."""
    gen = torch.Generator().manual_seed(page_size * 10 + seqlen_q)
    dtype = torch.float16 if seqlen_q == 1 else torch.bfloat16
    lengths = [0, page_size, page_size + 1, 3 * page_size - 1]
    batch = len(lengths)
    max_blocks = -(-max(lengths) // page_size) + 1
    capacity = max_blocks * page_size
    dense_k = randn(gen, batch, capacity, HEADS_K, HEAD_DIM, dtype=dtype)
    dense_v = randn(gen, batch, capacity, HEADS_K, HEAD_DIM, dtype=dtype)
    table = random_block_table(gen, batch, max_blocks, batch * max_blocks + 3)
    paged_k = randn(gen, batch * max_blocks + 3, page_size, HEADS_K, HEAD_DIM, dtype=dtype)
    paged_v = randn(gen, *paged_k.shape, dtype=dtype)
    for b in range(batch):  # the same logical content, block by block
        for column in range(max_blocks):
            rows = slice(column * page_size, (column + 1) * page_size)
            paged_k[table[b, column]] = dense_k[b, rows]
            paged_v[table[b, column]] = dense_v[b, rows]
    q = randn(gen, batch, seqlen_q, HEADS, HEAD_DIM, dtype=dtype).cuda()
    dense_k, dense_v, paged_k, paged_v = (x.cuda() for x in (dense_k, dense_v, paged_k, paged_v))
    seqlens = _index(lengths)
    with kernel_backend():
        dense = forge_flash.flash_attn_with_kvcache(
            q, dense_k, dense_v, cache_seqlens=seqlens, causal=True, return_softmax_lse=True
        )
        paged = forge_flash.flash_attn_with_kvcache(
            q, paged_k, paged_v, cache_seqlens=seqlens, block_table=table.cuda(), causal=True,
            return_softmax_lse=True,
        )  # fmt: skip
    starts = [0] * batch
    _check(*dense, q, dense_k, dense_v, lengths, starts, causal=True)
    _check(*paged, q, paged_k, paged_v, lengths, starts, causal=True, block_table=table.tolist())


def _variant_options(variant, gen):
    if variant == "window":
        return {"window_size": (300, 0)}
    if variant == "softcap":
        return {"softcap": 20.0}
    if variant == "alibi":
        return {"alibi_slopes": (torch.rand(HEADS, generator=gen) * 0.05).cuda()}
    if variant == "sinks":
        return {"sinks": (torch.randn(HEADS, generator=gen) * 2).cuda()}
    return {}


@pytest.mark.parametrize("variant", ["plain", "window", "softcap", "alibi", "sinks"])
@pytest.mark.parametrize("page_size", [1, 16, 64])
@pytest.mark.parametrize("head_dim", [64, 96, 128, 256])
def test_paged_decode_at_every_head_dim_with_each_variant(head_dim, page_size, variant):
    """Batched decode (GQA) over paged caches long enough to split their keys, at every head
    dim's decode tile (the paged copies' two ways: a lane's rows on one page, or a shuffle per
    row for pages of 1), with each score variant, against the float64 reference. Ragged
    lengths, one on a page boundary."""
    gen = torch.Generator().manual_seed(head_dim * 1000 + page_size * 10 + len(variant))
    dtype = torch.bfloat16
    lengths = [3 * 1024 + 5, 1, 2048, 700]
    batch = len(lengths)
    max_blocks = -(-max(lengths) // page_size) + 1
    num_blocks = batch * max_blocks + 2
    table = random_block_table(gen, batch, max_blocks, num_blocks)
    k_cache = randn(gen, num_blocks, page_size, HEADS_K, head_dim, dtype=dtype).cuda()
    v_cache = randn(gen, num_blocks, page_size, HEADS_K, head_dim, dtype=dtype).cuda()
    q = randn(gen, batch, 1, HEADS, head_dim, dtype=dtype).cuda()
    variants = _variant_options(variant, gen)
    with kernel_backend():
        out, lse = forge_flash.flash_attn_with_kvcache(
            q, k_cache, v_cache, cache_seqlens=_index(lengths), block_table=table.cuda(),
            causal=True, return_softmax_lse=True, **variants,
        )  # fmt: skip
    _check(
        out, lse, q, k_cache, v_cache, lengths, [0] * batch, causal=True, variants=variants,
        block_table=table.tolist(),
    )  # fmt: skip


def _with_kvcache_kernels(*args, **kwargs):
    """``flash_attn_with_kvcache(*args, **kwargs)`` on the kernels under torch's profiler: its
    result and the names of the GPU kernels it ran."""
    activities = [torch.profiler.ProfilerActivity.CUDA]
    with kernel_backend(), torch.profiler.profile(activities=activities) as profile:
        result = forge_flash.flash_attn_with_kvcache(*args, **kwargs)
        torch.cuda.synchronize()
    return result, [e.key for e in profile.key_averages()]


def _with_kvcache_on_one_decode_kernel(*args, **kwargs):
    """``flash_attn_with_kvcache(*args, **kwargs)`` on the kernels: its result and the name of
    the one decode kernel instance it ran (policies, CTA shape)."""
    result, names = _with_kvcache_kernels(*args, **kwargs)
    decode = [name for name in names if "decode_kernel" in name]
    assert len(decode) == 1, names
    return result, decode[0]


# The decode instance for paged caches whose pages hold each copying lane's rows whole (PagedKV,
# policies.h), as its name demangles; the other paged calls run IndexedKV.
WHOLE_PAGE_INSTANCE = "Policies<true, false, false, false, false, true>"


@pytest.mark.parametrize(
    "head_dim,page_size,leftpad,whole_pages",
    [
        (64, 4, False, False), (64, 8, False, True), (128, 8, False, False),
        (128, 12, False, False), (128, 16, False, True), (128, 16, True, False),
        (256, 16, False, True),
    ],
)  # fmt: skip
def test_paged_decode_runs_its_whole_page_instance_where_a_lanes_rows_fit_a_page(
    head_dim, page_size, leftpad, whole_pages
):
    """Power-of-two pages of at least a decode lane's rows (8 keys at head_dim 64, 16 at 128
    and 256) without left padding run the PagedKV instance, which compiles that copy alone;
    smaller or odd pages and left padding run IndexedKV. Either way the step matches the
    float64 reference: ragged lengths long enough to split, one ending on a page boundary, an
    empty one."""
    gen = torch.Generator().manual_seed(head_dim * 100 + page_size * 2 + leftpad)
    lengths = [2 * 1024 + 3, 4 * page_size, 0, 300]
    pads = [5, 0, 0, 17] if leftpad else [0] * len(lengths)
    batch = len(lengths)
    max_blocks = -(-max(lengths) // page_size) + 1
    num_blocks = batch * max_blocks + 2
    table = random_block_table(gen, batch, max_blocks, num_blocks)
    k_cache = randn(gen, num_blocks, page_size, HEADS_K, head_dim, dtype=torch.bfloat16).cuda()
    v_cache = randn(gen, num_blocks, page_size, HEADS_K, head_dim, dtype=torch.bfloat16).cuda()
    q = randn(gen, batch, 1, HEADS, head_dim, dtype=torch.bfloat16).cuda()
    (out, lse), name = _with_kvcache_on_one_decode_kernel(
        q, k_cache, v_cache, cache_seqlens=_index(lengths), block_table=table.cuda(),
        cache_leftpad=_index(pads) if leftpad else None, return_softmax_lse=True,
    )  # fmt: skip
    assert (WHOLE_PAGE_INSTANCE in name) == whole_pages, name
    _check(out, lse, q, k_cache, v_cache, lengths, pads, causal=False, block_table=table.tolist())


def _decode_cta_warps(head_dim: int, ctas: int, sms: int, row_pages: bool, keys: int) -> int:
    """The warps of the decode CTAs a Hopper grid of `ctas` plain-score CTAs over `keys` keys
    runs on (dispatch.cu, hopper_decode_shape), for the grids of the test below; `row_pages`: a
    paged step on the IndexedKV instance (pages of one key)."""
    if head_dim not in (64, 96, 128):
        return 4
    wide_per_sm = 2 if head_dim == 64 else 1  # 8-warp CTAs an SM holds (registers, shared memory)
    long_split = keys >= 8192 and ctas * 8 <= wide_per_sm * sms  # kWideMinKeys, kWideMinSplits
    more = wide_per_sm * 8 > 2 * 4 or 2 * ctas > sms or row_pages or long_split
    if ctas <= wide_per_sm * sms and more:
        return 8
    if 2 * ctas > sms and ctas <= 1.25 * sms and keys >= 4096:  # a short wave: 3 warps, split
        return 3
    return 3 if ctas >= 2 * sms else 4


@pytest.mark.parametrize("layout", ["contiguous", "cache-rows", "paged-16", "paged-1", "append"])
@pytest.mark.parametrize("head_dim", [32, 64, 96, 128, 256])
def test_hopper_decode_grids_run_the_cta_shape_that_fills_them(head_dim, layout):
    """Hopper decode grids (sequences x KV heads) run every plain-score decode instance
    (contiguous caches, cache rows, whole pages, pages of one key, the fused append) in the
    CTA shape that fills the GPU best, at head_dim 64, 96 and 128: 3 warps for grids of at least
    two CTAs per SM that fill their waves better with them (DecodeFullGridConfig: an SM holds 4
    where it holds 3 of 4 warps at 96 and 128, 5 where 4 at 64); 8 warps (DecodeWideConfig) for
    grids of one wave of those that hold more warps per SM than two 4-warp CTAs (head_dim 64),
    that need no split (more CTAs than half the SMs), that split caches of 8192 keys or more
    (batch 2: 9600 keys and none) or that look a block id up per key (pages of one key); 3
    warps split to fill a wave for grids past one wave of 8-warp CTAs and short of 1.25 CTAs
    per SM over 4096 keys or more (batch 18 at 96 and 128: clusters of 3 splits); 4 warps
    elsewhere (DecodeConfig), and always at head_dim 32 and 256. Each step against the
    float64 reference: ragged lengths (long ones in the smaller grids: every warp of a split
    walks several tiles), an empty sequence, the appended caches bit for bit."""
    if torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("the decode CTA shapes beside 4 warps are Hopper's")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    heads, heads_k = 32, 8
    tile_keys = 32 if head_dim <= 128 else 16
    one_wave = {64: 5, 96: 4, 128: 4}.get(head_dim, 4) * sms // heads_k  # of 3-warp CTAs
    grids = [(one_wave, 600), (sms // heads_k + 2, 4800), (sms // heads_k, 5000), (4, 5000)]
    grids.append((2, 9600))  # one long sequence: split 8-warp CTAs at 96 and 128 (kWideMinKeys)
    for batch, longest in grids:
        warps = _decode_cta_warps(head_dim, batch * heads_k, sms, layout == "paged-1", longest)
        gen = torch.Generator().manual_seed(head_dim + batch + len(layout))
        lengths = [(97 * b * longest // 600) % longest + 1 for b in range(batch)]
        lengths[1] = 0
        if batch == 2:
            lengths[0] = longest
        page = int(layout.split("-")[1]) if layout.startswith("paged") else 0
        rows = table = None
        if page:
            max_blocks = -(-max(lengths) // page)
            table = random_block_table(gen, batch, max_blocks, batch * max_blocks + 1)
            shape = (batch * max_blocks + 1, page, heads_k, head_dim)
        else:
            cache_rows = batch + (layout == "cache-rows")  # a spare row the call must not read
            shape = (cache_rows, max(lengths) + 1, heads_k, head_dim)
            if layout == "cache-rows":
                rows = torch.randperm(cache_rows, generator=gen)[:batch].tolist()
        k_cache = randn(gen, *shape, dtype=torch.bfloat16).cuda()
        v_cache = randn(gen, *shape, dtype=torch.bfloat16).cuda()
        q = randn(gen, batch, 1, heads, head_dim, dtype=torch.bfloat16).cuda()
        new = None
        if layout == "append":
            new = [randn(gen, batch, 1, heads_k, head_dim, dtype=torch.bfloat16) for _ in "kv"]
            caches = (k_cache.cpu(), v_cache.cpu())
            expected_k, expected_v, _ = reference_append(*caches, *new, lengths)
        (out, lse), name = _with_kvcache_on_one_decode_kernel(
            q, k_cache, v_cache, *([t.cuda() for t in new] if new else []),
            cache_seqlens=_index(lengths), cache_batch_idx=_index(rows),
            block_table=None if table is None else table.cuda(), return_softmax_lse=True,
        )  # fmt: skip
        assert f"DecodeTileConfig<{head_dim}, {tile_keys}, {warps}," in name, (batch, name)
        ends = lengths
        if new:
            bitwise = {"rtol": 0, "atol": 0, "equal_nan": True}
            torch.testing.assert_close(k_cache.cpu().double(), expected_k, **bitwise)
            torch.testing.assert_close(v_cache.cpu().double(), expected_v, **bitwise)
            ends = [n + 1 for n in lengths]
        where = {"cache_rows": rows} if rows else {}
        if table is not None:
            where["block_table"] = table.tolist()
        _check(out, lse, q, k_cache, v_cache, ends, [0] * batch, causal=False, **where)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "paged-7", "paged-16", "paged-256"])
def test_append_rotary_batch_idx_leftpad_on_the_kernels(layout, dtype):
    """One decode step (1 new token, rotary interleaved) for the paged layouts, three new
    tokens with GPT-NeoX rotary for the contiguous one."""
    gen = torch.Generator().manual_seed(len(layout))
    seqlen_new = 3 if layout == "contiguous" else 1
    interleaved = layout != "contiguous"
    case = cache_case(layout, dtype, seqlen_new, gen, heads_k=HEADS_K, head_dim=HEAD_DIM)
    batch = len(case.lengths)
    q = randn(gen, batch, seqlen_new, HEADS, HEAD_DIM, dtype=dtype)
    k = randn(gen, batch, seqlen_new, HEADS_K, HEAD_DIM, dtype=dtype)
    v = randn(gen, batch, seqlen_new, HEADS_K, HEAD_DIM, dtype=dtype)
    cos, sin = rotary_tables(gen, case.capacity, 64, dtype)  # rotary_dim 64 < head_dim
    k_cache, v_cache = case.k_cache.cuda(), case.v_cache.cuda()
    table = None if case.table is None else case.table.cuda()
    with kernel_backend():
        out, lse = forge_flash.flash_attn_with_kvcache(
            q.cuda(), k_cache, v_cache, k.cuda(), v.cuda(), rotary_cos=cos.cuda(),
            rotary_sin=sin.cuda(), cache_seqlens=_index(case.lengths),
            cache_batch_idx=_index(case.rows), cache_leftpad=_index(case.pads),
            block_table=table, causal=True, rotary_interleaved=interleaved,
            return_softmax_lse=True,
        )  # fmt: skip
    positions = [[n + i for i in range(seqlen_new)] for n in case.lengths]
    k_rotated = reference_rotary(k, cos, sin, positions, interleaved)
    expected_k, expected_v, written = reference_append(
        case.k_cache, case.v_cache, k, v, case.lengths, cache_rows=case.rows,
        block_table=case.table_rows, k_rotated=k_rotated,
    )  # fmt: skip
    torch.testing.assert_close(
        k_cache.cpu()[written].double(), expected_k[written], atol=2e-2, rtol=1e-2
    )
    bitwise = {"rtol": 0, "atol": 0, "equal_nan": True}
    torch.testing.assert_close(k_cache.cpu()[~written].double(), expected_k[~written], **bitwise)
    torch.testing.assert_close(v_cache.cpu().double(), expected_v, **bitwise)
    q_rotated = reference_rotary(q, cos, sin, positions, interleaved).to(dtype)
    _check(
        out, lse, q_rotated.cuda(), k_cache, v_cache, [n + seqlen_new for n in case.lengths],
        case.pads, causal=True, cache_rows=case.rows, block_table=case.table_rows,
    )  # fmt: skip


# Rotary tables of a decode step: none, or pairs (interleaved / GPT-NeoX halves) with tables of
# the cache's dtype, of another dtype, and column-strided (the fused append's angles come by
# vectors where the tables allow, else by one scalar path for every dtype: rotary.cuh).
ROTARY_STEPS = ["none", "interleaved", "neox", "interleaved-float32", "neox-float16-strided"]


def _step_tables(rotary, gen, rows, dtype):
    """cos, sin (rows, 32) on the GPU for a ROTARY_STEPS entry, or (None, None)."""
    if rotary == "none":
        return None, None
    _, *options = rotary.split("-")
    dtypes = {"float32": torch.float32, "float16": torch.float16}
    table_dtype = dtypes.get(options[0], dtype) if options else dtype
    cos, sin = rotary_tables(gen, rows, 64, table_dtype)
    if "strided" in options:  # the same angles, every other column of a wider GPU tensor
        return tuple(torch.stack([t, -t], -1).flatten(-2).cuda()[:, ::2] for t in (cos, sin))
    return cos.cuda(), sin.cuda()


@pytest.mark.parametrize("rotary", ROTARY_STEPS)
@pytest.mark.parametrize(
    "layout,seqlen_new",
    [(layout, n) for layout in ("contiguous", "paged-1", "paged-16", "paged-64") for n in (1, 3)]
    + [("paged-16", 8)],  # a contiguous case_cache holds at most 3 new keys
)
def test_decode_step_appends_inside_the_attention(layout, rotary, seqlen_new, monkeypatch):
    """A decode step whose 4 query heads per KV head and new tokens fit one decode tile (1 or
    3 tokens: 4 or 12 rows) is one call of ff_attn_fwd_append: the append inside the attention
    kernel, or (plain scores over a contiguous cache or whole pages, rotary over a contiguous
    cache) the append kernel and then the decode kernel, which loads the cached keys while the
    append runs (both launched by the C API); 8 tokens
    (32 rows) take the adapter's two calls. Either way the caches hold the bits the append
    kernel writes (the adapter's two calls on copies of the caches) and the output and LSE match
    the float64 reference over the rotated q and the new keys. Slots past each sequence hold
    NaN (cache_case): reading one would show."""
    dtype = torch.bfloat16
    gen = torch.Generator().manual_seed(seqlen_new * 7 + len(layout) + len(rotary))
    case = cache_case(layout, dtype, seqlen_new, gen, heads_k=HEADS_K, head_dim=HEAD_DIM)
    k_cache, v_cache = case.k_cache.clone(), case.v_cache.clone()
    page = int(layout.split("-")[1]) if case.table is not None else 0
    for b, pad in enumerate(case.pads):  # no left padding here: those slots become keys
        for t in range(pad):
            slot = cache_slot(b, t, case.rows, case.table_rows, page)
            k_cache[slot] = randn(gen, HEADS_K, HEAD_DIM, dtype=dtype)
            v_cache[slot] = randn(gen, HEADS_K, HEAD_DIM, dtype=dtype)
    batch = len(case.lengths)
    q = randn(gen, batch, seqlen_new, HEADS, HEAD_DIM, dtype=dtype).cuda()
    k = randn(gen, batch, seqlen_new, HEADS_K, HEAD_DIM, dtype=dtype).cuda()
    v = randn(gen, batch, seqlen_new, HEADS_K, HEAD_DIM, dtype=dtype).cuda()
    cos, sin = _step_tables(rotary, gen, case.capacity, dtype)
    interleaved = rotary.startswith("interleaved")
    table = None if case.table is None else case.table.cuda()

    def step(k_cache, v_cache):
        return forge_flash.flash_attn_with_kvcache(
            q, k_cache, v_cache, k, v, rotary_cos=cos, rotary_sin=sin,
            cache_seqlens=_index(case.lengths), cache_batch_idx=_index(case.rows),
            block_table=table, causal=True, rotary_interleaved=interleaved,
            return_softmax_lse=True,
        )  # fmt: skip

    appends = []
    append_kv = CudaBackend.append_kv
    monkeypatch.setattr(
        CudaBackend, "append_kv", lambda *a, **kw: appends.append(1) or append_kv(*a, **kw)
    )
    two_launch = (k_cache.cuda(), v_cache.cuda())
    fused = (k_cache.cuda(), v_cache.cuda())
    with kernel_backend():
        with monkeypatch.context() as unfused:
            unfused.setattr(CudaBackend, "attend_appending", lambda *a, **kw: None)
            step(*two_launch)
        assert appends == [1]
        out, lse = step(*fused)
    # The adapter's two calls: 8 tokens (32 rows, declined by the C API); the rest is one call.
    two = seqlen_new == 8
    assert appends == ([1, 1] if two else [1]), "the append kernel ran (or not) where it should not"
    bitwise = {"rtol": 0, "atol": 0, "equal_nan": True}
    torch.testing.assert_close(fused[0].cpu(), two_launch[0].cpu(), **bitwise)
    torch.testing.assert_close(fused[1].cpu(), two_launch[1].cpu(), **bitwise)
    positions = [[n + i for i in range(seqlen_new)] for n in case.lengths]
    q_rotated = q.cpu()
    if cos is not None:
        q_rotated = reference_rotary(q.cpu(), cos.cpu(), sin.cpu(), positions, interleaved).to(
            dtype
        )
    _check(
        out, lse, q_rotated.cuda(), fused[0], fused[1], [n + seqlen_new for n in case.lengths],
        [0] * batch, causal=True, cache_rows=case.rows, block_table=case.table_rows,
    )  # fmt: skip


def _decode_step_inputs(gen, paged, batch, capacity, dtype, page=16):
    """One decode step's inputs over caches of ``capacity`` keys per sequence: the k/v caches
    (CPU; contiguous, or in pages of ``page`` keys with a random block table, else table None),
    and q and one new key/value per sequence on the GPU."""
    if paged:
        blocks = capacity // page
        table = random_block_table(gen, batch, blocks, batch * blocks)
        k_cache = randn(gen, batch * blocks, page, HEADS_K, HEAD_DIM, dtype=dtype)
    else:
        k_cache = randn(gen, batch, capacity, HEADS_K, HEAD_DIM, dtype=dtype)
        table = None
    v_cache = randn(gen, *k_cache.shape, dtype=dtype)
    q = randn(gen, batch, 1, HEADS, HEAD_DIM, dtype=dtype).cuda()
    k = randn(gen, batch, 1, HEADS_K, HEAD_DIM, dtype=dtype).cuda()
    v = randn(gen, batch, 1, HEADS_K, HEAD_DIM, dtype=dtype).cuda()
    return k_cache, v_cache, table, q, k, v


def _one_call_step_inputs(gen, layout, lengths, capacity, rotary, dtype, variants=None):
    """A decode step with one new key per sequence over a cache of ``layout`` ("contiguous...",
    or "paged-<page size>"): the caches and block table (CPU; the table None where contiguous),
    q, the rotary tables (GPU), and flash_attn_with_kvcache's other arguments."""
    paged = layout.startswith("paged")
    page = int(layout.split("-")[1]) if paged else 16
    k_cache, v_cache, table, q, k, v = _decode_step_inputs(
        gen, paged, len(lengths), capacity, dtype, page
    )
    cos, sin = (x.cuda() for x in rotary_tables(gen, capacity, HEAD_DIM, dtype))
    kwargs = dict(
        k=k, v=v, rotary_cos=cos if rotary else None, rotary_sin=sin if rotary else None,
        cache_seqlens=_index(lengths), block_table=None if table is None else table.cuda(),
        causal=True, return_softmax_lse=True, **(variants or {}),
    )  # fmt: skip
    return k_cache, v_cache, table, q, cos, sin, kwargs


def _check_one_call_step(out, lse, q, cos, sin, caches, lengths, rotary, table, variants=None):
    """A decode step's out/lse (one new key per sequence, appended at ``lengths``) against the
    float64 reference over the caches it wrote and q rotated as the step rotates it."""
    q_rotated = q.cpu()
    if rotary:
        positions = [[n] for n in lengths]
        q_rotated = reference_rotary(q.cpu(), cos.cpu(), sin.cpu(), positions, True).to(q.dtype)
    _check(
        out, lse, q_rotated.cuda(), caches[0], caches[1], [n + 1 for n in lengths],
        [0] * len(lengths), causal=True, variants=variants,
        block_table=None if table is None else table.tolist(),
    )  # fmt: skip


@pytest.mark.parametrize("layout", ["contiguous", "contiguous-rotary", "paged-16", "paged-8"])
def test_a_one_call_step_over_a_long_cache_splits_its_keys(layout, monkeypatch):
    """Thousands of cached keys: the decode step splits its keys over CTAs (split-KV, merged in
    a cluster or by the combine kernel), and the new key lands in the last split's first tile,
    or (2048 + 1 keys) alone in the last tile. The one-call step (the C API's two launches,
    whose decode kernel loads every other warp's first tile before the append is done; over
    pages of 8 keys, too small for the whole-page instance at head_dim 128, the append fused
    into the decode kernel) writes the caches the append kernel writes and attends as the
    adapter's two calls do, against the float64 reference too."""
    gen = torch.Generator().manual_seed(23)
    lengths, capacity = [4000, 2048, 130], 4096
    rotary = layout != "contiguous"
    k_cache, v_cache, table, q, cos, sin, kwargs = _one_call_step_inputs(
        gen, layout, lengths, capacity, rotary, torch.bfloat16
    )

    def step(k_cache, v_cache):
        return forge_flash.flash_attn_with_kvcache(q, k_cache, v_cache, **kwargs)

    appends = []
    append_kv = CudaBackend.append_kv
    monkeypatch.setattr(
        CudaBackend, "append_kv", lambda *a, **kw: appends.append(1) or append_kv(*a, **kw)
    )
    two_launch, fused = (k_cache.cuda(), v_cache.cuda()), (k_cache.cuda(), v_cache.cuda())
    with kernel_backend():
        with monkeypatch.context() as unfused:
            unfused.setattr(CudaBackend, "attend_appending", lambda *a, **kw: None)
            expected_out, expected_lse = step(*two_launch)
        out, lse = step(*fused)
    assert appends == [1], "the fused step ran the append kernel"
    bitwise = {"rtol": 0, "atol": 0}
    torch.testing.assert_close(fused[0], two_launch[0], **bitwise)
    torch.testing.assert_close(fused[1], two_launch[1], **bitwise)
    torch.testing.assert_close(out, expected_out, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(lse, expected_lse, atol=1e-3, rtol=1e-4)
    _check_one_call_step(out, lse, q, cos, sin, fused, lengths, rotary, table)


@pytest.mark.parametrize(
    "layout,rotary,behind_the_append_kernel",
    [
        ("contiguous", False, True), ("contiguous", True, True), ("paged-16", False, True),
        ("paged-16", True, True), ("paged-8", False, False), ("paged-8", True, False),
        ("contiguous-softcap", False, False),
    ],
)  # fmt: skip
def test_a_step_appends_behind_the_append_kernel_where_its_attention_loads_early(
    layout, rotary, behind_the_append_kernel, monkeypatch
):
    """Where a decode step's attention instance loads cached keys before it waits for another
    grid (plain scores over a contiguous cache, or over pages the whole-page instance takes: 16
    keys and more at head_dim 128), ff_attn_fwd_append makes the step two launches, the append
    kernel and then that instance; elsewhere (pages of 8 keys, a softcap without rotary) the
    append runs inside the attention kernel. Either way the caches are the adapter's two calls'
    bit for bit and the output the float64 reference's, over two ragged sequences, one of whose
    new key starts a page."""
    gen = torch.Generator().manual_seed(43 + len(layout) + rotary)
    lengths, capacity = [1500, 64], 1536
    paged = layout.startswith("paged")
    page = int(layout.split("-")[1]) if paged else 16
    variants = {"softcap": 30.0} if layout.endswith("softcap") else {}
    k_cache, v_cache, table, q, cos, sin, kwargs = _one_call_step_inputs(
        gen, layout, lengths, capacity, rotary, torch.bfloat16, variants
    )

    adapter, one_call = (k_cache.cuda(), v_cache.cuda()), (k_cache.cuda(), v_cache.cuda())
    with kernel_backend(), monkeypatch.context() as unfused:
        unfused.setattr(CudaBackend, "attend_appending", lambda *a, **kw: None)
        forge_flash.flash_attn_with_kvcache(q, *adapter, **kwargs)
    (out, lse), names = _with_kvcache_kernels(q, *one_call, **kwargs)
    decode = [name for name in names if "decode_kernel" in name]
    assert len(decode) == 1, names
    assert any("append_kv_kernel" in name for name in names) == behind_the_append_kernel, names
    assert (WHOLE_PAGE_INSTANCE in decode[0]) == (paged and page >= 16), decode
    bitwise = {"rtol": 0, "atol": 0}
    torch.testing.assert_close(one_call[0], adapter[0], **bitwise)
    torch.testing.assert_close(one_call[1], adapter[1], **bitwise)
    _check_one_call_step(out, lse, q, cos, sin, one_call, lengths, rotary, table, variants)


@pytest.mark.parametrize(
    "layout,waves", [("contiguous", "one"), ("paged-16", "one"), ("contiguous", "two")]
)
def test_a_step_appends_inside_its_decode_launch_where_the_append_kernel_would_push_a_wave(
    layout, waves, monkeypatch
):
    """Ragged sequences over 2 KV heads of 128 on a Hopper GPU of S SMs, whose decode grids run
    on 3-warp CTAs, four per SM (tile_config.h). 2S - 4 sequences make 4S - 8 decode CTAs: one
    wave with 8 slots free, fewer than the append kernel's CTAs (one per 8 sequences), so over
    a contiguous cache the append runs inside the decode kernel's launch (the fused instance;
    dispatch.h, append_pushes_decode_wave), and over pages of 16 behind the append kernel. 4S
    sequences take two waves anyway, and keep the two launches. Lengths include a full cache
    (the new key its last row), an empty one and a page's last row. Either way the caches are
    the adapter's two calls' bit for bit and the output the float64 reference's."""
    if torch.cuda.get_device_capability()[0] != 9:
        pytest.skip("the 3-warp decode CTAs of this grid are Hopper's")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    gen = torch.Generator().manual_seed(71 + len(layout) + len(waves))
    batch, capacity = (2 * sms - 4 if waves == "one" else 4 * sms), 512
    lengths = torch.randint(1, capacity - 1, (batch,), generator=gen).tolist()
    lengths[:3] = [capacity - 1, 0, 15]
    k_cache, v_cache, table, q, cos, sin, kwargs = _one_call_step_inputs(
        gen, layout, lengths, capacity, False, torch.bfloat16
    )
    adapter, one_call = (k_cache.cuda(), v_cache.cuda()), (k_cache.cuda(), v_cache.cuda())
    with kernel_backend(), monkeypatch.context() as unfused:
        unfused.setattr(CudaBackend, "attend_appending", lambda *a, **kw: None)
        forge_flash.flash_attn_with_kvcache(q, *adapter, **kwargs)
    (out, lse), names = _with_kvcache_kernels(q, *one_call, **kwargs)
    assert sum("decode_kernel" in name for name in names) == 1, names
    fused = layout == "contiguous" and waves == "one"
    assert any("append_kv_kernel" in name for name in names) != fused, names
    bitwise = {"rtol": 0, "atol": 0}
    torch.testing.assert_close(one_call[0], adapter[0], **bitwise)
    torch.testing.assert_close(one_call[1], adapter[1], **bitwise)
    _check_one_call_step(out, lse, q, cos, sin, one_call, lengths, False, table)


@pytest.mark.parametrize("num_splits", [1, 3, 8, 1000])
@pytest.mark.parametrize("layout", ["contiguous", "paged-16"])
def test_num_splits_splits_the_keys_as_asked(layout, num_splits):
    """FlashAttention's num_splits on a decode step of 3 ragged sequences over 6000 keys (with
    and without an appended key): the answer is the float64 reference's for every count (1: no
    split; 1000: the kernels' most), and the step with the new key agrees with the step over
    the cache the append wrote."""
    dtype = torch.bfloat16
    gen = torch.Generator().manual_seed(31 + num_splits)
    lengths, capacity = [5999, 3000, 17], 6016
    batch = len(lengths)
    paged = layout != "contiguous"
    k_cache, v_cache, table, q, k, v = _decode_step_inputs(gen, paged, batch, capacity, dtype)
    table_gpu = None if table is None else table.cuda()
    caches = (k_cache.cuda(), v_cache.cuda())
    with kernel_backend():
        appended = forge_flash.flash_attn_with_kvcache(
            q, *caches, k, v, cache_seqlens=_index(lengths), block_table=table_gpu,
            causal=True, num_splits=num_splits, return_softmax_lse=True,
        )  # fmt: skip
        grown = [n + 1 for n in lengths]
        cached = forge_flash.flash_attn_with_kvcache(
            q, *caches, cache_seqlens=_index(grown), block_table=table_gpu, causal=True,
            num_splits=num_splits, return_softmax_lse=True,
        )  # fmt: skip
    where = {} if table is None else {"block_table": table.tolist()}
    for out, lse in (appended, cached):
        _check(out, lse, q, *caches, grown, [0] * batch, causal=True, **where)
    torch.testing.assert_close(appended[0], cached[0], atol=2e-3, rtol=2e-3)


def test_num_splits_sets_the_split_count():
    """The C API's num_splits as the plan sees it: a one-query decode of 16k keys over 8 KV
    heads takes n splits merged by the combine kernel (workspace: n partial rows of head_dim
    float32 and an LSE each, for 32 query rows) or none (1), capped at the kernels' 128."""
    q, k, v = rand_qkv(1, 1, 16384, 32, 8, 128, torch.bfloat16)

    assert workspace_bytes_needed(q, k, v, causal=False, num_splits=1) == 0
    for asked, splits in ((8, 8), (16, 16), (1000, 128)):
        expected = split_workspace_bytes(32, splits)  # 32 query rows
        assert workspace_bytes_needed(q, k, v, causal=False, num_splits=asked) == expected


def test_out_of_range_block_id_is_refused_before_any_write():
    gen = torch.Generator().manual_seed(9)
    k_cache = randn(gen, 6, 16, HEADS_K, HEAD_DIM, dtype=torch.float16).cuda()
    v_cache = torch.randn_like(k_cache)
    table = torch.tensor([[0, 1, 2], [3, 4, 6]], dtype=torch.int32, device="cuda")  # 6: no
    q = torch.randn(2, 1, HEADS, HEAD_DIM, dtype=torch.float16, device="cuda")
    k = torch.randn(2, 1, HEADS_K, HEAD_DIM, dtype=torch.float16, device="cuda")
    before = (k_cache.clone(), v_cache.clone())
    with kernel_backend(), pytest.raises(ValueError, match=r"^block_table ids must lie in"):
        forge_flash.flash_attn_with_kvcache(
            q, k_cache, v_cache, k, torch.randn_like(k), cache_seqlens=_index([5, 20]),
            block_table=table,
        )  # fmt: skip
    assert torch.equal(k_cache, before[0]) and torch.equal(v_cache, before[1])


def _captured(run, *args):
    """``run(*args)`` captured in a CUDA graph (nothing runs), after a warm-up call on a side
    stream as capture requires, made on copies of the tensors among ``args`` so that the caches
    and lengths the graph will advance are left as they were. Returns (graph, run's result)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run(*(x.clone() if isinstance(x, torch.Tensor) else x for x in args))
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        result = run(*args)
    return graph, result


def test_decode_step_with_append_replays_from_a_cuda_graph():
    """A decode step (rotary, append into a paged cache, attention, lengths advanced on the
    device) captured once and replayed: every replay matches the same step run eagerly on a
    copy of the caches, and the reference."""
    gen = torch.Generator().manual_seed(11)
    dtype, page_size, max_blocks, steps = torch.bfloat16, 16, 4, 5
    lengths = [5, 16, 31, 0]
    batch = len(lengths)
    table = random_block_table(gen, batch, max_blocks, batch * max_blocks).cuda()
    k_cache = randn(gen, batch * max_blocks, page_size, HEADS_K, HEAD_DIM, dtype=dtype).cuda()
    v_cache = torch.randn_like(k_cache)
    cos, sin = (x.cuda() for x in rotary_tables(gen, max_blocks * page_size, HEAD_DIM, dtype))
    seqlens = _index(lengths)
    q = torch.zeros(batch, 1, HEADS, HEAD_DIM, dtype=dtype, device="cuda")
    k = torch.zeros(batch, 1, HEADS_K, HEAD_DIM, dtype=dtype, device="cuda")
    v = torch.zeros_like(k)

    def step(q, k, v, k_cache, v_cache, seqlens):
        out = forge_flash.flash_attn_with_kvcache(
            q, k_cache, v_cache, k, v, rotary_cos=cos, rotary_sin=sin, cache_seqlens=seqlens,
            block_table=table, causal=True,
        )  # fmt: skip
        seqlens.add_(1)
        return out

    eager = (k_cache.clone(), v_cache.clone(), seqlens.clone())
    with kernel_backend():
        graph, graph_out = _captured(step, q, k, v, k_cache, v_cache, seqlens)
        for i in range(steps):
            new_q, new_k, new_v = (torch.randn_like(x) for x in (q, k, v))
            for static, new in ((q, new_q), (k, new_k), (v, new_v)):
                static.copy_(new)
            graph.replay()
            expected = step(new_q, new_k, new_v, *eager)
            torch.cuda.synchronize()
            assert torch.equal(seqlens, eager[2]), f"step {i}: lengths"
            assert torch.equal(k_cache, eager[0]) and torch.equal(v_cache, eager[1]), f"step {i}"
            torch.testing.assert_close(graph_out, expected, atol=1e-2, rtol=1e-2)
    assert seqlens.tolist() == [n + steps for n in lengths]
    # The last step against the reference: rotated q, keys as the caches hold them now.
    positions = [[n + steps - 1] for n in lengths]
    q_rotated = reference_rotary(q.cpu(), cos.cpu(), sin.cpu(), positions, True).to(dtype)
    expected_out, _ = reference_cache_attention(
        q_rotated, k_cache.cpu(), v_cache.cpu(), [n + steps for n in lengths],
        block_table=table.tolist(), causal=True,
    )  # fmt: skip
    yardstick = _torch_yardstick(
        q_rotated.cuda(), k_cache, v_cache, [n + steps for n in lengths], [0] * batch,
        causal=True, block_table=table.tolist(),
    )  # fmt: skip
    assert_close_to_reference(graph_out.cpu(), expected_out, yardstick.cpu())


def test_rotary_decode_loop_over_a_contiguous_cache_replays_from_a_cuda_graph(monkeypatch):
    """An engine's decode loop over a contiguous cache with rotary, two steps per CUDA graph:
    each step is the C API's two launches (the append kernel, then the decode kernel, which
    reads the lengths and the cached keys before the append kernel is done), then the lengths
    advanced on the device by a torch kernel, which the next step's append kernel follows.
    Every replay matches the adapter's two calls on copies of the caches (the attention there
    reads nothing before the append is done): the caches and lengths bit for bit, the outputs
    within rounding. A tile read before the append wrote it would hold the slot's old key."""
    gen = torch.Generator().manual_seed(12)
    dtype, capacity, replays = torch.bfloat16, 2048, 3
    lengths = [1500, 37, 1023, 0, 64]
    batch = len(lengths)
    k_cache = randn(gen, batch, capacity, HEADS_K, HEAD_DIM, dtype=dtype).cuda()
    v_cache = torch.randn_like(k_cache)
    cos, sin = (x.cuda() for x in rotary_tables(gen, capacity, HEAD_DIM, dtype))
    seqlens = _index(lengths)
    qs = [torch.zeros(batch, 1, HEADS, HEAD_DIM, dtype=dtype, device="cuda") for _ in range(2)]
    ks = [torch.zeros(batch, 1, HEADS_K, HEAD_DIM, dtype=dtype, device="cuda") for _ in range(2)]
    vs = [torch.zeros_like(k) for k in ks]

    def two_steps(k_cache, v_cache, seqlens):
        outs = []
        for q, k, v in zip(qs, ks, vs, strict=True):
            out = forge_flash.flash_attn_with_kvcache(
                q, k_cache, v_cache, k, v, rotary_cos=cos, rotary_sin=sin,
                cache_seqlens=seqlens, causal=True,
            )  # fmt: skip
            outs.append(out)
            seqlens.add_(1)
        return outs

    adapter_appends = []
    append_kv = CudaBackend.append_kv
    monkeypatch.setattr(
        CudaBackend, "append_kv", lambda *a, **kw: adapter_appends.append(1) or append_kv(*a, **kw)
    )
    eager = (k_cache.clone(), v_cache.clone(), seqlens.clone())
    with kernel_backend():
        graph, graph_outs = _captured(two_steps, k_cache, v_cache, seqlens)
        assert adapter_appends == [], "the steps are one C call each, not the adapter's two"
        for replay in range(replays):
            for x in (*qs, *ks, *vs):
                x.copy_(torch.randn_like(x))
            graph.replay()
            with monkeypatch.context() as unfused:
                unfused.setattr(CudaBackend, "attend_appending", lambda *a, **kw: None)
                expected = two_steps(*eager)
            torch.cuda.synchronize()
            assert torch.equal(seqlens, eager[2]), f"replay {replay}: lengths"
            assert torch.equal(k_cache, eager[0]), f"replay {replay}: k_cache"
            assert torch.equal(v_cache, eager[1]), f"replay {replay}: v_cache"
            for i, (got, want) in enumerate(zip(graph_outs, expected, strict=True)):
                torch.testing.assert_close(got, want, atol=2e-3, rtol=2e-3, msg=f"step {i}")
    assert seqlens.tolist() == [n + 2 * replays for n in lengths]
    # The last step against the float64 reference: rotated q, keys as the caches hold them now.
    ends = [n + 2 * replays for n in lengths]
    positions = [[n - 1] for n in ends]
    q_rotated = reference_rotary(qs[1].cpu(), cos.cpu(), sin.cpu(), positions, True).to(dtype)
    expected_out, _ = reference_cache_attention(
        q_rotated, k_cache.cpu(), v_cache.cpu(), ends, causal=True
    )
    yardstick = _torch_yardstick(q_rotated.cuda(), k_cache, v_cache, ends, [0] * batch, causal=True)
    assert_close_to_reference(graph_outs[1].cpu(), expected_out, yardstick.cpu())
