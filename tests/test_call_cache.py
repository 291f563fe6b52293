"""Repeated calls skip validation and planning (forge_flash.call_cache), and still get it right.

The real CUDA adapter runs against the pointer-level fake binding on CPU tensors, so every
result is checked against the float64 reference computed from what the binding was handed.
"""

from __future__ import annotations

import pytest
import torch

import forge_flash as ff
from forge_flash import api, call_cache, projections

from helpers.fake_plugin import CpuCudaBackend, FakeBinding
from helpers.reference import reference_attention, reference_varlen
from helpers.tolerance import assert_close_to_reference


@pytest.fixture
def binding(monkeypatch, fresh_discovery):
    fake = FakeBinding()
    monkeypatch.setattr("forge_flash.discovery._active", CpuCudaBackend(fake))
    return fake


@pytest.fixture
def full_checks(monkeypatch):
    """Counts the full validations of each entry point."""
    counts = {"decode": 0, "fwd": 0, "flat": 0}

    def counting(name, check):
        def wrapped(*args, **kwargs):
            counts[name] += 1
            return check(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(api, "check_decode", counting("decode", api.check_decode))
    monkeypatch.setattr(api, "check_fwd", counting("fwd", api.check_fwd))
    monkeypatch.setattr(projections, "check_flat", counting("flat", projections.check_flat))
    return counts


def _decode_inputs(gen, batch=3, heads=8, kv_heads=2, dim=64, cache=40, dtype=torch.float16):
    q = torch.randn(batch, heads, dim, generator=gen).to(dtype)
    k = torch.randn(batch, cache, kv_heads, dim, generator=gen).to(dtype)
    v = torch.randn(batch, cache, kv_heads, dim, generator=gen).to(dtype)
    lengths = torch.randint(1, cache + 1, (batch,), generator=gen, dtype=torch.int32)
    return q, k, v, lengths


def _expected_decode(q, k, v, lengths):
    out, lse = reference_attention(q.unsqueeze(1), k, v, key_lengths=lengths.tolist())
    return out.squeeze(1), lse.squeeze(-1)


def test_repeated_decode_calls_are_validated_once_and_stay_right(binding, full_checks, gen):
    for _ in range(4):  # new data every step, one signature
        q, k, v, lengths = _decode_inputs(gen)
        out, lse = ff.batched_decode_attention(q, k, v, lengths, return_lse=True)
        expected, expected_lse = _expected_decode(q, k, v, lengths)
        assert_close_to_reference(out, expected, torch.float16)
        torch.testing.assert_close(lse, expected_lse.float(), atol=1e-3, rtol=1e-3)
        call = binding.calls[-1]
        assert (call["q"], call["k"], call["out"]) == (q.data_ptr(), k.data_ptr(), out.data_ptr())
        assert call["seqused_k"] == lengths.data_ptr()
    assert full_checks["decode"] == 1
    assert len(binding.calls) == 4


def test_a_new_signature_is_validated_again(binding, full_checks, gen):
    q, k, v, lengths = _decode_inputs(gen)
    ff.batched_decode_attention(q, k, v, lengths)
    ff.batched_decode_attention(q, k[:, :32], v[:, :32], lengths.clamp(max=32))  # new shape
    ff.batched_decode_attention(q, k, v, lengths, softmax_scale=0.5)  # new option
    ff.batched_decode_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), lengths)  # new dtype
    assert full_checks["decode"] == 4
    ff.batched_decode_attention(q, k, v, lengths, softmax_scale=0.5)
    assert full_checks["decode"] == 4


def test_value_checks_still_run_on_repeated_calls(binding, gen):
    q, k, v, lengths = _decode_inputs(gen, cache=40)
    ff.batched_decode_attention(q, k, v, lengths)
    calls = len(binding.calls)
    with pytest.raises(ValueError, match=r"^cache_seqlens must lie in \[0, max_cache_len = 40\]"):
        ff.batched_decode_attention(q, k, v, torch.tensor([1, 41, 2], dtype=torch.int32))
    assert len(binding.calls) == calls  # refused before any launch


