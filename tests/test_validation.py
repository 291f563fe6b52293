"""Property tests: valid shapes give the reference's answer; every invalid input is refused.

Each refusal is checked for its exception type and for a message that starts with the name of
the offending argument. Devices are mixed with the ``meta`` device, which exists on every
torch build, so the device checks run without a GPU.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import forge_flash as ff
from forge_flash.validation import check_softcap, resolve_scale

from helpers.fake_plugin import CpuCudaBackend, FakeBinding
from helpers.reference import reference_attention
from helpers.tolerance import OUT_TOLERANCE, assert_close_to_reference, assert_lse_close

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@st.composite
def attention_shapes(draw):
    heads_k = draw(st.integers(1, 3))
    return dict(
        batch=draw(st.integers(0, 3)),
        seqlen_q=draw(st.integers(0, 12)),
        seqlen_k=draw(st.integers(0, 12)),
        heads_k=heads_k,
        heads=heads_k * draw(st.integers(1, 3)),
        head_dim=draw(st.sampled_from([1, 8, 16, 40, 256])),
        dtype=draw(st.sampled_from(DTYPES)),
        causal=draw(st.booleans()),
        # No subnormal scales: hypothesis cannot draw them once code built with -ffast-math
        # (torch 2.4's CPU inductor kernels) has set flush-to-zero in the process.
        scale=draw(st.one_of(st.none(), st.floats(-2, 2, allow_nan=False, allow_subnormal=False))),
    )


def _make(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    b, sq, sk = shape["batch"], shape["seqlen_q"], shape["seqlen_k"]
    h, hk, d, dtype = shape["heads"], shape["heads_k"], shape["head_dim"], shape["dtype"]
    q = torch.randn(b, sq, h, d, generator=gen).to(dtype)
    k = torch.randn(b, sk, hk, d, generator=gen).to(dtype)
    v = torch.randn(b, sk, hk, d, generator=gen).to(dtype)
    return q, k, v


@given(attention_shapes())
def test_any_valid_shape_matches_the_reference(shape):
    q, k, v = _make(shape)
    out, lse = ff.flash_attn_fwd(
        q, k, v, causal=shape["causal"], softmax_scale=shape["scale"], return_lse=True
    )
    expected_out, expected_lse = reference_attention(
        q, k, v, causal=shape["causal"], scale=shape["scale"]
    )
    assert_close_to_reference(out, expected_out, q.dtype)
    assert_lse_close(lse, expected_lse)
    plain = ff.flash_attn_fwd(q, k, v, causal=shape["causal"], softmax_scale=shape["scale"])
    assert_close_to_reference(plain, expected_out, q.dtype)


@given(attention_shapes())
def test_varlen_of_one_uniform_batch_equals_flash_attn_fwd(shape):
    q, k, v = _make(shape)
    b, sq, sk = shape["batch"], shape["seqlen_q"], shape["seqlen_k"]
    cu_q = torch.arange(0, b + 1, dtype=torch.int32) * sq
    cu_k = torch.arange(0, b + 1, dtype=torch.int32) * sk
    packed = ff.flash_attn_varlen_fwd(
        q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), cu_q, cu_k, sq, sk,
        causal=shape["causal"], return_lse=True,
    )  # fmt: skip
    uniform = ff.flash_attn_fwd(q, k, v, causal=shape["causal"], return_lse=True)
    # Same math, different batching: allow one rounding of the output dtype.
    atol, rtol = OUT_TOLERANCE[q.dtype]
    torch.testing.assert_close(packed[0], uniform[0].flatten(0, 1), atol=atol, rtol=rtol)
    torch.testing.assert_close(
        packed[1], uniform[1].permute(1, 0, 2).flatten(1), atol=1e-5, rtol=1e-5
    )


# -- refusals ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """One way to break an otherwise valid call: which argument, and the error it must raise."""

    name: str
    error: type[Exception]
    mutate: Callable[[dict], None]


def _meta_like(t):
    return torch.empty(t.shape, dtype=t.dtype, device="meta")


def _more_heads(kv, q):
    """KV heads that cannot divide q's heads: one more than q has."""
    return torch.zeros(*kv.shape[:2], q.shape[2] + 1, kv.shape[3], dtype=kv.dtype)


