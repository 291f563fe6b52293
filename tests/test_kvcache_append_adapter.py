"""The fused K/V append of ``flash_attn_with_kvcache`` through the CUDA adapter, on CPU tensors.

The adapter (``CudaBackend.append_kv``) is pointed at CPU memory with a pointer-level fake of
the binding (``helpers.fake_plugin.FakeBinding.AppendKvCall``): the fake writes the caches, the
rotated queries and the new lengths through the pointers and strides it receives, so a wrong
pointer, stride, size or flag shows as a wrong cache or output against the float64 reference.
These tests also check which calls stay on the torch ops, that the attention after the
fused append is launched programmatically while every other call is not, and which decode steps
run as one call of the binding with the append inside the attention (``FwdCall.run_append``,
faked by ``FakeBinding.fwd_append`` with the C API's rules for declining).
"""

from __future__ import annotations

import pytest
import torch

import forge_flash

from helpers.fake_plugin import STREAM, CpuCudaBackend, FakeBinding
from helpers.kvcache_reference import (
    cache_case,
    randn,
    reference_append,
    reference_cache_attention,
    reference_rotary,
    rotary_tables,
)
from helpers.tolerance import assert_close_to_reference, assert_lse_close

HEADS, HEADS_K, HEAD_DIM = 4, 2, 32


@pytest.fixture
def binding(monkeypatch, fresh_discovery):
    fake = FakeBinding()
    monkeypatch.setattr("forge_flash.discovery._active", CpuCudaBackend(fake))
    return fake


def _index(values):
    return None if values is None else torch.tensor(values, dtype=torch.int32)


def _entries(binding, entry):
    return [c for c in binding.calls if c["entry"] == entry]


def _appends(binding):
    """The calls that carried an append: the append kernel's, or the fused step's."""
    return [c for c in binding.calls if c["entry"] in ("append_kv", "fwd_append")]


def _step(case, gen, dtype, *, seqlen_new=2, rotary_dim=16, interleaved=True, causal=True):
    """Inputs of one call on ``case`` (a helpers.kvcache_reference.cache_case)."""
    batch = len(case.lengths)
    q = randn(gen, batch, seqlen_new, HEADS, HEAD_DIM, dtype=dtype)
    k = randn(gen, batch, seqlen_new, HEADS_K, HEAD_DIM, dtype=dtype)
    v = randn(gen, batch, seqlen_new, HEADS_K, HEAD_DIM, dtype=dtype)
    tables = rotary_tables(gen, case.capacity, rotary_dim, dtype) if rotary_dim else (None, None)
    return q, k, v, tables


def _expected(case, q, k, v, tables, *, interleaved, causal):
    """Caches after the append, written mask and attention output, all from the references."""
    seqlen_new, dtype = k.shape[1], k.dtype
    new_positions = [[n + i for i in range(seqlen_new)] for n in case.lengths]
    k_rotated = q_rotated = None
    if tables[0] is not None:
        k_rotated = reference_rotary(k, *tables, new_positions, interleaved)
        q_positions = new_positions if causal else [[n] * seqlen_new for n in case.lengths]
        q_rotated = reference_rotary(q, *tables, q_positions, interleaved).to(dtype)
    expected_k, expected_v, written = reference_append(
        case.k_cache, case.v_cache, k, v, case.lengths, cache_rows=case.rows,
        block_table=case.table_rows, k_rotated=k_rotated,
    )  # fmt: skip
    out, lse = reference_cache_attention(
        q if q_rotated is None else q_rotated, expected_k.to(dtype), expected_v.to(dtype),
        [n + seqlen_new for n in case.lengths], key_starts=case.pads, cache_rows=case.rows,
        block_table=case.table_rows, causal=causal,
    )  # fmt: skip
    return expected_k, expected_v, written, out, lse


