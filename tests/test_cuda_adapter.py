"""The CUDA backend adapter against a pointer-level fake of the binding, on CPU tensors.

The adapter is pointed at CPU memory (``device_type = "cpu"``); the fake binding reads the
tensors back from the raw pointers and strides it receives and computes the attention, so
these tests check the pointers, strides, sizes, flags, the workspace protocol, the copies made
for layouts the kernels cannot take, and which calls stay on the naive path.
"""

from __future__ import annotations

import types

import pytest
import torch

import forge_flash as ff
from forge_flash import validation

from helpers.fake_plugin import STREAM, CpuCudaBackend, FakeBinding
from helpers.reference import reference_attention, reference_varlen
from helpers.tolerance import assert_close_to_reference, assert_lse_close


@pytest.fixture
def binding(monkeypatch, fresh_discovery):
    fake = FakeBinding()
    monkeypatch.setattr("forge_flash.discovery._active", CpuCudaBackend(fake))
    return fake


def _qkv(batch, seqlen_q, seqlen_k, heads, heads_k, head_dim, dtype=torch.float16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, seqlen_q, heads, head_dim, generator=gen).to(dtype)
    k = torch.randn(batch, seqlen_k, heads_k, head_dim, generator=gen).to(dtype)
    v = torch.randn(batch, seqlen_k, heads_k, head_dim, generator=gen).to(dtype)
    return q, k, v


def _contiguous_strides(shape):
    return torch.empty(shape).stride()[:3]


@pytest.mark.parametrize("dtype,code", [(torch.float16, 0), (torch.bfloat16, 1)], ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_fwd_passes_pointers_strides_and_sizes(binding, dtype, code, causal):
    q, k, v = _qkv(2, 5, 7, 8, 2, 64, dtype)
    out, lse = ff.flash_attn_fwd(q, k, v, causal=causal, softmax_scale=0.125, return_lse=True)
    (call,) = binding.calls
    assert (call["q"], call["k"], call["v"]) == (q.data_ptr(), k.data_ptr(), v.data_ptr())
    assert (call["out"], call["lse"], call["seqused_k"]) == (out.data_ptr(), lse.data_ptr(), 0)
    assert call["strides"] == (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *out.stride()[:3])
    assert (call["batch"], call["seqlen_q"], call["seqlen_k"]) == (2, 5, 7)
    assert (call["num_heads"], call["num_heads_k"], call["head_dim"]) == (8, 2, 64)
    assert (call["softmax_scale"], call["causal"], call["dtype"]) == (0.125, causal, code)
    assert (call["workspace"], call["workspace_bytes"]) == (0, 0)
    assert (call["device"], call["stream"]) == (0, STREAM)
    expected_out, expected_lse = reference_attention(q, k, v, scale=0.125, causal=causal)
    assert_close_to_reference(out, expected_out, dtype)
    assert_lse_close(lse, expected_lse)


def test_no_lse_passes_a_null_pointer(binding):
    q, k, v = _qkv(1, 3, 3, 2, 2, 32)
    ff.flash_attn_fwd(q, k, v)
    assert binding.calls[0]["lse"] == 0


def test_views_of_a_packed_projection_go_to_the_kernels_without_copies(binding):
    qkv = torch.randn(2, 9, 3, 4, 64).half()
    q, k, v = qkv.unbind(dim=2)
    out = ff.flash_attn_fwd(q, k, v, causal=True)
    (call,) = binding.calls
    assert (call["q"], call["k"], call["v"]) == (q.data_ptr(), k.data_ptr(), v.data_ptr())
    assert call["strides"][:9] == (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3])
    assert_close_to_reference(out, reference_attention(q, k, v, causal=True)[0], torch.float16)


def test_layouts_the_kernels_cannot_take_are_copied(binding):
    q, k, v = _qkv(2, 6, 6, 4, 4, 16)
    padded = torch.randn(2, 6, 4, 20).half()[..., :16]  # head stride 20: not a multiple of 8
    q = padded.copy_(q)
    shifted = torch.randn(2 * 6 * 4 * 16 + 1).half()[1:].view(2, 6, 4, 16)  # 2-byte offset
    k = shifted.copy_(k)
    assert q.stride(2) % 8 and k.data_ptr() % 16
    out = ff.flash_attn_fwd(q, k, v)
    (call,) = binding.calls
    assert call["q"] != q.data_ptr() and call["k"] != k.data_ptr()
    assert call["v"] == v.data_ptr()
    assert call["strides"][:6] == (*_contiguous_strides(q.shape), *_contiguous_strides(k.shape))
    assert_close_to_reference(out, reference_attention(q, k, v)[0], torch.float16)


