"""The plugin's merge kernel (ff_merge_states) behind forge_flash.merge_attention_states, on one
GPU, against the float64 reference of the merge (helpers.merge_reference)."""

from __future__ import annotations

import math

import pytest
import torch

import forge_flash as ff

from helpers.kernels import kernel_backend
from helpers.merge_reference import reference_merge
from helpers.tolerance import assert_close_to_reference, assert_lse_close


@pytest.fixture(autouse=True)
def _kernels():
    with kernel_backend():
        yield


def _partials(dtypes, batch=2, seqlen=37, heads=5, head_dim=128):
    outs = [torch.randn(batch, seqlen, heads, head_dim, device="cuda").to(d) for d in dtypes]
    lses = [3 * torch.randn(batch, heads, seqlen, device="cuda") for _ in dtypes]
    return outs, lses


def _check(out, lse, outs, lses, dtype):
    expected, expected_lse = reference_merge(outs, lses)
    assert_close_to_reference(out, expected.cpu(), dtype)
    assert_lse_close(lse, expected_lse.cpu())


@pytest.mark.parametrize("head_dim", [128, 64, 80, 13])
@pytest.mark.parametrize(
    "dtypes",
    [
        [torch.float32, torch.bfloat16],  # a running state and a block (context parallelism)
        [torch.bfloat16] * 3,
        [torch.float16] * 2,
        [torch.float32] * 4,
    ],
    ids=str,
)
def test_kernel_matches_the_reference(dtypes, head_dim):
    outs, lses = _partials(dtypes, head_dim=head_dim)
    out, lse = ff.merge_attention_states(outs, lses)
    _check(out, lse, outs, lses, out.dtype)


def test_the_binding_is_called():
    binding = ff.active_backend().binding
    calls = []
    real = binding.merge_states

    def recording(*args):
        calls.append(args)
        return real(*args)

    ff.active_backend().binding = type("Wrapped", (), {"merge_states": staticmethod(recording)})
    try:
        outs, lses = _partials([torch.bfloat16] * 2)
        out, lse = ff.merge_attention_states(outs, lses)
    finally:
        ff.active_backend().binding = binding
    assert len(calls) == 1
    _check(out, lse, outs, lses, torch.bfloat16)


def test_empty_and_nan_partials():
    outs, lses = _partials([torch.float32] * 3)
    lses[1][0, 1, :] = -math.inf  # part 1 saw no key in these rows; its out is never read
    outs[1][0, :, 1, :] = math.nan
    for x in lses:
        x[1, 2, 3] = -math.inf  # no part saw a key
    lses[2][1, 4, 5] = math.nan  # a NaN LSE: NaN row
    outs[0][0, 7, 3, 9] = math.nan  # a NaN in a weighed part: NaN element
    out, lse = ff.merge_attention_states(outs, lses)
    assert torch.all(out[1, 3, 2] == 0) and lse[1, 2, 3] == -math.inf
    assert torch.isnan(out[1, 5, 4]).all() and torch.isnan(lse[1, 4, 5])
    assert torch.isnan(out[0, 7, 3, 9]) and not torch.isnan(lse[0, 3, 7])
    nan_rows = torch.isnan(out).any(-1)
    assert nan_rows.sum() == 2 and torch.isnan(lse).sum() == 1
    keep = ~nan_rows.unsqueeze(-1).expand_as(out)
    expected, _ = reference_merge(outs, lses)
    torch.testing.assert_close(out[keep].double(), expected[keep], atol=2e-5, rtol=2e-5)


def test_in_place_strided_and_many_parts():
    outs, lses = _partials([torch.float32] + [torch.bfloat16] * 36, batch=1, seqlen=9)
    outs[3] = torch.randn(1, 9, 5, 256, device="cuda").to(torch.bfloat16)[..., 64:192]
    lses[3] = lses[3].mT.contiguous().mT
    expected, expected_lse = reference_merge(outs, lses)
    out, lse = ff.merge_attention_states(outs, lses, out=outs[0], out_lse=lses[0])
    assert out is outs[0] and lse is lses[0]
    assert_close_to_reference(out, expected.cpu(), torch.float32)
    assert_lse_close(lse, expected_lse.cpu())


def test_deterministic_and_cuda_graph_safe():
    outs, lses = _partials([torch.float32, torch.bfloat16, torch.bfloat16])
    out = torch.empty_like(outs[0])
    lse = torch.empty_like(lses[0])
    ff.merge_attention_states(outs, lses, out=out, out_lse=lse)  # warm up outside the graph
    first = out.clone(), lse.clone()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ff.merge_attention_states(outs, lses, out=out, out_lse=lse)
    out.zero_()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, first[0]) and torch.equal(lse, first[1])
    fresh = _partials([torch.float32, torch.bfloat16, torch.bfloat16])
    for dst, src in zip((*outs, *lses), (*fresh[0], *fresh[1]), strict=True):
        dst.copy_(src)
    graph.replay()
    torch.cuda.synchronize()
    _check(out, lse, outs, lses, torch.float32)


def _parts_of(outs, lses):
    codes = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}
    return [
        (x.data_ptr(), codes[x.dtype], *x.stride()[:3], lse.data_ptr(), *lse.stride())
        for x, lse in zip(outs, lses, strict=True)
    ]


@pytest.mark.parametrize(
    "break_it,message",
    [
        (lambda parts, out, lse: (parts * 9, out, lse), "num_parts must be in [1, 16]"),
        (lambda parts, out, lse: (parts, (out[0] + 2, *out[1:]), lse), "out must be aligned"),
        (lambda parts, out, lse: (parts, (0, *out[1:]), lse), "out is NULL"),
        (lambda parts, out, lse: (parts, (out[0], 7, *out[2:]), lse), "out_dtype must be"),
        (lambda parts, out, lse: (parts, (*out[:2], -8, *out[3:]), lse), "out: stride 0"),
        (lambda parts, out, lse: (parts, (*out[:3], 0, *out[4:]), lse), "out: strides make"),
        (lambda parts, out, lse: ([(0, *parts[0][1:]), parts[1]], out, lse), "parts[0].out is"),
        (lambda parts, out, lse: (parts, (parts[0][0] + 4, *out[1:]), lse), "out overlaps"),
        (lambda parts, out, lse: (parts, out, (lse[0] + 2, *lse[1:])), "out_lse must be"),
    ],
)
def test_c_api_rejects_bad_arguments(break_it, message):
    from forge_flash.discovery import plugin_binding

    _C = plugin_binding()  # the binding of the plugin in use (forge_flash_cu13 or _cu12)
    assert _C is not None, "no kernel plugin in use"

    outs, lses = _partials([torch.float32] * 2, seqlen=8, heads=2, head_dim=16)
    dest, dest_lse = torch.empty_like(outs[0]), torch.empty_like(lses[0])
    good = (
        _parts_of(outs, lses),
        (dest.data_ptr(), 2, *dest.stride()[:3]),
        (dest_lse.data_ptr(), *dest_lse.stride()),
    )
    parts, out, out_lse = break_it(*good)
    stream = torch.cuda.current_stream().cuda_stream
    with pytest.raises(ValueError) as info:
        _C.merge_states(parts, out, out_lse, 2, 8, 2, 16, 0, stream)
    assert message in str(info.value)
    _C.merge_states(*good, 2, 8, 2, 16, 0, stream)  # the unbroken call runs
    _check(dest, dest_lse, outs, lses, torch.float32)
