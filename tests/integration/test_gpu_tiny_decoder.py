"""The tiny decoder on the GPU kernels against the same model on the CPU (the design note's
integration test), forced naive on the GPU, CUDA-graph replays and torch.compile.

Tolerances. Logits have a standard deviation of about 1. Running attention in float16
instead of float32 moves them by at most 1.2e-3 on these prompts (bfloat16: 8.4e-3; measured
on the CPU's naive path), and the kernels round their probabilities once more: prefill logits
must be within 5e-3 of the float32 CPU model for float16 attention, 3e-2 for bfloat16. Greedy
tokens must be identical: the reference trajectory's decision margin (at least 0.01, checked
by test_reference_trajectory_has_a_wide_decision_margin) is over 5x the float16 tolerance.
"""

from __future__ import annotations

import pytest
import torch

from forge_flash.models import GraphedDecodeStep, TinyDecoder, greedy_generate

from helpers.kernels import kernel_backend
from model_helpers import NEW_TOKENS, counted_kernels, prompts

pytestmark = pytest.mark.kernels

PREFILL_ATOL = {torch.float16: 5e-3, torch.bfloat16: 3e-2, None: 5e-3}
STEP_ATOL = 5e-3  # float16 attention on both sides of a comparison


def _model(device: str, attn_dtype: torch.dtype | None) -> TinyDecoder:
    return TinyDecoder(attn_dtype=attn_dtype).to(device)


@pytest.mark.parametrize("attn_dtype", [torch.float16, torch.bfloat16, None], ids=str)
def test_prefill_logits_match_the_cpu_float32_model(attn_dtype, no_tf32):
    # attn_dtype None: a float32 model, cast to float16 for the kernels by multi_head_attention.
    reference = _model("cpu", None)
    expected = [reference.prefill(prompt.unsqueeze(0)) for prompt in prompts()]
    model = _model("cuda", attn_dtype)
    with counted_kernels() as kernels:
        got = [model.prefill(prompt.cuda().unsqueeze(0)).cpu() for prompt in prompts()]
    assert kernels["fwd"] == 2 * len(prompts())  # every layer of every prompt
    for logits, reference_logits in zip(got, expected, strict=True):
        torch.testing.assert_close(logits, reference_logits, atol=PREFILL_ATOL[attn_dtype], rtol=0)


def test_greedy_generation_gives_the_cpu_tokens(no_tf32):
    cpu_half = greedy_generate(_model("cpu", torch.float16), prompts(), NEW_TOKENS)
    cpu_float = greedy_generate(_model("cpu", None), prompts(), NEW_TOKENS)
    with counted_kernels() as kernels:
        gpu = greedy_generate(_model("cuda", torch.float16), prompts(), NEW_TOKENS)
    # Prefill: 3 prompts x 2 layers; batched decode: 31 steps x 2 layers.
    assert kernels["fwd"] == 2 * 3 + 2 * (NEW_TOKENS - 1)
    assert torch.equal(gpu.tokens, cpu_half.tokens)
    assert torch.equal(gpu.tokens, cpu_float.tokens)
    torch.testing.assert_close(gpu.logits, cpu_half.logits, atol=STEP_ATOL, rtol=0)


def test_single_sequence_generation_gives_the_cpu_tokens(no_tf32):
    prompt = prompts()[2:]  # the longest: 150 tokens, two kernel tiles
    cpu = greedy_generate(_model("cpu", torch.float16), prompt, NEW_TOKENS)
    with counted_kernels() as kernels:
        gpu = greedy_generate(_model("cuda", torch.float16), prompt, NEW_TOKENS)
    assert kernels["fwd"] == 2 * NEW_TOKENS  # prefill and 31 decode steps, 2 layers each
    assert torch.equal(gpu.tokens, cpu.tokens)
    torch.testing.assert_close(gpu.logits, cpu.logits, atol=STEP_ATOL, rtol=0)


def test_forced_naive_on_the_gpu_gives_the_same_tokens(no_tf32):
    with kernel_backend("cuda"):
        kernels = greedy_generate(_model("cuda", torch.float16), prompts(), NEW_TOKENS)
    with kernel_backend("naive"):
        naive = greedy_generate(_model("cuda", torch.float16), prompts(), NEW_TOKENS)
    assert torch.equal(naive.tokens, kernels.tokens)
    torch.testing.assert_close(naive.logits, kernels.logits, atol=STEP_ATOL, rtol=0)


def test_cuda_graph_replays_give_the_eager_tokens(no_tf32):
    with counted_kernels() as kernels:
        model = _model("cuda", torch.float16)
        eager = greedy_generate(model, prompts(), NEW_TOKENS)
        longest = max(len(p) for p in prompts())
        cache = model.new_cache(len(prompts()), longest + NEW_TOKENS)
        # Captured before the prompts are in: the graph holds buffers, not their contents.
        step = GraphedDecodeStep(model, cache)
        calls_before = kernels["fwd"]
        graphed = greedy_generate(model, prompts(), NEW_TOKENS, decode_step=step, cache=cache)
        # Replays launch kernels without Python: only the 3 prompts' prefill calls the binding.
        assert kernels["fwd"] - calls_before == 2 * 3
    assert torch.equal(graphed.tokens, eager.tokens)
    torch.testing.assert_close(graphed.logits, eager.logits, atol=1e-5, rtol=0)
    assert cache.lengths.tolist() == [len(p) + NEW_TOKENS - 1 for p in prompts()]


def test_cuda_graph_of_a_single_sequence(no_tf32):
    model = _model("cuda", torch.float16)
    prompt = prompts()[1:2]
    eager = greedy_generate(model, prompt, 8)
    cache = model.new_cache(1, len(prompt[0]) + 8)
    step = GraphedDecodeStep(model, cache)  # one sequence, lengths on the device
    graphed = greedy_generate(model, prompt, 8, decode_step=step, cache=cache)
    assert torch.equal(graphed.tokens, eager.tokens)
    torch.testing.assert_close(graphed.logits, eager.logits, atol=STEP_ATOL, rtol=0)


@pytest.mark.slow
def test_torch_compile_with_inductor_on_the_gpu(no_tf32):
    torch._dynamo.reset()
    model = _model("cuda", torch.float16)
    eager = greedy_generate(model, prompts(), 8)
    compiled_model = _model("cuda", torch.float16)
    compiled_model.prefill = torch.compile(compiled_model.prefill, fullgraph=True)
    compiled_model.decode = torch.compile(compiled_model.decode, fullgraph=True)
    with counted_kernels() as kernels:
        compiled = greedy_generate(compiled_model, prompts(), 8)
    assert kernels["fwd"] == 2 * 3 + 2 * 7  # the compiled graphs call the kernels
    assert torch.equal(compiled.tokens, eager.tokens)
    torch.testing.assert_close(compiled.logits, eager.logits, atol=STEP_ATOL, rtol=0)
    torch._dynamo.reset()