def test_out_the_kernels_cannot_take_receives_the_result_by_copy(binding):
    q, k, v = _qkv(1, 4, 4, 2, 2, 16)
    out = torch.full((1, 4, 2, 20), float("nan")).half()[..., :16]
    returned = ff.flash_attn_fwd(q, k, v, out=out)
    assert returned is out
    assert binding.calls[0]["out"] != out.data_ptr()
    assert_close_to_reference(out, reference_attention(q, k, v)[0], torch.float16)


def test_size_one_dimensions_with_odd_strides_need_no_copy(binding):
    q, k, v = _qkv(1, 1, 5, 4, 4, 16)
    odd = torch.empty(64).half().as_strided((1, 1, 4, 16), (3, 5, 16, 1)).copy_(q)
    out = ff.flash_attn_fwd(odd, k, v)
    (call,) = binding.calls
    assert call["q"] == odd.data_ptr()
    assert call["strides"][:3] == (64, 64, 16)
    assert_close_to_reference(out, reference_attention(q, k, v)[0], torch.float16)


def test_workspace_protocol(binding):
    binding.workspace_needed = 4096
    q, k, v = _qkv(1, 1, 300, 8, 2, 128)
    out = ff.flash_attn_fwd(q, k, v)
    first, second = binding.calls
    assert (first["workspace"], first["workspace_bytes"]) == (0, 0)
    assert second["workspace"] != 0 and second["workspace_bytes"] == 4096
    assert second["workspace"] % 16 == 0
    assert_close_to_reference(out, reference_attention(q, k, v)[0], torch.float16)


def test_workspace_size_is_remembered_per_shape(binding):
    binding.workspace_needed = 4096
    q, k, v = _qkv(1, 1, 300, 8, 2, 128)
    ff.flash_attn_fwd(q, k, v)
    assert len(binding.calls) == 2
    binding.calls.clear()
    q2, k2, v2 = _qkv(1, 1, 300, 8, 2, 128)  # same shape, new tensors: one call, workspace given
    out = ff.flash_attn_fwd(q2, k2, v2)
    (call,) = binding.calls
    assert call["workspace"] != 0 and call["workspace_bytes"] == 4096
    assert_close_to_reference(out, reference_attention(q2, k2, v2)[0], torch.float16)
    binding.calls.clear()
    ff.flash_attn_fwd(*_qkv(1, 1, 301, 8, 2, 128))  # another shape asks again
    assert [c["workspace_bytes"] for c in binding.calls] == [0, 4096]


def test_a_binding_that_asks_again_is_an_error(binding):
    binding.workspace_needed, binding.ask_twice = 64, True
    q, k, v = _qkv(1, 1, 3, 2, 2, 16)
    with pytest.raises(RuntimeError, match="asked for 65 workspace bytes"):
        ff.flash_attn_fwd(q, k, v)


def test_inputs_the_kernels_do_not_take_run_on_the_naive_path(binding):
    q, k, v = (x.float() for x in _qkv(1, 4, 4, 2, 2, 64))  # float32: kernels take half only
    out = ff.flash_attn_fwd(q, k, v, causal=True)
    assert binding.calls == []
    assert_close_to_reference(out, reference_attention(q, k, v, causal=True)[0], q.dtype)
    # An odd head_dim as well: still the dtype's objection, so still the naive path.
    q, k, v = (x[..., :36].contiguous() for x in (q, k, v))
    ff.flash_attn_fwd(q, k, v, causal=True)
    assert binding.calls == []