def _strided_last(t):
    return torch.empty(*t.shape, 2, dtype=t.dtype)[..., 0]


FWD_BREAKS = [
    Bad("q", TypeError, lambda a: a.update(q=a["q"].tolist())),
    Bad("q", ValueError, lambda a: a.update(q=a["q"][0])),
    Bad("k", ValueError, lambda a: a.update(k=a["k"].unsqueeze(0))),
    Bad("q", TypeError, lambda a: a.update(q=a["q"].double())),
    Bad("q", TypeError, lambda a: a.update(q=a["q"].to(torch.int32))),
    Bad("k", TypeError, lambda a: a.update(k=a["k"].to(torch.bfloat16 if a["k"].dtype != torch.bfloat16 else torch.float16))),
    Bad("v", ValueError, lambda a: a.update(v=_meta_like(a["v"]))),
    Bad("k", ValueError, lambda a: a.update(k=_meta_like(a["k"]))),
    Bad("k", ValueError, lambda a: a.update(k=torch.cat([a["k"], a["k"]]), v=torch.cat([a["v"], a["v"]]))),
    Bad("k", ValueError, lambda a: a.update(k=a["k"][..., :8])),
    Bad("v", ValueError, lambda a: a.update(v=a["v"][:, :-1])),
    Bad("q", ValueError, lambda a: a.update(k=_more_heads(a["k"], a["q"]), v=_more_heads(a["v"], a["q"]))),
    Bad("q", ValueError, lambda a: a.update(q=_strided_last(a["q"]))),
    Bad("k", ValueError, lambda a: a.update(k=a["k"][:, :, :0], v=a["v"][:, :, :0])),
    Bad("out", ValueError, lambda a: a.update(out=torch.empty(a["q"].shape[0] + 1, *a["q"].shape[1:], dtype=a["q"].dtype))),
    Bad("out", TypeError, lambda a: a.update(out=torch.empty(a["q"].shape, dtype=torch.float64))),
    Bad("out", ValueError, lambda a: a.update(out=_meta_like(a["q"]))),
    Bad("out", TypeError, lambda a: a.update(out="buffer")),
    Bad("softmax_scale", ValueError, lambda a: a.update(softmax_scale=float("nan"))),
    Bad("softmax_scale", ValueError, lambda a: a.update(softmax_scale=float("inf"))),
    Bad("softmax_scale", TypeError, lambda a: a.update(softmax_scale="0.1")),
    Bad("softmax_scale", TypeError, lambda a: a.update(softmax_scale=True)),
    Bad("causal", TypeError, lambda a: a.update(causal=1)),
    Bad("return_lse", TypeError, lambda a: a.update(return_lse="yes")),
]  # fmt: skip


def _fwd_args(shape_q, shape_k, dtype):
    gen = torch.Generator().manual_seed(0)
    return dict(
        q=torch.randn(*shape_q, generator=gen).to(dtype),
        k=torch.randn(*shape_k, generator=gen).to(dtype),
        v=torch.randn(*shape_k, generator=gen).to(dtype),
    )


def _assert_refused(call, args, bad: Bad):
    with pytest.raises(bad.error) as info:
        call(**args)
    message = str(info.value)
    assert message.startswith(bad.name), f"message does not name {bad.name!r}: {message}"


def _ids(breaks):
    return [f"{i}-{bad.name}-{bad.error.__name__}" for i, bad in enumerate(breaks)]


# Every way of breaking a call is its own test case; hypothesis varies the surrounding shapes.
@pytest.mark.parametrize("bad", FWD_BREAKS, ids=_ids(FWD_BREAKS))
@settings(max_examples=8)
@given(
    heads_k=st.integers(1, 3),
    group=st.integers(1, 3),
    seqlens=st.tuples(st.integers(1, 6), st.integers(1, 6)),
    dtype=st.sampled_from(DTYPES),
)
def test_flash_attn_fwd_refuses(bad, heads_k, group, seqlens, dtype):
    sq, sk = seqlens
    args = _fwd_args((2, sq, heads_k * group, 16), (2, sk, heads_k, 16), dtype)
    bad.mutate(args)
    _assert_refused(ff.flash_attn_fwd, args, bad)