def test_option_types_are_part_of_the_signature(binding, gen):
    q, k, v, lengths = _decode_inputs(gen)
    ff.batched_decode_attention(q, k, v, lengths, return_lse=True)
    with pytest.raises(TypeError, match=r"^return_lse must be a bool; got 1"):
        ff.batched_decode_attention(q, k, v, lengths, return_lse=1)


def test_window_edges_equal_to_known_ones_but_not_ints_are_still_refused(binding, gen):
    # (4, False) == (4, 0) and (4.0, 0) == (4, 0) as values, but only ints are windows.
    q, k, v, lengths = _decode_inputs(gen)
    for _ in range(2):
        ff.batched_decode_attention(q, k, v, lengths, window_size=(4, 0))
        ff.flash_attn_fwd(q.unsqueeze(1), k, v, window_size=(-1, 0), causal=True)
    for bad in ((4, False), (4.0, 0)):
        with pytest.raises(TypeError, match=r"^window_size must hold ints"):
            ff.batched_decode_attention(q, k, v, lengths, window_size=bad)
    with pytest.raises(TypeError, match=r"^window_size must hold ints"):
        ff.flash_attn_fwd(q.unsqueeze(1), k, v, window_size=(-1, False), causal=True)


def test_a_window_edge_held_in_a_tensor_is_read_on_every_call(binding, gen):
    # A 0-dim integer tensor is an index (operator.index); the same tensor object with a new
    # value must not be taken for the window of the first call.
    q, k, v, lengths = _decode_inputs(gen)
    left = torch.tensor(6)
    for value in (6, 1):
        left.fill_(value)
        out = ff.batched_decode_attention(q, k, v, lengths, window_size=(left, 0))
        expected, _ = reference_attention(
            q.unsqueeze(1), k, v, key_lengths=lengths.tolist(), window_size=(value, 0)
        )
        assert_close_to_reference(out, expected.squeeze(1), torch.float16)


def test_head_counts_held_in_tensors_are_read_on_every_call(binding, gen):
    # An int argument may come as a 0-dim integer tensor (an index) whose value changes in
    # place: the same objects must not be taken for the first call's split of the features.
    q = torch.randn(2, 1, 128, generator=gen).half()
    k = torch.randn(2, 5, 128, generator=gen).half()
    v = torch.randn(2, 5, 128, generator=gen).half()
    heads, kv_heads, dim = torch.tensor(4), torch.tensor(4), torch.tensor(32)
    for split in ((4, 32), (4, 32), (2, 64)):
        heads.fill_(split[0])
        kv_heads.fill_(split[0])
        dim.fill_(split[1])
        out = ff.multi_head_attention(q, k, v, heads, kv_heads, dim)
        expected, _ = reference_attention(*(x.unflatten(-1, split) for x in (q, k, v)))
        assert_close_to_reference(out.unflatten(-1, split), expected, torch.float16)


@pytest.mark.parametrize("size_one_stride", [128, 7])
def test_repeated_calls_return_the_same_layout_as_the_first(binding, gen, size_one_stride):
    # The seqlen_q dimension has size 1, so its stride is free: whatever it is, the output is
    # contiguous, on the first call and on the repeated (prepared) ones.
    base = torch.randn(2, 4, 32, generator=gen).half()
    q = base.as_strided((2, 1, 4, 32), (128, size_one_stride, 32, 1))
    k = torch.randn(2, 9, 2, 32, generator=gen).half()
    v = torch.randn(2, 9, 2, 32, generator=gen).half()
    expected, _ = reference_attention(q, k, v)
    for _ in range(3):
        out = ff.flash_attn_fwd(q, k, v)
        assert out.stride() == (128, 128, 32, 1)
        assert_close_to_reference(out, expected, torch.float16)