@pytest.mark.parametrize("rotary", ["none", "interleaved", "neox"])
@pytest.mark.parametrize("layout", ["contiguous", "paged-1", "paged-5", "paged-16"])
def test_fused_append_matches_the_reference(binding, layout, rotary, gen):
    dtype = torch.bfloat16 if layout == "paged-5" else torch.float16
    causal = rotary != "neox"  # queries per token (causal) and shared (not causal)
    interleaved = rotary == "interleaved"
    case = cache_case(layout, dtype, 2, gen, heads_k=HEADS_K, head_dim=HEAD_DIM)
    q, k, v, tables = _step(case, gen, dtype, rotary_dim=0 if rotary == "none" else 16)
    k_cache, v_cache = case.k_cache.clone(), case.v_cache.clone()
    before = [x.clone() for x in (q, k, v)]
    seqlens = _index(case.lengths)

    out, lse = forge_flash.flash_attn_with_kvcache(
        q, k_cache, v_cache, k, v, rotary_cos=tables[0], rotary_sin=tables[1],
        cache_seqlens=seqlens, cache_batch_idx=_index(case.rows),
        cache_leftpad=_index(case.pads), block_table=case.table, causal=causal,
        rotary_interleaved=interleaved, return_softmax_lse=True,
    )  # fmt: skip

    expected_k, expected_v, written, expected_out, expected_lse = _expected(
        case, q, k, v, tables, interleaved=interleaved, causal=causal
    )
    assert_close_to_reference(out, expected_out, dtype)
    assert_lse_close(lse, expected_lse)
    assert_close_to_reference(k_cache[written], expected_k[written], dtype, "appended keys")
    torch.testing.assert_close(k_cache[~written].double(), expected_k[~written], equal_nan=True)
    torch.testing.assert_close(v_cache.double(), expected_v, rtol=0, atol=0, equal_nan=True)
    for x, y in zip(before, (q, k, v), strict=True):
        assert torch.equal(x, y), "q, k and v must not be modified"

    (append,) = _entries(binding, "append_kv")
    (attention,) = _entries(binding, "fwd")
    assert append["programmatic"] is True and attention["options"][9] is True
    assert (append["k"], append["v"]) == (k.data_ptr(), v.data_ptr())
    assert (append["k_cache"], append["v_cache"]) == (k_cache.data_ptr(), v_cache.data_ptr())
    assert append["cache_seqlens"] == seqlens.data_ptr()
    # The attention reads the lengths and (with rotary) the queries the kernel wrote.
    assert attention["seqused_k"] == append["seqlens_out"]
    assert attention["q"] == (append["q_out"] if rotary != "none" else q.data_ptr())
    assert (append["q"] == q.data_ptr()) == (rotary != "none")
    assert (append["device"], append["stream"]) == (0, STREAM)
    rotary_dim, seqlen_ro, table_dtype, flag, per_token = append["rotary"]
    if rotary == "none":
        assert append["rotary"] == (0, 0, 0, 0, 0) and append["rotary_cos"] == 0
    else:
        assert (rotary_dim, seqlen_ro, flag, per_token) == (16, case.capacity, interleaved, causal)
        assert table_dtype == {torch.float16: 0, torch.bfloat16: 1}[dtype]


def test_strided_views_reach_the_kernel_as_they_are(binding, gen):
    """k/v slices of a wider tensor, a transposed cos table, GQA, three new tokens: the
    strides go to the kernel unchanged (size-1 dimensions as 0), nothing is copied."""
    dtype = torch.bfloat16
    case = cache_case("paged-3", dtype, 3, gen, heads_k=HEADS_K, head_dim=HEAD_DIM)
    batch = len(case.lengths)
    q = randn(gen, batch, 3, HEADS, HEAD_DIM, dtype=dtype)
    wide = randn(gen, batch, 3, HEADS_K, 3 * HEAD_DIM, dtype=dtype)
    k, v = wide[..., :HEAD_DIM], wide[..., 2 * HEAD_DIM :]
    cos, sin = rotary_tables(gen, case.capacity, 24, dtype)
    cos = cos.t().contiguous().t()  # column-major: strides (1, rows)
    k_cache, v_cache = case.k_cache.clone(), case.v_cache.clone()
    forge_flash.flash_attn_with_kvcache(
        q, k_cache, v_cache, k, v, rotary_cos=cos, rotary_sin=sin,
        cache_seqlens=_index(case.lengths), block_table=case.table, causal=True,
        rotary_interleaved=False,
    )  # fmt: skip
    (append,) = _appends(binding)
    assert append["strides"][:6] == (*k.stride()[:3], *v.stride()[:3])
    assert append["rotary_strides"] == (*cos.stride(), *sin.stride())
    assert append["table_stride"] == case.table.stride(0)
    expected_k, expected_v, written, _, _ = _expected(
        case, q, k, v, (cos, sin), interleaved=False, causal=True
    )
    assert_close_to_reference(k_cache[written], expected_k[written], dtype, "appended keys")
    torch.testing.assert_close(v_cache.double(), expected_v, rtol=0, atol=0, equal_nan=True)