def test_head_dim_limit_and_heads_divisibility_name_the_argument():
    args = _fwd_args((1, 2, 2, 257), (1, 2, 2, 257), torch.float32)
    _assert_refused(ff.flash_attn_fwd, args, Bad("q", ValueError, None))
    args = _fwd_args((1, 2, 6, 8), (1, 2, 4, 8), torch.float32)
    with pytest.raises(ValueError, match=r"multiple of k\.shape\[2\]"):
        ff.flash_attn_fwd(**args)


def _varlen_args(seqlens_q, seqlens_k):
    gen = torch.Generator().manual_seed(0)
    cu_q = torch.tensor([0, *torch.tensor(seqlens_q).cumsum(0).tolist()], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(seqlens_k).cumsum(0).tolist()], dtype=torch.int32)
    return dict(
        q=torch.randn(sum(seqlens_q), 4, 16, generator=gen),
        k=torch.randn(sum(seqlens_k), 2, 16, generator=gen),
        v=torch.randn(sum(seqlens_k), 2, 16, generator=gen),
        cu_seqlens_q=cu_q,
        cu_seqlens_k=cu_k,
        max_seqlen_q=max(seqlens_q),
        max_seqlen_k=max(seqlens_k),
    )


def _with_value(tensor, index, value):
    changed = tensor.clone()
    changed[index] = value
    return changed


VARLEN_BREAKS = [
    Bad("cu_seqlens_q", TypeError, lambda a: a.update(cu_seqlens_q=a["cu_seqlens_q"].long())),
    Bad("cu_seqlens_k", TypeError, lambda a: a.update(cu_seqlens_k=a["cu_seqlens_k"].float())),
    Bad("cu_seqlens_q", TypeError, lambda a: a.update(cu_seqlens_q=a["cu_seqlens_q"].tolist())),
    Bad("cu_seqlens_q", ValueError, lambda a: a.update(cu_seqlens_q=a["cu_seqlens_q"].view(1, -1))),
    Bad("cu_seqlens_q", ValueError, lambda a: a.update(cu_seqlens_q=a["cu_seqlens_q"][:0])),
    Bad("cu_seqlens_k", ValueError, lambda a: a.update(cu_seqlens_k=a["cu_seqlens_k"][:-1])),
    Bad("cu_seqlens_q", ValueError, lambda a: a.update(cu_seqlens_q=_meta_like(a["cu_seqlens_q"]))),
    Bad("cu_seqlens_q", ValueError, lambda a: a.update(cu_seqlens_q=a["cu_seqlens_q"] + 1)),
    Bad("cu_seqlens_q", ValueError, lambda a: a.update(cu_seqlens_q=_with_value(a["cu_seqlens_q"], -1, a["q"].shape[0] - 1))),
    Bad("cu_seqlens_k", ValueError, lambda a: a.update(cu_seqlens_k=_with_value(a["cu_seqlens_k"], -1, a["k"].shape[0] + 1))),
    Bad("cu_seqlens_k", ValueError, lambda a: a.update(cu_seqlens_k=_with_value(a["cu_seqlens_k"], 1, a["k"].shape[0] + 5))),
    Bad("max_seqlen_q", ValueError, lambda a: a.update(max_seqlen_q=a["max_seqlen_q"] - 1)),
    Bad("max_seqlen_k", ValueError, lambda a: a.update(max_seqlen_k=a["max_seqlen_k"] - 1)),
    Bad("max_seqlen_q", ValueError, lambda a: a.update(max_seqlen_q=-1)),
    Bad("max_seqlen_k", TypeError, lambda a: a.update(max_seqlen_k=3.0)),
    Bad("max_seqlen_q", TypeError, lambda a: a.update(max_seqlen_q=None)),
    Bad("q", ValueError, lambda a: a.update(q=a["q"].unsqueeze(0))),
    Bad("k", ValueError, lambda a: a.update(k=a["k"][..., :8])),
    Bad("v", ValueError, lambda a: a.update(v=_meta_like(a["v"]))),
    Bad("out", ValueError, lambda a: a.update(out=torch.empty(1, 4, 16))),
]  # fmt: skip


