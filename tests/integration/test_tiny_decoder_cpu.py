"""The tiny decoder on the CPU: forge-flash's routing against an independent reference.

The reference model is the same decoder with its attention replaced by the float64 formula
of tests/helpers (no forge-flash code), so these tests check what the model computes, not
only that two forge-flash paths agree.
"""

from __future__ import annotations

import pytest
import torch

import forge_flash as ff
from forge_flash.models import TinyDecoder, greedy_generate
from forge_flash.models.generate import decision_margin

from helpers.kernels import kernel_backend
from model_helpers import (
    MIN_MARGIN,
    NEW_TOKENS,
    CallLog,
    prompts,
    reference_decoder_attention,
)

# float32 model, naive path vs float64 reference attention: float32 rounding only.
LOGIT_ATOL = 1e-4


@pytest.fixture(scope="module")
def reference_run():
    model = TinyDecoder(attention=reference_decoder_attention)
    return greedy_generate(model, prompts(), NEW_TOKENS)


def test_reference_trajectory_has_a_wide_decision_margin(reference_run):
    # The precondition of every token comparison in these tests and the GPU ones.
    assert decision_margin(reference_run.logits) >= MIN_MARGIN


def test_prefill_logits_match_the_reference():
    tokens = torch.stack([p[:7] for p in prompts()])  # a batch of equal-length prompts
    got = TinyDecoder().prefill(tokens)
    expected = TinyDecoder(attention=reference_decoder_attention).prefill(tokens)
    assert got.shape == (3, 7, 512)
    torch.testing.assert_close(got, expected, atol=LOGIT_ATOL, rtol=0)


def test_batched_greedy_generation_matches_the_reference(reference_run):
    run = greedy_generate(TinyDecoder(), prompts(), NEW_TOKENS)
    assert run.tokens.shape == (3, NEW_TOKENS)
    assert torch.equal(run.tokens, reference_run.tokens)
    torch.testing.assert_close(run.logits, reference_run.logits, atol=LOGIT_ATOL, rtol=0)


def test_single_sequence_generation_matches_the_reference(reference_run):
    # One prompt: decode goes through multi_head_attention over the filled cache prefix.
    run = greedy_generate(TinyDecoder(), prompts()[1:2], NEW_TOKENS)
    assert torch.equal(run.tokens[0], reference_run.tokens[1])
    torch.testing.assert_close(run.logits[0], reference_run.logits[1], atol=LOGIT_ATOL, rtol=0)


def test_forced_naive_gives_the_same_results():
    # FORGE_FLASH_BACKEND=naive is the feature gate off: it may change speed, nothing else.
    with kernel_backend("naive"):
        naive = greedy_generate(TinyDecoder(), prompts(), 8)
    auto = greedy_generate(TinyDecoder(), prompts(), 8)
    assert torch.equal(naive.tokens, auto.tokens)
    if ff.active_backend().name == "naive":  # on the CPU both are the naive path: bit for bit
        assert torch.equal(naive.logits, auto.logits)


def test_routing_follows_the_design_note(monkeypatch):
    log = CallLog(monkeypatch)
    model = TinyDecoder()
    cache = model.new_cache(2, 16)
    model.prefill(torch.tensor([[1, 2, 3, 4]]), cache, slot=0)
    model.prefill(torch.tensor([[5, 6]]), cache, slot=1)
    assert log.names() == ["multi_head_attention"] * 4  # 2 prompts x 2 layers
    log.calls.clear()
    model.decode(torch.tensor([7, 8]), cache)
    assert log.calls == [("batched_decode_attention", (2, 8, 64))] * 2
    assert cache.lengths.tolist() == [5, 3]

    single = model.new_cache(1, 16)
    model.prefill(torch.tensor([[1, 2, 3]]), single)
    log.calls.clear()
    model.decode(torch.tensor([4]), single)
    # One sequence: multi_head_attention over the 4 filled cache entries, not the 16 slots.
    assert log.names() == ["multi_head_attention"] * 2
    assert single.host_lengths == [4] and single.lengths.tolist() == [4]


def test_decode_with_device_lengths_matches_the_host_length_path():
    model = TinyDecoder()
    prompt = prompts()[0].unsqueeze(0)
    host_cache, device_cache = model.new_cache(1, 12), model.new_cache(1, 12)
    model.prefill(prompt, host_cache)
    model.prefill(prompt, device_cache)
    token = torch.tensor([3])
    for _ in range(3):
        host = model.decode(token, host_cache)
        device = model.decode(token, device_cache, device_lengths=True)
        torch.testing.assert_close(device, host, atol=LOGIT_ATOL, rtol=0)
        token = host.argmax(-1)


def test_attention_dtype_keeps_the_cache_in_half_precision():
    model = TinyDecoder(attn_dtype=torch.float16)
    cache = model.new_cache(1, 8)
    logits = model.prefill(torch.tensor([[1, 2, 3]]), cache)
    assert cache.k.dtype == torch.float16 and logits.dtype == torch.float32
    # Rounded K: the cache holds what attention saw, and slots past the prompt stay zero.
    assert cache.k[:, 0, :3].abs().sum() > 0 and cache.k[:, 0, 3:].abs().sum() == 0