def test_size_one_dimensions_pass_zero_strides(binding, gen):
    """One new token of one sequence: torch leaves size-1 strides arbitrary; the adapter
    passes 0 so that they never cost the kernel its 16-byte accesses."""
    dtype = torch.float16
    k_cache = randn(gen, 1, 8, HEADS_K, HEAD_DIM, dtype=dtype)
    v_cache = randn(gen, 1, 8, HEADS_K, HEAD_DIM, dtype=dtype)
    q = randn(gen, 1, 1, HEADS, HEAD_DIM, dtype=dtype)
    k = randn(gen, 1, 1, HEADS_K, HEAD_DIM, dtype=dtype).as_strided(
        (1, 1, HEADS_K, HEAD_DIM), (7, 5, HEAD_DIM, 1)
    )
    v = randn(gen, 1, 1, HEADS_K, HEAD_DIM, dtype=dtype)
    forge_flash.flash_attn_with_kvcache(q, k_cache, v_cache, k, v, cache_seqlens=_index([3]))
    (append,) = _appends(binding)
    assert append["strides"][:3] == (0, 0, HEAD_DIM)
    assert append["sizes"] == (1, 1, 0, 0, HEADS_K, HEAD_DIM, 1, 8, 0)
    assert torch.equal(k_cache[0, 3], k[0, 0]) and torch.equal(v_cache[0, 3], v[0, 0])


def _torch_path_case(gen, change):
    dtype = torch.float16
    case = cache_case("contiguous", dtype, 1, gen, heads_k=HEADS_K, head_dim=HEAD_DIM)
    q, k, v, tables = _step(case, gen, dtype, seqlen_new=1)
    k_cache, v_cache = case.k_cache.clone(), case.v_cache.clone()
    cos, sin = tables
    if change == "mixed table dtypes":
        sin = sin.float()
    elif change == "k inside the cache":
        # The last slot of cache rows 0-2: never written nor attended here (it holds NaN).
        k_cache[:3, -1:] = randn(gen, 3, 1, HEADS_K, HEAD_DIM, dtype=dtype)
        k = k_cache[:3, -1:]
    elif change == "float32":
        q, k, v, cos, sin = (x.float() for x in (q, k, v, cos, sin))
        k_cache, v_cache = k_cache.float(), v_cache.float()
    elif change == "no new token":
        k, v = k[:, :0], v[:, :0]
        cos = sin = None
    return case, q, k_cache, v_cache, k, v, cos, sin


@pytest.mark.parametrize(
    "change", ["mixed table dtypes", "k inside the cache", "float32", "no new token"]
)
def test_calls_the_kernel_does_not_take_stay_on_the_torch_ops(binding, change, gen):
    case, q, k_cache, v_cache, k, v, cos, sin = _torch_path_case(gen, change)
    k_values = k.clone()  # the expectation from the values before any write
    out = forge_flash.flash_attn_with_kvcache(
        q, k_cache, v_cache, k, v, rotary_cos=cos, rotary_sin=sin,
        cache_seqlens=_index(case.lengths), cache_batch_idx=_index(case.rows),
        cache_leftpad=_index(case.pads), causal=True,
    )  # fmt: skip
    assert not _entries(binding, "append_kv"), "the torch ops, not the kernel"
    assert all(not c["options"][9] for c in _entries(binding, "fwd")), "no programmatic launch"
    tables = (cos, sin)  # the reference reads each table as it is (float64)
    caches = {"k_cache": case.k_cache.to(q.dtype), "v_cache": case.v_cache.to(q.dtype)}
    _, _, _, expected_out, _ = _expected(
        case._replace(**caches), q, k_values, v, tables, interleaved=True, causal=True
    )
    if change != "float32":  # float32 runs on the naive attention, not through the fake
        assert _entries(binding, "fwd")
    assert_close_to_reference(out, expected_out, q.dtype)


