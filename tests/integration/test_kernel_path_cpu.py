"""The tiny decoder through the CUDA backend's adapter, on the CPU, with a fake binding.

``FakeBinding`` (tests/helpers) takes the raw pointers and strides the adapter passes, as the
real plugin would, and computes the attention in float64 from them. Running the model this
way checks in CI what reaches the kernels on a GPU: which binding entry, which shapes, the
cache lengths for batched decode, and that the answers match the naive path.
"""

from __future__ import annotations

import types

import pytest
import torch

from forge_flash.backends.cuda import CudaBackend
from forge_flash.models import TinyDecoder, greedy_generate

from helpers.fake_plugin import FakeBinding
from helpers.kernels import kernel_backend
from model_helpers import prompts


class _CpuCudaBackend(CudaBackend):
    """The real adapter, aimed at CPU tensors (a fake GPU 0 that runs the kernels)."""

    device_type = "cpu"

    def __init__(self, binding) -> None:
        super().__init__(types.SimpleNamespace(__version__="0.1.0"), binding)
        self._stream_of = lambda index: 0

    def device_reason(self, index):
        return None


@pytest.fixture
def binding(monkeypatch, fresh_discovery):
    fake = FakeBinding()
    monkeypatch.setattr("forge_flash.discovery._active", _CpuCudaBackend(fake))
    return fake


def test_generation_through_the_adapter_matches_the_naive_path(binding):
    model = TinyDecoder(attn_dtype=torch.float16)  # half precision: what the kernels take
    run = greedy_generate(model, prompts(), 4)
    assert binding.calls, "the model never reached the binding"
    with kernel_backend("naive"):
        naive = greedy_generate(model, prompts(), 4)
    assert torch.equal(run.tokens, naive.tokens)
    # float64 in the fake binding vs float32 on the naive path, both rounded to float16.
    torch.testing.assert_close(run.logits, naive.logits, atol=5e-3, rtol=0)


def test_prefill_and_batched_decode_reach_the_kernels_with_cache_lengths(binding):
    model = TinyDecoder(attn_dtype=torch.float16)
    cache = model.new_cache(2, 16)
    model.prefill(torch.tensor([[1, 2, 3, 4, 5]]), cache, slot=0)
    model.prefill(torch.tensor([[6, 7, 8]]), cache, slot=1)
    prefill = [(c["seqlen_q"], c["seqlen_k"], c["causal"], c["seqused_k"]) for c in binding.calls]
    assert prefill == [(5, 5, True, 0)] * 2 + [(3, 3, True, 0)] * 2  # 2 layers each
    binding.calls.clear()
    model.decode(torch.tensor([9, 10]), cache)
    assert len(binding.calls) == 2
    for call in binding.calls:
        # Batched decode: the whole static cache with per-sequence lengths on the device.
        assert (call["batch"], call["seqlen_q"], call["seqlen_k"]) == (2, 1, 16)
        assert call["seqused_k"] != 0 and call["dtype"] == 0
        assert (call["num_heads"], call["num_heads_k"], call["head_dim"]) == (8, 2, 64)
    assert cache.lengths.tolist() == [6, 4]


def test_single_sequence_decode_reaches_the_kernels_over_the_filled_prefix(binding):
    model = TinyDecoder(attn_dtype=torch.float16)
    cache = model.new_cache(1, 16)
    model.prefill(torch.tensor([[1, 2, 3]]), cache)
    binding.calls.clear()
    model.decode(torch.tensor([4]), cache)
    shapes = [(c["batch"], c["seqlen_q"], c["seqlen_k"], c["seqused_k"]) for c in binding.calls]
    assert shapes == [(1, 1, 4, 0)] * 2
