"""Every entry point with one of its arguments broken, every argument in every way a kind of
argument can break (a tensor's dtype, each dimension shortened or doubled, its layout, its
device, its values; an int's sign and size; ...): it answers or raises ValueError, TypeError
or NotImplementedError, never another exception; it modifies no argument (but ``out=`` and
the caches ``flash_attn_with_kvcache`` appends to); and the naive path and the CUDA adapter over the
pointer-level fake binding agree on whether the call is refused, and how.

The targeted refusal tests (test_validation.py, test_variant_validation.py, test_kvcache.py)
pin each argument's message; this one looks for what they did not think of. A random fuzz of
this kind found a paged varlen call whose block table was too narrow for a sequence: the naive
path raised IndexError (now refused by validation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

import forge_flash as ff
from forge_flash import discovery
from forge_flash import flash_attn_interface as fai

from helpers.fake_plugin import CpuCudaBackend, FakeBinding

REFUSALS = (ValueError, TypeError, NotImplementedError)


@dataclass
class Call:
    fn: Callable
    args: list
    kwargs: dict
    appends: bool = False  # writes into its k_cache and v_cache (arguments 1 and 2)


def _calls(dtype: torch.dtype, seed: int) -> dict[str, Call]:
    """A valid call of every entry point: 3 sequences, GQA 4/2, head_dim 16, ragged lengths
    (one empty, one that fills its block-table row), pages of 2."""
    gen = torch.Generator().manual_seed(seed)

    def t(*shape):
        return torch.randn(*shape, generator=gen).to(dtype)

    def cumulative(lengths):
        return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)

    b, sq, sk, h, hk, d, page, max_blocks = 3, 3, 5, 4, 2, 16, 2, 3
    lens_q, lens_k = [2, 0, 3], [3, 6, 1]
    cu_q, cu_k = cumulative(lens_q), cumulative(lens_k)
    blocks = b * max_blocks + 2
    table = torch.randperm(blocks, generator=gen)[: b * max_blocks].view(b, max_blocks)
    table = table.to(torch.int32)
    filled = torch.tensor([0, 2, 4], dtype=torch.int32)
    q, k, v = t(b, sq, h, d), t(b, sk, hk, d), t(b, sk, hk, d)
    qd, new_k, new_v = t(b, 1, h, d), t(b, 1, hk, d), t(b, 1, hk, d)
    packed = [t(int(cu_q[-1]), h, d), t(int(cu_k[-1]), hk, d), t(int(cu_k[-1]), hk, d)]
    paged, cache = (
        [t(blocks, page, hk, d), t(blocks, page, hk, d)],
        [t(b, 6, hk, d), t(b, 6, hk, d)],
    )
    flat = [t(b, sq, h * d), t(b, sk, hk * d), t(b, sk, hk * d), h, hk, d]
    slopes, sinks = torch.rand(h, generator=gen), torch.randn(h, generator=gen)
    return {
        "flash_attn_fwd": Call(ff.flash_attn_fwd, [q, k, v], dict(
            softmax_scale=0.3, causal=True, window_size=(2, 0), softcap=5.0, alibi_slopes=slopes,
            sinks=sinks, return_lse=True)),
        "flash_attn_varlen_fwd": Call(ff.flash_attn_varlen_fwd, [*packed, cu_q, cu_k, 3, 6],
            dict(causal=True, seqused_k=torch.tensor([3, 5, 1], dtype=torch.int32))),
        "paged varlen": Call(ff.flash_attn_varlen_fwd, [packed[0], *paged, cu_q, cu_k, 3, 6],
            dict(block_table=table, causal=True, return_lse=True)),
        "batched_decode_attention": Call(ff.batched_decode_attention, [qd[:, 0], *cache, filled],
            dict(window_size=(3, 0), sinks=sinks)),
        "paged decode": Call(ff.batched_decode_attention, [qd[:, 0], *paged, filled],
            dict(block_table=table, alibi_slopes=slopes)),
        "flash_attn_with_kvcache": Call(ff.flash_attn_with_kvcache, [qd, *cache], dict(
            k=new_k, v=new_v, rotary_cos=t(8, d // 2), rotary_sin=t(8, d // 2),
            cache_seqlens=filled, cache_batch_idx=torch.tensor([2, 0, 1], dtype=torch.int32),
            cache_leftpad=torch.tensor([0, 1, 0], dtype=torch.int32), causal=True,
            return_softmax_lse=True), appends=True),
        "paged flash_attn_with_kvcache": Call(ff.flash_attn_with_kvcache, [qd, *paged], dict(
            k=new_k, v=new_v, cache_seqlens=filled, block_table=table, num_splits=2),
            appends=True),
        "flash_attn_func": Call(fai.flash_attn_func, [q, k, v],
            dict(dropout_p=0.0, causal=True, deterministic=True, return_attn_probs=True)),
        "flash_attn_varlen_kvpacked_func": Call(fai.flash_attn_varlen_kvpacked_func,
            [packed[0], torch.stack(packed[1:], 1), cu_q, cu_k, 3, 6], dict(causal=True)),
        "attention_fwd": Call(ff.attention_fwd, flat, dict(scale=0.25, is_causal=True)),
        "decoder_attention": Call(ff.decoder_attention, [t(b, 1, h * d), *flat[1:]],
            dict(cache_seqlens=torch.tensor([5, 1, 0], dtype=torch.int32))),
        "merge_attention_states": Call(ff.merge_attention_states,
            [torch.stack([t(b, 2, h, d), t(b, 2, h, d)]), torch.randn(2, b, h, 2, generator=gen)],
            dict(out=torch.empty(b, 2, h, d, dtype=dtype))),
    }  # fmt: skip


def _breaks(x: object) -> list[Callable[[], object]]:
    """Every way this test breaks an argument of ``x``'s kind (a few leave it valid)."""
    if isinstance(x, torch.Tensor):
        dims = range(x.dim())
        return [
            *(lambda dt=dt: x.to(dt) for dt in (torch.int32, torch.int64, torch.float64,
              torch.bool, torch.float16, torch.bfloat16)),
            *(lambda i=i: x.narrow(i, 0, x.shape[i] - 1) for i in dims if x.shape[i]),
            *(lambda i=i: torch.cat([x, x], i) for i in dims),
            *(lambda i=i: x.narrow(i, 0, 0) for i in dims),
            lambda: x.unsqueeze(0),
            lambda: x.flatten(),
            lambda: x.transpose(0, -1),
            lambda: x[..., ::2],
            lambda: torch.empty(x.shape, dtype=x.dtype, device="meta"),
            lambda: x.tolist(),
            lambda: torch.tensor(3),
            lambda: -x if x.dtype != torch.bool else ~x,
            lambda: x * 100 if x.is_floating_point() else x + 2**30,
            lambda: None,
        ]  # fmt: skip
    if isinstance(x, bool):
        return [lambda: 1, lambda: "yes", lambda: None, lambda: torch.tensor(True)]
    if isinstance(x, int):
        return [lambda: -1, lambda: 0, lambda: 2**40, lambda: True, lambda: 1.5, lambda: "3",
                lambda: None, lambda: x + 1, lambda: torch.tensor(x)]  # fmt: skip
    if isinstance(x, float):
        return [lambda: float("nan"), lambda: float("inf"), lambda: -1.0, lambda: "1",
                lambda: True, lambda: 1e300, lambda: torch.tensor(1.0), lambda: None]  # fmt: skip
    if isinstance(x, tuple):
        return [lambda: (-2, 0), lambda: (0, -3), lambda: (1,), lambda: (1, 2, 3),
                lambda: ("a", 1), lambda: (1.5, 2), lambda: 3, lambda: (True, 1),
                lambda: (2**40, 1), lambda: None]  # fmt: skip
    return [lambda: 7, lambda: "x"]