def test_without_new_keys_nothing_is_appended_or_programmatic(binding, gen):
    case = cache_case("paged-16", torch.float16, 0, gen, heads_k=HEADS_K, head_dim=HEAD_DIM)
    q = randn(gen, len(case.lengths), 1, HEADS, HEAD_DIM, dtype=torch.float16)
    forge_flash.flash_attn_with_kvcache(
        q, case.k_cache, case.v_cache, cache_seqlens=_index(case.lengths),
        cache_leftpad=_index(case.pads), block_table=case.table,
    )  # fmt: skip
    assert not _entries(binding, "append_kv")
    (attention,) = _entries(binding, "fwd")
    assert attention["options"][9] is False


def _unpadded(case, gen):
    """``case`` without left padding, and finite everywhere: the fake's attention over a whole
    cache (no key starts) masks the slots past each sequence but would still multiply their
    NaN values by 0. (The GPU tests keep the NaN: there a read of such a slot would show.)"""

    def finite(cache):
        return torch.where(cache.isnan(), randn(gen, *cache.shape, dtype=cache.dtype), cache)

    return case._replace(
        pads=[0] * len(case.pads), k_cache=finite(case.k_cache), v_cache=finite(case.v_cache)
    )


@pytest.mark.parametrize(
    "layout,rotary",
    [
        ("contiguous", "none"),
        ("contiguous", "neox"),
        ("paged-16", "interleaved"),
        ("paged-1", "neox"),
    ],
)
def test_a_decode_step_is_one_call_with_the_append_inside(binding, layout, rotary, gen):
    """No left padding, 2 tokens of 2 query heads per KV head (4 rows): the step is one
    FwdCall.run_append (where the C API makes two launches too: it makes them
    itself), given the caches, the lengths before the append and the new keys, and the caches
    and output are the reference's."""
    dtype = torch.float16
    case = _unpadded(cache_case(layout, dtype, 2, gen, heads_k=HEADS_K, head_dim=HEAD_DIM), gen)
    interleaved = rotary == "interleaved"
    q, k, v, tables = _step(case, gen, dtype, rotary_dim=0 if rotary == "none" else 16)
    k_cache, v_cache = case.k_cache.clone(), case.v_cache.clone()
    seqlens = _index(case.lengths)
    out, lse = forge_flash.flash_attn_with_kvcache(
        q, k_cache, v_cache, k, v, rotary_cos=tables[0], rotary_sin=tables[1],
        cache_seqlens=seqlens, cache_batch_idx=_index(case.rows), block_table=case.table,
        causal=True, rotary_interleaved=interleaved, return_softmax_lse=True,
    )  # fmt: skip
    assert not _entries(binding, "append_kv") and not _entries(binding, "fwd")
    (step,) = _entries(binding, "fwd_append")
    assert (step["q"], step["k"], step["v"]) == (q.data_ptr(), k.data_ptr(), v.data_ptr())
    assert (step["k_cache"], step["v_cache"]) == (k_cache.data_ptr(), v_cache.data_ptr())
    assert step["cache_seqlens"] == seqlens.data_ptr()
    assert step["block_table"] == (0 if case.table is None else case.table.data_ptr())
    expected_k, expected_v, written, expected_out, expected_lse = _expected(
        case, q, k, v, tables, interleaved=interleaved, causal=True
    )
    assert_close_to_reference(out, expected_out, dtype)
    assert_lse_close(lse, expected_lse)
    assert_close_to_reference(k_cache[written], expected_k[written], dtype, "appended keys")
    torch.testing.assert_close(v_cache.double(), expected_v, rtol=0, atol=0, equal_nan=True)


