"""The variant options' validation (issue 14), and property tests of their semantics.

Every refusal is checked for its exception type and for a message that starts with the
argument's name (``window_size``, ``softcap``, ``alibi_slopes``, ``sinks``); the rest of the
wording is the implementation's. Devices are mixed with the ``meta`` device, which exists on
every torch build, so the device checks run without a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import forge_flash as ff

from helpers.reference import reference_attention
from helpers.tolerance import OUT_TOLERANCE, assert_close_to_reference, assert_lse_close

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
HEAD_DIM = 16


@dataclass(frozen=True)
class Bad:
    """One bad option value: the argument it names, the error(s) it must raise."""

    name: str
    error: type[Exception] | tuple[type[Exception], ...]
    value: Callable[[int, int], object]  # (batch, num_heads) -> the bad value


def _f32(*shape):
    return torch.zeros(*shape, dtype=torch.float32)


BREAKS = [
    Bad("window_size", ValueError, lambda b, h: (-2, 0)),
    Bad("window_size", ValueError, lambda b, h: (0, -2)),
    Bad("window_size", ValueError, lambda b, h: (-7, -7)),
    Bad("window_size", ValueError, lambda b, h: [3, -100]),
    # Not a pair: the wording of the issue allows either error for a wrong length.
    Bad("window_size", (ValueError, TypeError), lambda b, h: (1, 2, 3)),
    Bad("window_size", (ValueError, TypeError), lambda b, h: (4,)),
    Bad("window_size", (ValueError, TypeError), lambda b, h: ()),
    Bad("window_size", TypeError, lambda b, h: 5),
    Bad("window_size", TypeError, lambda b, h: (1.0, 2)),
    Bad("window_size", TypeError, lambda b, h: (0, 2.5)),
    Bad("window_size", TypeError, lambda b, h: (True, 0)),
    Bad("window_size", TypeError, lambda b, h: (0, False)),
    Bad("window_size", TypeError, lambda b, h: ("1", 2)),
    Bad("window_size", TypeError, lambda b, h: "ab"),
    # A tensor pair (FlashAttention's own tests pass torch.randint(0, n, (2,))) holds ints.
    Bad("window_size", ValueError, lambda b, h: torch.tensor([-2, 0])),
    Bad("window_size", (ValueError, TypeError), lambda b, h: torch.tensor([1, 2, 3])),
    Bad("window_size", TypeError, lambda b, h: torch.tensor([1.0, 2.0])),
    Bad("window_size", TypeError, lambda b, h: torch.tensor([True, False])),
    Bad("window_size", TypeError, lambda b, h: torch.tensor([[1, 2]])),
    Bad("window_size", TypeError, lambda b, h: torch.tensor(3)),
    Bad("softcap", ValueError, lambda b, h: -1.0),
    Bad("softcap", ValueError, lambda b, h: -1e-30),
    Bad("softcap", ValueError, lambda b, h: float("nan")),
    Bad("softcap", ValueError, lambda b, h: float("inf")),
    Bad("softcap", ValueError, lambda b, h: float("-inf")),
    Bad("softcap", TypeError, lambda b, h: "30"),
    Bad("softcap", TypeError, lambda b, h: [30.0]),
    Bad("softcap", TypeError, lambda b, h: True),
    Bad("alibi_slopes", ValueError, lambda b, h: _f32(h + 1)),
    Bad("alibi_slopes", ValueError, lambda b, h: _f32(h - 1) if h > 1 else _f32(2)),
    Bad("alibi_slopes", ValueError, lambda b, h: _f32(b + 1, h)),
    Bad("alibi_slopes", ValueError, lambda b, h: _f32(b, h + 1)),
    Bad("alibi_slopes", ValueError, lambda b, h: _f32(b, h, 1)),
    Bad("alibi_slopes", ValueError, lambda b, h: _f32(1, b, h)),
    Bad("alibi_slopes", ValueError, lambda b, h: torch.tensor(0.5)),
    Bad("alibi_slopes", TypeError, lambda b, h: torch.zeros(h, dtype=torch.float64)),
    Bad("alibi_slopes", TypeError, lambda b, h: torch.zeros(h, dtype=torch.float16)),
    Bad("alibi_slopes", TypeError, lambda b, h: torch.zeros(b, h, dtype=torch.bfloat16)),
    Bad("alibi_slopes", TypeError, lambda b, h: torch.zeros(h, dtype=torch.int32)),
    Bad("alibi_slopes", ValueError, lambda b, h: torch.zeros(h, device="meta")),
    Bad("alibi_slopes", TypeError, lambda b, h: [0.5] * h),
    Bad("sinks", ValueError, lambda b, h: _f32(h + 1)),
    Bad("sinks", ValueError, lambda b, h: _f32(b, h)),
    Bad("sinks", ValueError, lambda b, h: _f32(h, 1)),
    Bad("sinks", ValueError, lambda b, h: torch.tensor(0.5)),
    Bad("sinks", TypeError, lambda b, h: torch.zeros(h, dtype=torch.float64)),
    Bad("sinks", TypeError, lambda b, h: torch.zeros(h, dtype=torch.float16)),
    Bad("sinks", TypeError, lambda b, h: torch.zeros(h, dtype=torch.bfloat16)),
    Bad("sinks", ValueError, lambda b, h: torch.zeros(h, device="meta")),
    Bad("sinks", TypeError, lambda b, h: [0.0] * h),
]


def _tensors(batch, seqlen_q, seqlen_k, heads, heads_k, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, seqlen_q, heads, HEAD_DIM, generator=gen).to(dtype)
    k = torch.randn(batch, seqlen_k, heads_k, HEAD_DIM, generator=gen).to(dtype)
    v = torch.randn(batch, seqlen_k, heads_k, HEAD_DIM, generator=gen).to(dtype)
    return q, k, v


def _call_fwd(batch, heads, heads_k, **options):
    q, k, v = _tensors(batch, 3, 5, heads, heads_k)
    return ff.flash_attn_fwd(q, k, v, **options)


def _call_varlen(batch, heads, heads_k, **options):
    q, k, v = _tensors(batch, 3, 5, heads, heads_k)
    cu_q = torch.arange(batch + 1, dtype=torch.int32) * 3
    cu_k = torch.arange(batch + 1, dtype=torch.int32) * 5
    flat = (t.flatten(0, 1) for t in (q, k, v))
    return ff.flash_attn_varlen_fwd(*flat, cu_q, cu_k, 3, 5, **options)


def _call_decode(batch, heads, heads_k, **options):
    q, k, v = _tensors(batch, 1, 5, heads, heads_k)
    seqlens = torch.full((batch,), 4, dtype=torch.int32)
    return ff.batched_decode_attention(q[:, 0], k, v, seqlens, **options)


def _flat_call(entry):
    def call(batch, heads, heads_k, **options):
        q, k, v = (t.flatten(-2) for t in _tensors(batch, 3, 5, heads, heads_k))
        return getattr(ff, entry)(q, k, v, heads, heads_k, HEAD_DIM, **options)

    return call


def _decoder_decode(batch, heads, heads_k, **options):
    q, k, v = (t.flatten(-2) for t in _tensors(batch, 1, 5, heads, heads_k))
    seqlens = torch.full((batch,), 5, dtype=torch.int32)
    return ff.decoder_attention(q, k, v, heads, heads_k, HEAD_DIM, cache_seqlens=seqlens, **options)


ENTRIES = {
    "flash_attn_fwd": _call_fwd,
    "flash_attn_varlen_fwd": _call_varlen,
    "batched_decode_attention": _call_decode,
    "attention_fwd": _flat_call("attention_fwd"),
    "multi_head_attention": _flat_call("multi_head_attention"),
    "decoder_attention": _flat_call("decoder_attention"),
    "decoder_attention-decode": _decoder_decode,
}


def _assert_refused(call, bad: Bad, *args, **options):
    with pytest.raises(bad.error) as info:
        call(*args, **options)
    message = str(info.value)
    assert message.startswith(bad.name), f"message does not name {bad.name!r}: {message}"


def _ids(breaks):
    return [f"{i}-{bad.name}" for i, bad in enumerate(breaks)]


@pytest.mark.parametrize("bad", BREAKS, ids=_ids(BREAKS))
@pytest.mark.parametrize("entry", ENTRIES)
@settings(max_examples=3)
@given(heads_k=st.integers(1, 3), group=st.integers(1, 2), batch=st.integers(1, 3))
def test_bad_option_values_are_refused(entry, bad, heads_k, group, batch):
    heads = heads_k * group
    value = bad.value(batch, heads)
    _assert_refused(ENTRIES[entry], bad, batch, heads, heads_k, **{bad.name: value})


def test_the_option_check_runs_on_repeated_calls():
    """A call signature seen before skips some checks (forge_flash.call_cache): not these."""
    good = dict(window_size=(2, 0), softcap=5.0, alibi_slopes=_f32(4), sinks=_f32(4))
    for _ in range(2):
        _call_fwd(2, 4, 2, **good)
        _call_decode(2, 4, 2, **good)
    for name in good:
        bad = next(bad for bad in BREAKS if bad.name == name)
        _assert_refused(_call_fwd, bad, 2, 4, 2, **{**good, bad.name: bad.value(2, 4)})
        _assert_refused(_call_decode, bad, 2, 4, 2, **{**good, bad.name: bad.value(2, 4)})


def test_options_are_checked_before_the_backend_is_chosen(monkeypatch, fresh_discovery):
    # A forced but missing cuda backend would raise RuntimeError; the bad option must win.
    monkeypatch.setenv("FORGE_FLASH_BACKEND", "cuda")
    with pytest.raises(ValueError, match=r"^window_size"):
        _call_fwd(1, 2, 2, window_size=(-3, 0))
    with pytest.raises(TypeError, match=r"^sinks"):
        _call_fwd(1, 2, 2, sinks=torch.zeros(2, dtype=torch.float64))


def test_the_defaults_are_accepted_explicitly():
    q, k, v = _tensors(2, 3, 5, 4, 2)
    plain = ff.flash_attn_fwd(q, k, v, causal=True)
    explicit = ff.flash_attn_fwd(
        q, k, v, causal=True, window_size=(-1, -1), softcap=0.0, alibi_slopes=None, sinks=None
    )
    torch.testing.assert_close(explicit, plain, atol=0, rtol=0)


# -- properties --------------------------------------------------------------------------------


@st.composite
def shapes(draw):
    heads_k = draw(st.integers(1, 2))
    return dict(
        batch=draw(st.integers(1, 2)),
        seqlen_q=draw(st.integers(0, 9)),
        seqlen_k=draw(st.integers(0, 9)),
        heads_k=heads_k,
        heads=heads_k * draw(st.integers(1, 2)),
        dtype=draw(st.sampled_from(DTYPES)),
        causal=draw(st.booleans()),
    )


def _make(shape, seed=0):
    return _tensors(
        shape["batch"],
        shape["seqlen_q"],
        shape["seqlen_k"],
        shape["heads"],
        shape["heads_k"],
        shape["dtype"],
        seed,
    )


edges = st.integers(-1, 12)


def _int_tensor(pair: tuple[int, int]) -> torch.Tensor:
    return torch.tensor(pair, dtype=torch.int32)


@given(shapes(), edges, edges, st.sampled_from([tuple, list, torch.tensor, _int_tensor]))
def test_any_window_with_both_edges_at_least_minus_one_is_accepted(shape, left, right, kind):
    q, k, v = _make(shape)
    window = kind((left, right))
    out, lse = ff.flash_attn_fwd(
        q, k, v, causal=shape["causal"], window_size=window, return_lse=True
    )
    expected_out, expected_lse = reference_attention(
        q, k, v, causal=shape["causal"], window_size=(left, right)
    )
    assert_close_to_reference(out, expected_out, q.dtype)
    assert_lse_close(lse, expected_lse)


@given(st.integers(-(2**40), -2), st.integers(-1, 2**40), st.booleans())
def test_any_edge_below_minus_one_is_refused(bad_edge, other_edge, bad_on_the_left):
    window = (bad_edge, other_edge) if bad_on_the_left else (other_edge, bad_edge)
    with pytest.raises(ValueError) as info:
        _call_fwd(1, 2, 1, window_size=window)
    assert str(info.value).startswith("window_size")


@given(st.floats(min_value=-1e30, max_value=-1e-30))
def test_any_negative_softcap_is_refused(softcap):
    with pytest.raises(ValueError) as info:
        _call_fwd(1, 2, 1, softcap=softcap)
    assert str(info.value).startswith("softcap")


@given(shapes(), st.one_of(st.floats(0.05, 1e4), st.integers(1, 100)))
def test_any_positive_softcap_is_accepted(shape, softcap):
    q, k, v = _make(shape)
    out = ff.flash_attn_fwd(q, k, v, causal=shape["causal"], softcap=softcap)
    expected, _ = reference_attention(q, k, v, causal=shape["causal"], softcap=float(softcap))
    assert_close_to_reference(out, expected, q.dtype)


@given(shapes(), st.integers(0, 5), st.integers(0, 5))
def test_a_window_reaching_every_key_is_no_window(shape, extra_left, extra_right):
    # From row i the band is i + offset - left .. i + offset + right: left >= seqlen_k - 1 and
    # right >= seqlen_q - 1 cover keys 0 .. seqlen_k - 1 from every row.
    q, k, v = _make(shape)
    window = (
        max(shape["seqlen_k"] - 1, 0) + extra_left,
        max(shape["seqlen_q"] - 1, 0) + extra_right,
    )
    causal = shape["causal"]
    windowed, windowed_lse = ff.flash_attn_fwd(
        q, k, v, causal=causal, window_size=window, return_lse=True
    )
    plain, plain_lse = ff.flash_attn_fwd(q, k, v, causal=causal, return_lse=True)
    _assert_same_answer(windowed, windowed_lse, plain, plain_lse)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", [(6, 4), (2**31 - 1, 2**31 - 1), (2**40, 2**40)])
def test_a_window_wider_than_the_call_is_described_and_passed_on_as_none(
    window, causal, monkeypatch, fresh_discovery
):
    # 4 queries over 6 keys: left >= 6 or right >= 4 reaches past every key, so the call is
    # plain (the plain kernels run it) and no edge beyond int32 reaches the plugin; the
    # adapter over the fake binding shows what the binding receives.
    from forge_flash import dispatch
    from forge_flash.validation import Options, check_fwd, with_options

    from helpers.fake_plugin import CpuCudaBackend, FakeBinding

    q, k, v = (torch.randn(2, n, 4, HEAD_DIM, dtype=torch.float16) for n in (4, 6, 6))
    call = with_options(check_fwd(q, k, v, None), Options(None, causal, window), q)
    assert call.window == ((-1, 0) if causal else (-1, -1)) and call.plain
    binding = FakeBinding()
    monkeypatch.setattr("forge_flash.discovery._active", CpuCudaBackend(binding))
    out = ff.flash_attn_fwd(q, k, v, causal=causal, window_size=window)
    (launch,) = binding.calls
    assert launch["options"][:2] == ((-1, 0) if causal else (-1, -1))
    assert dispatch.explain(call) == "cuda"  # the kernels, no fallback
    expected, _ = reference_attention(q, k, v, causal=causal)
    assert_close_to_reference(out, expected, q.dtype)


@given(shapes())
def test_a_huge_softcap_is_no_softcap(shape):
    # 1e6 * tanh(x / 1e6) differs from x by about x**3 / 3e12: far below any rounding here.
    q, k, v = _make(shape)
    out, lse = ff.flash_attn_fwd(q, k, v, causal=shape["causal"], softcap=1e6, return_lse=True)
    expected_out, expected_lse = reference_attention(q, k, v, causal=shape["causal"])
    assert_close_to_reference(out, expected_out, q.dtype)
    assert_lse_close(lse, expected_lse)


@given(shapes(), st.booleans())
def test_zero_alibi_slopes_are_no_alibi(shape, per_sequence):
    q, k, v = _make(shape)
    slopes = _f32(shape["batch"], shape["heads"]) if per_sequence else _f32(shape["heads"])
    causal = shape["causal"]
    out, lse = ff.flash_attn_fwd(q, k, v, causal=causal, alibi_slopes=slopes, return_lse=True)
    plain, plain_lse = ff.flash_attn_fwd(q, k, v, causal=causal, return_lse=True)
    _assert_same_answer(out, lse, plain, plain_lse)


@given(shapes())
def test_sinks_of_minus_infinity_are_no_sinks(shape):
    q, k, v = _make(shape)
    sinks = torch.full((shape["heads"],), float("-inf"))
    causal = shape["causal"]
    out, lse = ff.flash_attn_fwd(q, k, v, causal=causal, sinks=sinks, return_lse=True)
    plain, plain_lse = ff.flash_attn_fwd(q, k, v, causal=causal, return_lse=True)
    _assert_same_answer(out, lse, plain, plain_lse)


def _assert_same_answer(out, lse, plain, plain_lse):
    """The same math by maybe another route: equal up to one rounding of the output dtype
    (bit-equality would pin down how the implementation orders its arithmetic)."""
    atol, rtol = (1e-6, 1e-6) if out.dtype == torch.float32 else OUT_TOLERANCE[out.dtype]
    torch.testing.assert_close(out, plain, atol=atol, rtol=rtol)
    assert torch.equal(torch.isneginf(lse), torch.isneginf(plain_lse))
    torch.testing.assert_close(lse, plain_lse, atol=1e-5, rtol=1e-5)


# Slopes and sinks without subnormals: hypothesis cannot draw them once torch's CPU inductor
# kernels (built with -ffast-math, tests/integration/test_compile_cpu.py) set flush-to-zero.
_slope = st.floats(0.0, 2.0, width=32, allow_subnormal=False)
_sink = st.floats(-5.0, 5.0, width=32, allow_subnormal=False)


@st.composite
def options(draw, batch, heads):
    chosen = {}
    if draw(st.booleans()):
        chosen["window_size"] = (draw(edges), draw(edges))
    if draw(st.booleans()):
        chosen["softcap"] = draw(st.floats(0.5, 20.0))
    if draw(st.booleans()):
        shape = (batch, heads) if draw(st.booleans()) else (heads,)
        values = draw(st.lists(_slope, min_size=math.prod(shape), max_size=math.prod(shape)))
        chosen["alibi_slopes"] = torch.tensor(values, dtype=torch.float32).view(shape)
    if draw(st.booleans()):
        values = draw(st.lists(_sink, min_size=heads, max_size=heads))
        chosen["sinks"] = torch.tensor(values, dtype=torch.float32)
    return chosen


@settings(max_examples=60)
@given(st.data())
def test_any_combination_matches_the_reference(data):
    shape = data.draw(shapes())
    chosen = data.draw(options(shape["batch"], shape["heads"]))
    q, k, v = _make(shape)
    causal = shape["causal"]
    expected_out, expected_lse = reference_attention(q, k, v, causal=causal, **chosen)
    out, lse = ff.flash_attn_fwd(q, k, v, causal=causal, return_lse=True, **chosen)
    assert_close_to_reference(out, expected_out, q.dtype)
    assert_lse_close(lse, expected_lse)
    plain = ff.flash_attn_fwd(q, k, v, causal=causal, **chosen)
    assert_close_to_reference(plain, expected_out, q.dtype, "out without lse")