@pytest.mark.parametrize("bad", VARLEN_BREAKS, ids=_ids(VARLEN_BREAKS))
@settings(max_examples=8)
@given(
    seqlens_q=st.lists(st.integers(1, 5), min_size=2, max_size=4),
    seqlens_k=st.lists(st.integers(1, 5), min_size=4, max_size=4),
)
def test_flash_attn_varlen_fwd_refuses(bad, seqlens_q, seqlens_k):
    args = _varlen_args(seqlens_q, seqlens_k[: len(seqlens_q)])
    bad.mutate(args)
    _assert_refused(ff.flash_attn_varlen_fwd, args, bad)


def _decode_args(batch, max_len, lengths):
    gen = torch.Generator().manual_seed(0)
    return dict(
        q=torch.randn(batch, 4, 16, generator=gen),
        k_cache=torch.randn(batch, max_len, 2, 16, generator=gen),
        v_cache=torch.randn(batch, max_len, 2, 16, generator=gen),
        cache_seqlens=torch.tensor(lengths, dtype=torch.int32),
    )


DECODE_BREAKS = [
    Bad("cache_seqlens", ValueError, lambda a: a.update(cache_seqlens=_with_value(a["cache_seqlens"], 0, a["k_cache"].shape[1] + 1))),
    Bad("cache_seqlens", ValueError, lambda a: a.update(cache_seqlens=_with_value(a["cache_seqlens"], -1, -1))),
    Bad("cache_seqlens", TypeError, lambda a: a.update(cache_seqlens=a["cache_seqlens"].long())),
    Bad("cache_seqlens", ValueError, lambda a: a.update(cache_seqlens=a["cache_seqlens"][:-1])),
    Bad("cache_seqlens", ValueError, lambda a: a.update(cache_seqlens=_meta_like(a["cache_seqlens"]))),
    Bad("q", ValueError, lambda a: a.update(q=a["q"].unsqueeze(1))),
    Bad("k_cache", ValueError, lambda a: a.update(k_cache=a["k_cache"][:-1], v_cache=a["v_cache"][:-1])),
    Bad("k_cache", TypeError, lambda a: a.update(k_cache=a["k_cache"].half())),
    Bad("v_cache", ValueError, lambda a: a.update(v_cache=a["v_cache"][:, :-1])),
    Bad("q", ValueError, lambda a: a.update(q=torch.cat([a["q"], a["q"][:, :1]], dim=1))),
    Bad("softmax_scale", TypeError, lambda a: a.update(softmax_scale=[1.0])),
]  # fmt: skip


@pytest.mark.parametrize("bad", DECODE_BREAKS, ids=_ids(DECODE_BREAKS))
@settings(max_examples=8)
@given(
    batch=st.integers(2, 4),
    max_len=st.integers(1, 9),
    data=st.data(),
)
def test_batched_decode_attention_refuses(bad, batch, max_len, data):
    lengths = data.draw(st.lists(st.integers(0, max_len), min_size=batch, max_size=batch))
    args = _decode_args(batch, max_len, lengths)
    bad.mutate(args)
    _assert_refused(ff.batched_decode_attention, args, bad)


def _flat_args(batched):
    gen = torch.Generator().manual_seed(0)
    lead = (2,) if batched else ()
    return dict(
        q=torch.randn(*lead, 5, 8 * 16, generator=gen),
        k=torch.randn(*lead, 7, 2 * 16, generator=gen),
        v=torch.randn(*lead, 7, 2 * 16, generator=gen),
        num_heads=8,
        num_kv_heads=2,
        head_dim=16,
    )