def test_a_declined_step_takes_two_launches_and_is_not_asked_again(binding, gen):
    """16 tokens of 2 query heads per KV head (32 rows, more than the decode kernel takes):
    the C API declines the step, and the adapter makes the two calls, now and (without asking
    again) the next time."""
    dtype, tokens = torch.float16, 16
    case = cache_case("paged-16", dtype, tokens, gen, heads_k=HEADS_K, head_dim=HEAD_DIM)
    case = _unpadded(case, gen)
    q, k, v, tables = _step(case, gen, dtype, seqlen_new=tokens, rotary_dim=16)
    expected = _expected(case, q, k, v, tables, interleaved=True, causal=True)
    for attempt in range(2):
        k_cache, v_cache = case.k_cache.clone(), case.v_cache.clone()
        out = forge_flash.flash_attn_with_kvcache(
            q, k_cache, v_cache, k, v, rotary_cos=tables[0], rotary_sin=tables[1],
            cache_seqlens=_index(case.lengths), cache_batch_idx=_index(case.rows),
            block_table=case.table, causal=True,
        )  # fmt: skip
        assert len(_entries(binding, "fwd_append")) == 1, "a declined layout is remembered"
        assert len(_entries(binding, "append_kv")) == attempt + 1
        assert_close_to_reference(out, expected[3], dtype)
        torch.testing.assert_close(v_cache.double(), expected[1], rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("splits", [0, 1, 5])
@pytest.mark.parametrize("new_keys", [False, True])
def test_num_splits_is_bound_with_the_attention(binding, splits, new_keys, gen):
    """FlashAttention's ``num_splits`` reaches the attention's bound options (the C API's
    ``ff_attn_options.num_splits``, the last field), on the fused step as on the attention
    alone, and the answer stays the reference's."""
    dtype = torch.float16
    case = _unpadded(cache_case("paged-16", dtype, 1, gen, heads_k=HEADS_K, head_dim=HEAD_DIM), gen)
    q, k, v, tables = _step(case, gen, dtype, seqlen_new=1, rotary_dim=0)
    k_cache, v_cache = case.k_cache.clone(), case.v_cache.clone()
    new = (k, v) if new_keys else ()
    out = forge_flash.flash_attn_with_kvcache(
        q, k_cache, v_cache, *new, cache_seqlens=_index(case.lengths), block_table=case.table,
        causal=True, num_splits=splits,
    )  # fmt: skip
    if new_keys:
        (step,) = _entries(binding, "fwd_append")
        options = step["attention_static"][-1]
        expected = _expected(case, q, k, v, tables, interleaved=True, causal=True)[3]
    else:
        (attention,) = _entries(binding, "fwd")
        options = attention["options"]
        expected, _ = reference_cache_attention(
            q, case.k_cache, case.v_cache, case.lengths, block_table=case.table_rows, causal=True
        )
    assert options[10] == splits
    assert_close_to_reference(out, expected, dtype)


@pytest.mark.parametrize("held", ["tensor", "pair-of-tensors"])
def test_a_window_held_in_tensors_is_read_on_every_step(binding, held, gen):
    # The fused step keeps its bound launch by the call's options: a window changed in place
    # between two steps (a 1-dim tensor, as FlashAttention's tests pass it, or 0-dim edges)
    # must not be taken for the first step's.
    dtype, lengths = torch.float16, [5, 9]
    k_cache = randn(gen, 2, 12, HEADS_K, HEAD_DIM, dtype=dtype)
    v_cache = randn(gen, 2, 12, HEADS_K, HEAD_DIM, dtype=dtype)
    q, k, v = (randn(gen, 2, 1, h, HEAD_DIM, dtype=dtype) for h in (HEADS, HEADS_K, HEADS_K))
    window = torch.tensor([8, 0]) if held == "tensor" else (torch.tensor(8), torch.tensor(0))
    for left in (8, 2):
        window[0].fill_(left)
        k_step, v_step = k_cache.clone(), v_cache.clone()
        out = forge_flash.flash_attn_with_kvcache(
            q, k_step, v_step, k, v, cache_seqlens=_index(lengths), causal=True,
            window_size=window,
        )  # fmt: skip
        expected_k, expected_v, _ = reference_append(k_cache, v_cache, k, v, lengths)
        expected, _ = reference_cache_attention(
            q, expected_k.to(dtype), expected_v.to(dtype), [n + 1 for n in lengths],
            causal=True, window_size=(left, 0),
        )  # fmt: skip
        assert_close_to_reference(out, expected, dtype)
    assert len(_appends(binding)) == 2, "each step appends through the adapter"