def test_a_misaligned_view_of_a_known_signature_takes_the_full_path(binding, gen):
    q, k, v, lengths = _decode_inputs(gen)
    ff.batched_decode_attention(q, k, v, lengths)
    # Same shape and strides, base 8 bytes past a 16-byte boundary: the kernels need a copy.
    storage = torch.empty(k.numel() + 8, dtype=k.dtype)
    shifted = storage[4 : 4 + k.numel()].view(k.shape).copy_(k)
    assert shifted.stride() == k.stride() and shifted.data_ptr() % 16
    out = ff.batched_decode_attention(q, shifted, v, lengths)
    assert binding.calls[-1]["k"] != shifted.data_ptr()  # an aligned copy went in
    expected, _ = _expected_decode(q, k, v, lengths)
    assert_close_to_reference(out, expected, torch.float16)


def test_repeated_fwd_calls_with_out_write_into_it(binding, full_checks, gen):
    q = torch.randn(2, 5, 4, 32, generator=gen).half()
    k = torch.randn(2, 9, 2, 32, generator=gen).half()
    v = torch.randn(2, 9, 2, 32, generator=gen).half()
    out = torch.empty_like(q)
    for causal in (True, True, False, False):
        result, lse = ff.flash_attn_fwd(q, k, v, causal=causal, out=out, return_lse=True)
        assert result is out
        expected, expected_lse = reference_attention(q, k, v, causal=causal)
        assert_close_to_reference(out, expected, torch.float16)
        torch.testing.assert_close(lse, expected_lse.float(), atol=1e-3, rtol=1e-3)
    assert full_checks["fwd"] == 2  # once per causal value


def test_repeated_model_layer_calls_are_validated_once(binding, full_checks, gen):
    heads, kv_heads, dim = 4, 2, 32
    for _ in range(3):
        q = torch.randn(2, 1, heads * dim, generator=gen).half()
        k = torch.randn(2, 7, kv_heads * dim, generator=gen).half()
        v = torch.randn(2, 7, kv_heads * dim, generator=gen).half()
        out = ff.multi_head_attention(q, k, v, heads, kv_heads, dim, is_causal=True)
        expected, _ = reference_attention(
            q.unflatten(-1, (heads, dim)),
            k.unflatten(-1, (kv_heads, dim)),
            v.unflatten(-1, (kv_heads, dim)),
            causal=True,
        )
        assert out.shape == q.shape
        assert_close_to_reference(out.unflatten(-1, (heads, dim)), expected, torch.float16)
    assert full_checks["flat"] == 1


def test_float32_model_layer_calls_are_cast_on_every_call(binding, full_checks, gen):
    # The auto-cast depends on the values (float16 range), so these calls have no shortcut.
    q = torch.randn(1, 3, 64, generator=gen)
    for _ in range(2):
        out = ff.multi_head_attention(q, q, q, 2, 2, 32)
        assert out.dtype == torch.float32
    assert full_checks["flat"] == 2


def test_calls_without_a_signature_take_the_full_path():
    backend = object()
    assert call_cache.signature(None, (torch.zeros(1),), ()) is None  # before discovery
    assert call_cache.signature(backend, ([1.0],), ()) is None
    unhashable = call_cache.signature(backend, (torch.zeros(1),), ([0.5],))
    assert call_cache.lookup(unhashable) is None
    assert not call_cache.needs_preparing(unhashable)
    key = call_cache.signature(backend, (torch.zeros(1), None), (0.5,))
    assert call_cache.lookup(key) is None and call_cache.needs_preparing(key)


def test_unhashable_options_still_get_their_error(binding, gen):
    q, k, v, lengths = _decode_inputs(gen)
    with pytest.raises(TypeError, match=r"^softmax_scale must be a float or None; got \[0.5\]"):
        ff.batched_decode_attention(q, k, v, lengths, softmax_scale=[0.5])


def test_options_that_cannot_be_compared_still_get_their_error(binding, gen):
    # Compared with the last signature found, a two-element tensor has no truth value.
    q, k, v, lengths = _decode_inputs(gen)
    for _ in range(2):
        ff.batched_decode_attention(q, k, v, lengths, softmax_scale=0.5)
    with pytest.raises(TypeError, match=r"^softmax_scale must be a float or None; got tensor"):
        ff.batched_decode_attention(q, k, v, lengths, softmax_scale=torch.tensor([0.5, 0.5]))


