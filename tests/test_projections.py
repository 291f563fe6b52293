"""The flat-projection API (forge_flash.projections): the backend trait call, the float32
cast for the kernels, and the model-layer routing helper."""

from __future__ import annotations

import pytest
import torch

import forge_flash as ff
from forge_flash import projections
from forge_flash.backends.naive import NAIVE, NaiveBackend

from helpers.reference import reference_flat
from helpers.tolerance import assert_close_to_reference


def _flat(batch, seqlen_q, seqlen_k, heads, kv_heads, head_dim, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    lead = () if batch is None else (batch,)
    q = torch.randn(*lead, seqlen_q, heads * head_dim, generator=gen).to(dtype)
    k = torch.randn(*lead, seqlen_k, kv_heads * head_dim, generator=gen).to(dtype)
    v = torch.randn(*lead, seqlen_k, kv_heads * head_dim, generator=gen).to(dtype)
    return q, k, v


@pytest.mark.parametrize("entry", [ff.attention_fwd, ff.multi_head_attention])
@pytest.mark.parametrize("batch", [None, 1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_flat_projections_match_the_reference(entry, batch, dtype, causal):
    q, k, v = _flat(batch, 19, 23, 8, 2, 32, dtype)
    out = entry(q, k, v, 8, 2, 32, 0.2, causal)
    assert out.shape == q.shape and out.dtype == q.dtype
    expected = reference_flat(q, k, v, 8, 2, 32, causal=causal, scale=0.2)
    assert_close_to_reference(out, expected, dtype)


def test_default_scale_and_keyword_arguments():
    q, k, v = _flat(2, 5, 5, 4, 4, 16)
    out = ff.attention_fwd(q, k, v, num_heads=4, num_kv_heads=4, head_dim=16, is_causal=True)
    assert_close_to_reference(out, reference_flat(q, k, v, 4, 4, 16, causal=True), torch.float32)


def test_multi_head_attention_goes_through_the_active_backend(monkeypatch, fresh_discovery):
    calls = []

    class Recording(NaiveBackend):
        name = "recording"

        def run(self, call, t):
            calls.append((tuple(t.q.shape), tuple(t.k.shape), call.causal))
            super().run(call, t)

    monkeypatch.setattr("forge_flash.discovery._active", Recording())
    q, k, v = _flat(2, 7, 9, 6, 3, 8)
    out = ff.multi_head_attention(q, k, v, 6, 3, 8, None, True)
    assert calls == [((2, 7, 6, 8), (2, 9, 3, 8), True)]
    expected = reference_flat(q, k, v, 6, 3, 8, causal=True)
    assert_close_to_reference(out, expected, torch.float32)


class _KernelLike(NaiveBackend):
    """Pretends its kernels take half precision, recording the dtype each call ran in."""

    name = "kernel-like"

    def __init__(self):
        self.dtypes = []

    def unsupported(self, call):
        return None if call.dtype in (torch.float16, torch.bfloat16) else "half precision only"

    def run(self, call, t):
        self.dtypes.append(t.q.dtype)
        super().run(call, t)


@pytest.mark.parametrize(
    "cast_dtype,expected", [(None, torch.float16), (torch.float16, torch.float16),
                            (torch.bfloat16, torch.bfloat16)]
)  # fmt: skip
def test_float32_is_cast_for_kernels_and_back(cast_dtype, expected):
    backend = _KernelLike()
    q, k, v = _flat(2, 9, 9, 4, 2, 16)
    out = ff.attention_fwd(q, k, v, 4, 2, 16, None, True, cast_dtype=cast_dtype, backend=backend)
    assert backend.dtypes == [expected]
    assert out.dtype == torch.float32
    # The answer is that of the half inputs, computed and returned in float32.
    half = ff.attention_fwd(q.to(expected), k.to(expected), v.to(expected), 4, 2, 16, None, True)
    torch.testing.assert_close(out, half.float())


def test_float32_beyond_float16_range_uses_bfloat16_and_stays_finite():
    backend = _KernelLike()
    q, k, v = _flat(1, 6, 6, 2, 2, 16)
    v = v * 1e6  # 1e6 > float16 max (65504): a float16 cast would give inf
    out = ff.attention_fwd(q, k, v, 2, 2, 16, None, False, backend=backend)
    assert backend.dtypes == [torch.bfloat16]
    assert torch.isfinite(out).all()
    expected = reference_flat(q, k, v, 2, 2, 16, causal=False)
    assert_close_to_reference(out / 1e6, expected / 1e6, torch.bfloat16)


def test_naive_backend_keeps_float32():
    q, k, v = _flat(1, 4, 4, 2, 2, 16)
    call = projections.check_flat(q, k, v, 2, 2, 16)
    assert projections.kernel_cast(call, torch.float16, (q, k, v), NAIVE) is call
    half = projections.check_flat(q.half(), k.half(), v.half(), 2, 2, 16)
    assert projections.kernel_cast(half, torch.float16, (q, k, v), _KernelLike()) is half


def test_routing_rule():
    assert ff.attention_path(batch=4, seqlen_q=1) == "batched_decode"
    assert ff.attention_path(batch=1, seqlen_q=1) == "multi_head_attention"
    assert ff.attention_path(batch=4, seqlen_q=16) == "multi_head_attention"
    assert ff.attention_path(batch=1, seqlen_q=300) == "multi_head_attention"


def _spy(monkeypatch, name):
    calls = []
    original = getattr(projections, name)

    def spy(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(projections, name, spy)
    return calls


def test_decoder_attention_sends_batched_decode_to_the_decode_path(monkeypatch):
    decode_calls = _spy(monkeypatch, "batched_decode_attention")
    mha_calls = _spy(monkeypatch, "multi_head_attention")
    q, k, v = _flat(3, 1, 12, 8, 2, 16)
    lengths = torch.tensor([12, 5, 0], dtype=torch.int32)
    out = ff.decoder_attention(q, k, v, 8, 2, 16, cache_seqlens=lengths)
    assert decode_calls == ["batched_decode_attention"] and mha_calls == []
    assert out.shape == q.shape
    for b, length in enumerate(lengths.tolist()):
        expected = reference_flat(q[b : b + 1], k[b : b + 1, :length], v[b : b + 1, :length],
                                  8, 2, 16, causal=True)  # fmt: skip
        if length == 0:
            expected = torch.zeros_like(expected)
        assert_close_to_reference(out[b : b + 1], expected, torch.float32)


def test_decoder_attention_full_caches_by_default(monkeypatch):
    q, k, v = _flat(2, 1, 7, 4, 1, 8)
    out = ff.decoder_attention(q, k, v, 4, 1, 8)
    assert_close_to_reference(out, reference_flat(q, k, v, 4, 1, 8, causal=True), torch.float32)


@pytest.mark.parametrize("seqlen_q", [1, 17])
def test_decoder_attention_sends_single_sequence_and_prefill_to_multi_head_attention(
    monkeypatch, seqlen_q
):
    decode_calls = _spy(monkeypatch, "batched_decode_attention")
    mha_calls = _spy(monkeypatch, "multi_head_attention")
    batch = 1 if seqlen_q == 1 else 3
    q, k, v = _flat(batch, seqlen_q, 20, 4, 2, 16)
    out = ff.decoder_attention(q, k, v, 4, 2, 16)
    assert mha_calls == ["multi_head_attention"] and decode_calls == []
    assert_close_to_reference(out, reference_flat(q, k, v, 4, 2, 16, causal=True), torch.float32)


def test_decoder_attention_with_cache_lengths_takes_batched_decode_even_for_one(monkeypatch):
    decode_calls = _spy(monkeypatch, "batched_decode_attention")
    q, k, v = _flat(1, 1, 20, 4, 2, 16)
    lengths = torch.tensor([6], dtype=torch.int32)
    out = ff.decoder_attention(q, k, v, 4, 2, 16, cache_seqlens=lengths)
    assert decode_calls == ["batched_decode_attention"]
    expected = reference_flat(q, k[:, :6], v[:, :6], 4, 2, 16, causal=True)
    assert_close_to_reference(out, expected, torch.float32)


def test_decoder_attention_refuses_cache_lengths_for_prefill():
    q, k, v = _flat(2, 4, 20, 4, 2, 16)
    with pytest.raises(ValueError, match=r"^cache_seqlens applies only to decode"):
        ff.decoder_attention(
            q, k, v, 4, 2, 16, cache_seqlens=torch.tensor([3, 4], dtype=torch.int32)
        )
    with pytest.raises(ValueError, match=r"^q must have 3 dimensions"):
        ff.decoder_attention(q[0], k[0], v[0], 4, 2, 16)