FLAT_BREAKS = [
    Bad("num_heads", TypeError, lambda a: a.update(num_heads=8.0)),
    Bad("num_heads", ValueError, lambda a: a.update(num_heads=0)),
    Bad("num_kv_heads", ValueError, lambda a: a.update(num_kv_heads=0)),
    Bad("num_heads", ValueError, lambda a: a.update(num_kv_heads=3)),
    Bad("head_dim", ValueError, lambda a: a.update(head_dim=512)),
    Bad("head_dim", TypeError, lambda a: a.update(head_dim="16")),
    Bad("q", ValueError, lambda a: a.update(q=a["q"][..., :-1])),
    Bad("k", ValueError, lambda a: a.update(k=a["k"][..., :-2], v=a["v"][..., :-2])),
    Bad("q", ValueError, lambda a: a.update(q=a["q"].unsqueeze(0).unsqueeze(0))),
    Bad("k", ValueError, lambda a: a.update(k=a["k"].unsqueeze(0))),
    Bad("v", ValueError, lambda a: a.update(v=a["v"][..., :-1, :])),
    Bad("v", TypeError, lambda a: a.update(v=a["v"].half())),
    Bad("k", ValueError, lambda a: a.update(k=_meta_like(a["k"]))),
    Bad("scale", ValueError, lambda a: a.update(scale=float("inf"))),
    Bad("is_causal", TypeError, lambda a: a.update(is_causal=None)),
    Bad("cast_dtype", ValueError, lambda a: a.update(cast_dtype=torch.float64)),
]  # fmt: skip


@pytest.mark.parametrize("bad", FLAT_BREAKS, ids=_ids(FLAT_BREAKS))
@settings(max_examples=8)
@given(
    batched=st.booleans(),
    entry=st.sampled_from([ff.attention_fwd, ff.multi_head_attention]),
)
def test_model_layer_entry_points_refuse(bad, batched, entry):
    args = _flat_args(batched)
    bad.mutate(args)
    _assert_refused(entry, args, bad)


def test_inputs_are_checked_before_the_backend_is_chosen(monkeypatch, fresh_discovery):
    # A forced but missing cuda backend would raise RuntimeError; bad input must win.
    monkeypatch.setenv("FORGE_FLASH_BACKEND", "cuda")
    args = _fwd_args((1, 2, 2, 8), (1, 2, 2, 8), torch.float32)
    args["q"] = args["q"][0]
    with pytest.raises(ValueError, match=r"^q must have 4 dimensions"):
        ff.flash_attn_fwd(**args)


# -- paged varlen: every key of a sequence must lie in its row of the block table -------------


def _paged_varlen(lengths_q, lengths_k, page_size, max_blocks, seed=0):
    gen = torch.Generator().manual_seed(seed)
    heads, heads_k, dim, num_blocks = 4, 2, 16, 12
    k_cache = torch.randn(num_blocks, page_size, heads_k, dim, generator=gen)
    v_cache = torch.randn(num_blocks, page_size, heads_k, dim, generator=gen)
    table = torch.randperm(num_blocks, generator=gen)[: len(lengths_k) * max_blocks]
    table = table.view(len(lengths_k), max_blocks).to(torch.int32)
    q = torch.randn(sum(lengths_q), heads, dim, generator=gen)
    cu_q = torch.tensor([0, *torch.tensor(lengths_q).cumsum(0).tolist()], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(lengths_k).cumsum(0).tolist()], dtype=torch.int32)
    return q, k_cache, v_cache, cu_q, cu_k, table


@pytest.mark.parametrize("max_blocks", [1, 2, 3])
def test_paged_varlen_refuses_a_sequence_longer_than_its_block_table_row(max_blocks):
    # 7 keys in pages of 2 need 4 blocks: a narrower table would leave keys unaddressed (the
    # naive path raised IndexError; the kernels would clamp the sequence, a silent wrong answer).
    q, k, v, cu_q, cu_k, table = _paged_varlen([2, 3], [3, 7], 2, max_blocks)
    with pytest.raises(ValueError, match=r"^block_table must address every key.* has 7 keys"):
        ff.flash_attn_varlen_fwd(q, k, v, cu_q, cu_k, 3, 7, block_table=table, causal=True)