def test_the_table_is_bounded(monkeypatch):
    monkeypatch.setattr(call_cache, "MAX_ENTRIES", 3)
    call_cache.clear()
    for i in range(7):
        call_cache.remember(("key", i), None)
        assert len(call_cache._prepared) <= 3
    call_cache.clear()


# -- varlen calls: kept only where their checks read no device values -------------------------

_LENGTHS = [(5, 9), (1, 1), (7, 4)]  # (seqlen_q, seqlen_k) per sequence


def _varlen_inputs(gen, heads=4, kv_heads=2, dim=64, dtype=torch.float16):
    total_q, total_k = (sum(n[i] for n in _LENGTHS) for i in (0, 1))
    q = torch.randn(total_q, heads, dim, generator=gen).to(dtype)
    k = torch.randn(total_k, kv_heads, dim, generator=gen).to(dtype)
    v = torch.randn(total_k, kv_heads, dim, generator=gen).to(dtype)
    return q, k, v


def _offsets(lengths):
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)


CU_Q, CU_K = _offsets([n for n, _ in _LENGTHS]), _offsets([n for _, n in _LENGTHS])


def _varlen_call(q, k, v, cu_k=CU_K):
    return ff.flash_attn_varlen_fwd(q, k, v, CU_Q, cu_k, 7, 9, causal=True, return_lse=True)


@pytest.fixture
def varlen_checks(monkeypatch):
    """Counts check_varlen's full validations."""
    count = [0]
    check = api.check_varlen

    def counting(*args, **kwargs):
        count[0] += 1
        return check(*args, **kwargs)

    monkeypatch.setattr(api, "check_varlen", counting)
    return count


def test_varlen_calls_that_read_no_device_values_are_validated_once_and_stay_right(
    binding, varlen_checks, gen, monkeypatch
):
    # As for CUDA tensors under FORGE_FLASH_CHECK_DEVICE_VALUES=0 (CPU values are always read).
    monkeypatch.setattr(api, "device_values_checked", lambda device: False)
    for _ in range(3):  # new data every call, one signature
        q, k, v = _varlen_inputs(gen)
        out, lse = _varlen_call(q, k, v)
        expected, expected_lse = reference_varlen(
            q, k, v, [n for n, _ in _LENGTHS], [n for _, n in _LENGTHS], causal=True
        )
        assert_close_to_reference(out, expected, torch.float16)
        torch.testing.assert_close(lse, expected_lse.float(), atol=1e-3, rtol=1e-3)
        call = binding.calls[-1]
        assert (call["q"], call["k"], call["out"]) == (q.data_ptr(), k.data_ptr(), out.data_ptr())
    assert varlen_checks[0] == 1
    assert len(binding.calls) == 3


def test_varlen_calls_whose_checks_read_values_are_checked_on_every_call(
    binding, varlen_checks, gen
):
    q, k, v = _varlen_inputs(gen)
    for _ in range(2):
        _varlen_call(q, k, v)
    assert varlen_checks[0] == 2
    calls = len(binding.calls)
    bad = CU_K.clone()
    bad[-1] -= 1  # no longer total_k
    with pytest.raises(ValueError, match=r"^cu_seqlens_k must end at total_k"):
        _varlen_call(q, k, v, bad)
    assert len(binding.calls) == calls  # refused before any launch


def test_a_varlen_call_kept_without_value_checks_is_not_reused_once_they_run(
    binding, gen, monkeypatch
):
    q, k, v = _varlen_inputs(gen)
    with monkeypatch.context() as patch:
        patch.setattr(api, "device_values_checked", lambda device: False)
        _varlen_call(q, k, v)
    bad = CU_K.clone()
    bad[-1] -= 1
    with pytest.raises(ValueError, match=r"^cu_seqlens_k must end at total_k"):
        _varlen_call(q, k, v, bad)