def _outcome(call: Call, args: list, kwargs: dict, backend) -> str:
    """Run the call on a backend (None: discovery's, the naive path here), the caches it
    appends to copied first; the exception's type name, or "answered"."""
    if call.appends:
        args = [*args[:1], *(x.clone() if _data(x) else x for x in args[1:3]), *args[3:]]
    written = [id(x) for x in args[1:3]] if call.appends else []
    inputs = [*args, *(x for key, x in kwargs.items() if key not in ("out", "out_lse"))]
    before = [(x, x.clone()) for x in inputs if _data(x) and id(x) not in written]
    discovery._active = backend
    try:
        call.fn(*args, **kwargs)
        result = "answered"
    except REFUSALS as error:
        # the refusal's kind (flash_attn_interface's errors are also RuntimeErrors, by design)
        result = next(kind.__name__ for kind in REFUSALS if isinstance(error, kind))
        assert str(error), f"{result} without a message"
    finally:
        discovery._active = None
    for x, copy in before:
        assert torch.equal(x.nan_to_num(), copy.nan_to_num()), "an argument was modified"
    return result


def _data(x: object) -> bool:
    return isinstance(x, torch.Tensor) and not x.is_meta


ENTRY_POINTS = list(_calls(torch.float16, 0))


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_a_broken_argument_is_refused_or_answered_never_crashes(entry):
    outcomes = set()
    for dtype, seed in ((torch.float16, 0), (torch.bfloat16, 1)):
        call = _calls(dtype, seed)[entry]
        assert _outcome(call, call.args, call.kwargs, None) == "answered", "the unbroken call"
        places = [(i, None) for i in range(len(call.args))] + [(None, key) for key in call.kwargs]
        for i, key in places:
            original = call.args[i] if key is None else call.kwargs[key]
            for n, broken in enumerate(_breaks(original)):
                args, kwargs = list(call.args), dict(call.kwargs)
                if key is None:
                    args[i] = broken()
                else:
                    kwargs[key] = broken()
                place = f"argument {i}" if key is None else key
                where = f"{entry} ({dtype}), {place}, break {n}"
                try:
                    naive = _outcome(call, args, kwargs, None)
                    adapter = _outcome(call, args, kwargs, CpuCudaBackend(FakeBinding()))
                except Exception as error:  # anything else is what this test looks for
                    raise AssertionError(f"{where}: {type(error).__name__}: {error}") from error
                assert naive == adapter, f"{where}: the naive path {naive}, the adapter {adapter}"
                outcomes.add(naive)
    # The breaks reach both sides: calls refused and calls still answered.
    assert "answered" in outcomes and outcomes & {"ValueError", "TypeError"}, outcomes