@pytest.mark.parametrize("backend", ["naive", "adapter"])
def test_paged_varlen_uses_the_keys_seqused_k_leaves_within_cu_seqlens_k(
    backend, monkeypatch, fresh_discovery
):
    # seqused_k[b] limits sequence b to its first keys, never beyond cu_seqlens_k's count (the
    # kernels' rule, cta_work.cuh; the naive path and the fake binding once read seqused_k
    # alone over a paged cache), and with it a table row need only hold the keys used.
    dtype = torch.float32
    if backend == "adapter":  # the CUDA adapter over the pointer-level fake binding
        monkeypatch.setattr("forge_flash.discovery._active", CpuCudaBackend(FakeBinding()))
        dtype = torch.float16
    lengths_q, lengths_k, used = [2, 3], [3, 7], [4, 4]  # sequence 0 uses 3 keys, 1 uses 4
    q, k, v, cu_q, cu_k, table = _paged_varlen(lengths_q, lengths_k, 2, 2, seed=1)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    seqused = torch.tensor(used, dtype=torch.int32)
    out, lse = ff.flash_attn_varlen_fwd(
        q, k, v, cu_q, cu_k, 3, 7, seqused_k=seqused, block_table=table, causal=True,
        return_lse=True,
    )  # fmt: skip
    keys = [min(u, n) for u, n in zip(used, lengths_k, strict=True)]
    q0 = 0
    for b, (n_q, n_k) in enumerate(zip(lengths_q, keys, strict=True)):
        rows = [table[b, t // 2] for t in range(n_k)], [t % 2 for t in range(n_k)]
        one = (q[q0 : q0 + n_q].unsqueeze(0), k[rows].unsqueeze(0), v[rows].unsqueeze(0))
        expected, expected_lse = reference_attention(*one, causal=True)
        assert_close_to_reference(out[q0 : q0 + n_q], expected[0], dtype)
        assert_lse_close(lse[:, q0 : q0 + n_q], expected_lse[0])
        q0 += n_q


_FLOAT32_MAX = struct.unpack("f", bytes.fromhex("ffff7f7f"))[0]


_FLOAT32_NORMAL = st.floats(2.0**-126, _FLOAT32_MAX)


@settings(max_examples=300)
@given(st.one_of(st.just(0.0), _FLOAT32_NORMAL, _FLOAT32_NORMAL.map(lambda x: -x)))
def test_scales_and_softcaps_are_the_nearest_float32(value):
    # What the kernels get (a float32), worked out without struct so that torch.compile can
    # trace it; the reference is C's double-to-float conversion. (float32's subnormal range
    # is left out: torch's CPU inductor kernels set flush-to-zero in the process, after which
    # C's conversion gives 0 there.)
    nearest = struct.unpack("f", struct.pack("f", value))[0]
    assert resolve_scale("softmax_scale", value, 64) == nearest
    assert check_softcap(abs(value)) == abs(nearest)


@pytest.mark.parametrize(
    ("value", "nearest"),
    [
        (1 + 2**-24, 1.0),  # a tie between 1 and 1 + 2**-23 goes to the even one, 1
        (1 + 3 * 2**-24, 1 + 2**-22),  # a tie between 1 + 2**-23 and 1 + 2**-22: even again
        (1 + 2**-24 + 2**-40, 1 + 2**-23),  # past the tie: up
        (_FLOAT32_MAX, _FLOAT32_MAX),
        (2**128 - 2**103 - 2**76, _FLOAT32_MAX),  # just below the tie with 2**128: down
    ],
)
def test_float32_rounding_ties_to_even_and_keeps_the_largest(value, nearest):
    assert resolve_scale("softmax_scale", value, 64) == nearest
    assert resolve_scale("softmax_scale", -value, 64) == -nearest


@pytest.mark.parametrize("value", [2**128 - 2**103, 2**128, 1e300])
def test_values_that_round_past_float32_are_refused(value):
    # 2**128 - 2**103 is the tie between float32's largest and 2**128: it rounds to infinity.
    with pytest.raises(ValueError, match="softmax_scale must be finite as a float32"):
        resolve_scale("softmax_scale", value, 64)
    with pytest.raises(ValueError, match="softcap must be finite as a float32"):
        check_softcap(value)


def test_the_default_scale_is_the_float32_nearest_one_over_root_head_dim():
    for head_dim in (1, 3, 64, 96, 128, 192, 256, 1000):
        expected = struct.unpack("f", struct.pack("f", head_dim**-0.5))[0]
        assert resolve_scale("softmax_scale", None, head_dim) == expected