# A head_dim that is not a multiple of 8 runs on the kernels on zero-padded copies of q, k and v
# (FlashAttention-2 pads the same way): the binding sees the next multiple of 8, the scale of
# the true head_dim, and the answer is the call's own; the caller's tensors are left alone.
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim,padded", [(36, 40), (59, 64), (111, 112)])
def test_an_odd_head_dim_runs_on_the_kernels_zero_padded(binding, head_dim, padded, causal, dtype):
    q, k, v = _qkv(2, 5, 7, 4, 2, head_dim, dtype)
    before = [x.clone() for x in (q, k, v)]
    out, lse = ff.flash_attn_fwd(q, k, v, causal=causal, return_lse=True)
    (call,) = binding.calls
    assert (call["head_dim"], call["softmax_scale"]) == (padded, pytest.approx(head_dim**-0.5))
    assert out.shape == q.shape and out.is_contiguous()
    expected_out, expected_lse = reference_attention(q, k, v, causal=causal)
    assert_close_to_reference(out, expected_out, dtype)
    assert_lse_close(lse, expected_lse)
    assert all(torch.equal(x, y) for x, y in zip(before, (q, k, v), strict=True))


def test_an_odd_head_dim_fills_a_strided_out(binding):
    q, k, v = _qkv(1, 6, 6, 2, 2, 59)
    out_buf = torch.full((1, 2, 6, 59), float("nan"), dtype=torch.float16)
    got = ff.flash_attn_fwd(q, k, v, causal=True, out=out_buf.transpose(1, 2))
    assert got.data_ptr() == out_buf.data_ptr() and binding.calls[0]["head_dim"] == 64
    expected = reference_attention(q, k, v, causal=True)[0]
    assert_close_to_reference(out_buf.transpose(1, 2), expected, torch.float16)


