"""The dispatcher's per-call choice: the kernels when the active backend takes the call, else
the naive path with a reason that logging and ``dispatch.explain`` show; one prepared launch
per first call of a signature."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch

import forge_flash as ff
from forge_flash import call_cache, dispatch
from forge_flash.backends.naive import NAIVE
from forge_flash.backends.padded import PaddedHeadDim
from forge_flash.validation import check_fwd

from helpers.fake_plugin import CpuCudaBackend, FakeBinding


@pytest.fixture
def adapter(monkeypatch, fresh_discovery):
    backend = CpuCudaBackend(FakeBinding())
    monkeypatch.setattr("forge_flash.discovery._active", backend)
    call_cache.clear()
    yield backend
    call_cache.clear()


def _call(dtype=torch.float16, head_dim=64, **options):
    q = torch.zeros(1, 4, 2, head_dim, dtype=dtype)
    k = torch.zeros(1, 6, 2, head_dim, dtype=dtype)
    return replace(check_fwd(q, k, k, None), softmax_scale=0.1, **options)


def test_the_kernels_take_half_precision_calls_and_their_options(adapter):
    for options in ({}, {"window": (8, 0), "causal": True}, {"softcap": 30.0}, {"sinks": True}):
        route = dispatch.route(_call(**options))
        assert route == (adapter, None), options
    assert dispatch.explain(_call()) == "cuda"


@pytest.mark.parametrize(
    "call,reason",
    [
        (_call(dtype=torch.float32), "float16, bfloat16; got torch.float32"),
        (_call(dtype=torch.float32, head_dim=12), "float16, bfloat16; got torch.float32"),
    ],
)
def test_other_calls_take_the_naive_path_and_say_why(adapter, caplog, call, reason):
    with caplog.at_level(logging.DEBUG, logger="forge_flash"):
        route = dispatch.route(call)
    assert route.backend is NAIVE and reason in route.fallback_reason
    assert dispatch.explain(call).startswith("naive (") and reason in dispatch.explain(call)


def test_an_odd_head_dim_takes_the_kernels_on_padded_copies(adapter, monkeypatch):
    route = dispatch.route(_call(head_dim=12))
    assert route.fallback_reason is None and isinstance(route.backend, PaddedHeadDim)
    assert (route.backend.inner, route.backend.head_dim) == (adapter, 16)
    assert dispatch.explain(_call(head_dim=12)) == "cuda"
    # Where the kernels refuse the padded call too, the naive path, with the first objection.
    monkeypatch.setattr(adapter.limits, "features", frozenset({"window"}))
    route = dispatch.route(_call(head_dim=12, softcap=5.0))
    assert route.backend is NAIVE and "multiple of 8 up to 256; got 12" in route.fallback_reason


def test_a_plugin_without_an_option_sends_it_to_the_naive_path(adapter, monkeypatch):
    monkeypatch.setattr(adapter.limits, "features", frozenset({"window"}))
    route = dispatch.route(_call(softcap=5.0))
    assert route.backend is NAIVE and "softcap" in route.fallback_reason
    assert dispatch.route(_call(window=(4, 4))).backend is adapter


def test_the_first_call_builds_one_prepared_launch(adapter, monkeypatch):
    built = []
    original = adapter._bind

    def counting(call, t):
        built.append(call)
        return original(call, t)

    monkeypatch.setattr(adapter, "_bind", counting)
    q = torch.randn(2, 1, 8, 64).half()
    k = torch.randn(2, 30, 2, 64).half()
    lengths = torch.tensor([30, 7], dtype=torch.int32)
    for _ in range(3):
        ff.batched_decode_attention(q[:, 0], k, k, lengths)
    assert len(built) == 1, "the first call must build one launch, and later calls reuse it"
    assert len(adapter.binding.calls) == 3
