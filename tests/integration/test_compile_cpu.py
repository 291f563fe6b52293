"""torch.compile(fullgraph=True) of the tiny decoder on the CPU: no graph breaks, eager results.

``fullgraph=True`` turns any graph break into an error, so compiling at all is the first
assertion; the graphs must hold forge-flash's ops (the attention is not traced away), must
not be rebuilt token after token, and must give the eager logits.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from forge_flash.models import TinyDecoder

LOGIT_ATOL = 1e-5


class _Recorder(CompileCounterWithBackend):
    """Counts compilations and keeps the forge-flash ops each graph holds."""

    def __init__(self, backend: str) -> None:
        super().__init__(backend)
        self.ops: list[str] = []

    def __call__(self, gm, example_inputs):
        self.ops += [
            str(node.target) for node in gm.graph.nodes if "forge_flash" in str(node.target)
        ]
        return super().__call__(gm, example_inputs)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _prompts():
    return torch.randint(0, 512, (2, 9), generator=torch.Generator().manual_seed(0))


def _eager_run(model, steps):
    cache = model.new_cache(2, 24)
    logits = [model.prefill(_prompts(), cache)]
    tokens = logits[0][:, -1].argmax(-1)
    for _ in range(steps):
        logits.append(model.decode(tokens, cache))
        tokens = logits[-1].argmax(-1)
    return logits


def _compiled_run(model, steps, backend):
    prefill = torch.compile(model.prefill, fullgraph=True, backend=backend)
    decode = torch.compile(model.decode, fullgraph=True, backend=backend)
    cache = model.new_cache(2, 24)
    logits = [prefill(_prompts(), cache)]
    tokens = logits[0][:, -1].argmax(-1)
    for _ in range(steps):
        logits.append(decode(tokens, cache))
        tokens = logits[-1].argmax(-1)
    return logits


def test_prefill_and_batched_decode_compile_in_one_graph_each():
    model = TinyDecoder()
    recorder = _Recorder("aot_eager")
    compiled = _compiled_run(model, 4, recorder)
    # One graph for prefill, one for decode, reused by every later token.
    assert recorder.frame_count == 2
    assert recorder.ops.count("forge_flash.multi_head_attention") == 2  # prefill, 2 layers
    assert recorder.ops.count("forge_flash.batched_decode") == 2  # decode, 2 layers
    for got, expected in zip(compiled, _eager_run(model, 4), strict=True):
        torch.testing.assert_close(got, expected, atol=LOGIT_ATOL, rtol=0)


def test_single_sequence_decode_compiles_with_a_symbolic_length():
    model = TinyDecoder()
    recorder = _Recorder("aot_eager")
    decode = torch.compile(model.decode, fullgraph=True, backend=recorder)
    compiled_cache, eager_cache = model.new_cache(1, 24), model.new_cache(1, 24)
    prompt = _prompts()[:1]
    model.prefill(prompt, compiled_cache)
    model.prefill(prompt, eager_cache)
    token = torch.tensor([3])
    for _ in range(5):
        got = decode(token, compiled_cache)
        expected = model.decode(token, eager_cache)
        torch.testing.assert_close(got, expected, atol=LOGIT_ATOL, rtol=0)
        token = expected.argmax(-1)
    # The length is a host int: one graph for the first length, one symbolic graph after.
    assert recorder.frame_count == 2
    assert set(recorder.ops) == {"forge_flash.multi_head_attention"}


@pytest.mark.slow
def test_inductor_compiles_the_model():
    # Inductor's C++ code generation: about 10 s for prefill and decode on the 2-core machine.
    model = TinyDecoder()
    compiled = _compiled_run(model, 2, "inductor")
    for got, expected in zip(compiled, _eager_run(model, 2), strict=True):
        torch.testing.assert_close(got, expected, atol=LOGIT_ATOL, rtol=0)