def _varlen(head_dim, seed):
    """Three packed sequences (3, 0 and 5 queries over 4, 2 and 5 keys), 4 / 2 heads, float16:
    their lengths, q, k, v, cu_seqlens_q and cu_seqlens_k."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(8, 4, head_dim, generator=gen).half()
    k = torch.randn(11, 2, head_dim, generator=gen).half()
    v = torch.randn(11, 2, head_dim, generator=gen).half()
    cu_q = torch.tensor([0, 3, 3, 8], dtype=torch.int32)
    cu_k = torch.tensor([0, 4, 6, 11], dtype=torch.int32)
    return [3, 0, 5], [4, 2, 5], q, k, v, cu_q, cu_k


def test_an_odd_head_dim_over_varlen_and_a_decode_cache(binding):
    seqlens_q, seqlens_k, q, k, v, cu_q, cu_k = _varlen(111, seed=1)
    gen = torch.Generator().manual_seed(2)
    out, lse = ff.flash_attn_varlen_fwd(q, k, v, cu_q, cu_k, 5, 5, causal=True, return_lse=True)
    expected_out, expected_lse = reference_varlen(q, k, v, seqlens_q, seqlens_k, causal=True)
    assert_close_to_reference(out, expected_out, torch.float16)
    assert_lse_close(lse, expected_lse)
    q = torch.randn(3, 8, 59, generator=gen).bfloat16()
    k_cache = torch.randn(3, 40, 2, 59, generator=gen).bfloat16()
    v_cache = torch.randn(3, 40, 2, 59, generator=gen).bfloat16()
    lengths = torch.tensor([40, 0, 17], dtype=torch.int32)
    out = ff.batched_decode_attention(q, k_cache, v_cache, lengths)
    assert [c["head_dim"] for c in binding.calls] == [112, 64]
    assert binding.calls[1]["seqused_k"] == lengths.data_ptr()
    expected, _ = reference_attention(
        q.unsqueeze(1), k_cache, v_cache, key_lengths=lengths.tolist()
    )
    assert_close_to_reference(out, expected.squeeze(1), torch.bfloat16)


def test_empty_shapes_never_reach_the_binding(binding):
    q, k, v = _qkv(2, 3, 0, 4, 4, 16)
    out, lse = ff.flash_attn_fwd(q, k, v, return_lse=True)
    assert torch.equal(out, torch.zeros_like(out)) and torch.isneginf(lse).all()
    ff.flash_attn_fwd(*_qkv(0, 3, 3, 4, 4, 16))
    ff.flash_attn_fwd(*_qkv(2, 0, 3, 4, 4, 16))
    assert binding.calls == []


def test_varlen_passes_cu_seqlens_and_zero_batch_strides(binding):
    seqlens_q, seqlens_k, q, k, v, cu_q, cu_k = _varlen(32, seed=0)
    out, lse = ff.flash_attn_varlen_fwd(q, k, v, cu_q, cu_k, 5, 5, causal=True, return_lse=True)
    (call,) = binding.calls
    assert (call["cu_seqlens_q"], call["cu_seqlens_k"]) == (cu_q.data_ptr(), cu_k.data_ptr())
    assert call["strides"] == (0, 128, 32, 0, 64, 32, 0, 64, 32, 0, 128, 32)
    assert (call["batch"], call["total_q"], call["total_k"]) == (3, 8, 11)
    assert (call["max_seqlen_q"], call["max_seqlen_k"], call["seqused_k"]) == (5, 5, 0)
    expected_out, expected_lse = reference_varlen(q, k, v, seqlens_q, seqlens_k, causal=True)
    assert_close_to_reference(out, expected_out, torch.float16)
    assert_lse_close(lse, expected_lse)


def test_batched_decode_passes_the_cache_lengths(binding):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(3, 8, 64, generator=gen).bfloat16()
    k_cache = torch.randn(3, 40, 2, 64, generator=gen).bfloat16()
    v_cache = torch.randn(3, 40, 2, 64, generator=gen).bfloat16()
    lengths = torch.tensor([40, 0, 17], dtype=torch.int32)
    out, lse = ff.batched_decode_attention(q, k_cache, v_cache, lengths, return_lse=True)
    (call,) = binding.calls
    assert call["seqused_k"] == lengths.data_ptr()
    assert (call["seqlen_q"], call["seqlen_k"], call["causal"]) == (1, 40, False)
    expected_out, expected_lse = reference_attention(
        q.unsqueeze(1), k_cache, v_cache, key_lengths=lengths.tolist()
    )
    assert_close_to_reference(out, expected_out[:, 0], torch.bfloat16)
    assert_lse_close(lse, expected_lse[:, :, 0])


def test_multi_head_attention_casts_float32_for_the_kernels(binding):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 6, 4 * 32, generator=gen)
    k = torch.randn(2, 6, 2 * 32, generator=gen)
    v = torch.randn(2, 6, 2 * 32, generator=gen)
    out = ff.multi_head_attention(q, k, v, 4, 2, 32, None, True)
    assert out.dtype == torch.float32 and binding.calls[-1]["dtype"] == 0
    out_bf16 = ff.attention_fwd(q, k, v, 4, 2, 32, None, True, cast_dtype=torch.bfloat16)
    assert binding.calls[-1]["dtype"] == 1
    ff.attention_fwd(q, k, v * 1e5, 4, 2, 32, None, True)  # beyond float16's range
    assert binding.calls[-1]["dtype"] == 1
    expected, _ = reference_attention(
        q.unflatten(-1, (4, 32)), k.unflatten(-1, (2, 32)), v.unflatten(-1, (2, 32)), causal=True
    )
    assert_close_to_reference(out, expected.flatten(-2), torch.float16)
    assert_close_to_reference(out_bf16, expected.flatten(-2), torch.bfloat16)


def test_value_checks_are_skipped_while_a_graph_is_captured(monkeypatch):
    fake_cuda = types.SimpleNamespace(device=torch.device("cuda", 0), is_cuda=True, is_meta=False)
    monkeypatch.setattr(torch.cuda, "device", lambda device: _NullContext())
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    assert not validation.device_values_readable(fake_cuda)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: False)
    assert validation.device_values_readable(fake_cuda)
    monkeypatch.setattr(validation, "_CHECK_DEVICE_VALUES", False)
    assert not validation.device_values_readable(fake_cuda)


def test_bad_cu_seqlens_pass_through_when_values_cannot_be_read(binding, monkeypatch):
    # Under capture the kernels clamp instead; the adapter must still launch.
    monkeypatch.setattr(validation, "device_values_readable", lambda x: False)
    q = torch.randn(4, 2, 16).half()
    cu = torch.tensor([0, 9], dtype=torch.int32)  # ends past total_q: refused when readable
    ff.flash_attn_varlen_fwd(q, q, q, cu, torch.tensor([0, 4], dtype=torch.int32), 1, 4)
    assert binding.calls and binding.calls[0]["max_seqlen_q"] == 1


class _NullContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
