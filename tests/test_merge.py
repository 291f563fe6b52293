"""forge_flash.merge_attention_states on the CPU: against a float64 reference of the merge, the
attention over a union of key sets, empty and NaN partials, in-place use, argument errors, and
the CUDA adapter's pointer plumbing through a fake of the binding's ``merge_states``."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import forge_flash as ff

from helpers.fake_plugin import STREAM, CpuCudaBackend, FakeBinding, _view
from helpers.merge_reference import reference_merge
from helpers.reference import reference_attention
from helpers.tolerance import assert_close_to_reference, assert_lse_close


def _partials(parts, batch=2, seqlen=5, heads=3, head_dim=12, dtypes=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    dtypes = dtypes or [torch.float32] * parts
    outs = [torch.randn(batch, seqlen, heads, head_dim, generator=gen).to(d) for d in dtypes]
    lses = [3 * torch.randn(batch, heads, seqlen, generator=gen) for _ in range(parts)]
    return outs, lses


def test_merge_of_key_splits_is_the_attention_over_all_keys():
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 7, 4, 24, generator=gen)
    k = torch.randn(2, 20, 2, 24, generator=gen)
    v = torch.randn(2, 20, 2, 24, generator=gen)
    bounds = [0, 6, 7, 20]  # three disjoint key sets, one of a single key
    outs, lses = [], []
    for lo, hi in itertools.pairwise(bounds):
        part, part_lse = ff.flash_attn_fwd(q, k[:, lo:hi], v[:, lo:hi], return_lse=True)
        outs.append(part)
        lses.append(part_lse)
    out, lse = ff.merge_attention_states(outs, lses)
    expected, expected_lse = reference_attention(q, k, v)
    assert out.dtype == torch.float32
    assert_close_to_reference(out, expected, torch.float32)
    assert_lse_close(lse, expected_lse)


def test_cascade_attention_over_a_shared_prefix():
    """The use merge.py documents: every request attends to one shared prefix (its queries
    folded into one batch row, the prefix K/V read once) and causally to its own suffix."""
    gen = torch.Generator().manual_seed(5)
    batch, prefix_len, suffix_len, heads, heads_k, head_dim = 3, 11, 6, 4, 2, 16
    q = torch.randn(batch, suffix_len, heads, head_dim, generator=gen)
    prefix_k, prefix_v = torch.randn(2, 1, prefix_len, heads_k, head_dim, generator=gen)
    suffix_k, suffix_v = torch.randn(2, batch, suffix_len, heads_k, head_dim, generator=gen)
    folded = q.reshape(1, batch * suffix_len, heads, head_dim)
    prefix_out, prefix_lse = ff.flash_attn_fwd(folded, prefix_k, prefix_v, return_lse=True)
    prefix_out = prefix_out.view(batch, suffix_len, heads, head_dim)
    prefix_lse = prefix_lse[0].view(heads, batch, suffix_len).transpose(0, 1)  # (b, h, s)
    suffix_out, suffix_lse = ff.flash_attn_fwd(q, suffix_k, suffix_v, causal=True, return_lse=True)
    out, lse = ff.merge_attention_states([prefix_out, suffix_out], [prefix_lse, suffix_lse])
    whole_k = torch.cat([prefix_k.expand(batch, -1, -1, -1), suffix_k], dim=1)
    whole_v = torch.cat([prefix_v.expand(batch, -1, -1, -1), suffix_v], dim=1)
    expected, expected_lse = reference_attention(q, whole_k, whole_v, causal=True)
    assert_close_to_reference(out, expected, torch.float32)
    assert_lse_close(lse, expected_lse)


@pytest.mark.parametrize(
    "dtypes,result",
    [
        ([torch.float32, torch.float32], torch.float32),
        ([torch.bfloat16, torch.bfloat16, torch.bfloat16], torch.bfloat16),
        ([torch.float16, torch.float16], torch.float16),
        ([torch.float32, torch.bfloat16], torch.float32),  # a running state and a block
        ([torch.float64, torch.float32], torch.float64),
    ],
    ids=str,
)
def test_matches_the_float64_reference(dtypes, result):
    outs, lses = _partials(len(dtypes), dtypes=dtypes, head_dim=13)  # odd head_dim
    out, lse = ff.merge_attention_states(outs, lses)
    expected, expected_lse = reference_merge(outs, lses)
    assert out.dtype == result and lse.dtype == torch.float32
    tolerance_dtype = torch.float32 if result == torch.float64 else result
    assert_close_to_reference(out, expected, tolerance_dtype)
    assert_lse_close(lse, expected_lse)


def test_empty_partials_weigh_nothing_and_all_empty_rows_give_zero_and_neg_inf():
    outs, lses = _partials(3)
    lses[1][0, 1, :] = -math.inf  # part 1 saw no key for these rows...
    outs[1][0, :, 1, :] = math.nan  # ...and its output there is never read
    for lse in lses:
        lse[1, 2, 3] = -math.inf  # no part saw a key: row (1, 3, 2)
    for part in outs:
        part[1, 3, 2, :] = math.inf
    out, lse = ff.merge_attention_states(outs, lses)
    assert torch.all(out[1, 3, 2] == 0) and lse[1, 2, 3] == -math.inf
    expected, expected_lse = reference_merge(outs, lses)
    assert_close_to_reference(out, expected, torch.float32)
    assert_lse_close(lse, expected_lse)


def test_a_single_partial_comes_back_unchanged():
    outs, lses = _partials(1)
    lses[0][0, 0, 0] = -math.inf
    outs[0][0, 0, 0] = 0.0
    out, lse = ff.merge_attention_states(outs, lses)
    torch.testing.assert_close(out, outs[0], rtol=2e-7, atol=0)
    torch.testing.assert_close(lse, lses[0], rtol=2e-7, atol=0)


def test_nan_propagates():
    outs, lses = _partials(2)
    lses[0][0, 1, 2] = math.nan  # a NaN LSE: row (0, 2, 1) out and LSE NaN
    outs[1][1, 0, 0, 5] = math.nan  # a NaN in a weighed part: that element NaN
    out, lse = ff.merge_attention_states(outs, lses)
    assert torch.isnan(out[0, 2, 1]).all() and torch.isnan(lse[0, 1, 2])
    assert torch.isnan(out[1, 0, 0, 5]) and not torch.isnan(lse[1, 0, 0])
    nan_rows = torch.isnan(out).any(-1)
    assert nan_rows.sum() == 2 and torch.isnan(lse).sum() == 1


def test_large_lse_differences_do_not_overflow():
    outs, lses = _partials(2)
    lses[0] += 200.0  # exp(200) overflows float32: the merge must weigh against the maximum
    lses[1] -= 200.0
    out, lse = ff.merge_attention_states(outs, lses)
    expected, expected_lse = reference_merge(outs, lses)
    assert_close_to_reference(out, expected, torch.float32)
    assert_lse_close(lse, expected_lse)


def test_in_place_into_the_first_partial_and_inputs_otherwise_untouched():
    outs, lses = _partials(3, dtypes=[torch.float32, torch.bfloat16, torch.float16])
    expected, expected_lse = reference_merge(outs, lses)
    copies = [x.clone() for x in (*outs[1:], *lses[1:])]
    out, lse = ff.merge_attention_states(outs, lses, out=outs[0], out_lse=lses[0])
    assert out is outs[0] and lse is lses[0]
    assert_close_to_reference(out, expected, torch.float32)
    assert_lse_close(lse, expected_lse)
    for before, after in zip(copies, (*outs[1:], *lses[1:]), strict=True):
        assert torch.equal(before, after)


def test_stacked_tensors_and_strided_destinations():
    outs, lses = _partials(4)
    stacked_out, stacked_lse = torch.stack(outs), torch.stack(lses)
    out = torch.zeros(2, 5, 3, 20, dtype=torch.bfloat16)[..., 4:16]  # strided rows
    lse = torch.zeros(3, 2, 5).permute(1, 0, 2)  # (batch, heads, seqlen), heads outermost
    got, got_lse = ff.merge_attention_states(stacked_out, stacked_lse, out=out, out_lse=lse)
    assert got is out and got_lse is lse
    expected, expected_lse = reference_merge(outs, lses)
    assert_close_to_reference(out, expected, torch.bfloat16)
    assert_lse_close(lse, expected_lse)


def test_deterministic():
    outs, lses = _partials(5, dtypes=[torch.bfloat16] * 5)
    first = ff.merge_attention_states(outs, lses)
    second = ff.merge_attention_states(outs, lses)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_empty_shapes():
    outs, lses = _partials(2, batch=0)
    out, lse = ff.merge_attention_states(outs, lses)
    assert out.shape == (0, 5, 3, 12) and lse.shape == (0, 3, 5)


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda o, ls: ff.merge_attention_states([], []), ValueError, "outs must hold"),
        (lambda o, ls: ff.merge_attention_states(o[0], ls), ValueError, "outs as one tensor"),
        (lambda o, ls: ff.merge_attention_states("ab", ls), TypeError, "outs must be a sequence"),
        (lambda o, ls: ff.merge_attention_states([o[0], 1], ls), TypeError, "outs[1] must be"),
        (lambda o, ls: ff.merge_attention_states(o, ls[:1]), ValueError, "lses must hold one"),
        (lambda o, ls: ff.merge_attention_states(o, [ls[0], ls[1].double()]), TypeError, "lses[1]"),
        (lambda o, ls: ff.merge_attention_states(o, [ls[0], ls[1].mT]), ValueError, "lses[1]"),
        (lambda o, ls: ff.merge_attention_states([o[0], o[1][:, :4]], ls), ValueError, "outs[1]"),
        (lambda o, ls: ff.merge_attention_states([o[0], o[1].int()], ls), TypeError, "outs[1]"),
        (
            lambda o, ls: ff.merge_attention_states([o[0], o[1].to("meta")], ls),
            ValueError,
            "outs[1]",
        ),
        (lambda o, ls: ff.merge_attention_states(o, ls, out=o[0][0]), ValueError, "out must"),
        (lambda o, ls: ff.merge_attention_states(o, ls, out=o[0].long()), TypeError, "out must"),
        (
            lambda o, ls: ff.merge_attention_states(o, ls, out_lse=ls[0].half()),
            TypeError,
            "out_lse",
        ),
        (lambda o, ls: ff.merge_attention_states(o, ls, out_lse=ls[0][:1]), ValueError, "out_lse"),
    ],
)
def test_bad_arguments_are_named(call, error, message):
    outs, lses = _partials(2)
    with pytest.raises(error) as info:
        call(outs, lses)
    assert str(info.value).startswith(message)


# -- the CUDA adapter, on CPU memory, with a pointer-level fake of _C.merge_states ------------

_CODES = {0: torch.float16, 1: torch.bfloat16, 2: torch.float32}


class _MergeBinding(FakeBinding):
    """FakeBinding plus ``merge_states``: reads every part through the pointers and strides it
    is given (as the kernel would), checks what the C API checks, merges with the reference."""

    def merge_states(self, parts, out, out_lse, batch, seqlen, heads, head_dim, device, stream):
        self.calls.append(dict(entry="merge", parts=parts, out=out, out_lse=out_lse,
                               device=device, stream=stream))  # fmt: skip
        if not 1 <= len(parts) <= 16:
            raise ValueError(f"num_parts must be in [1, 16], got {len(parts)}")
        out_shape, lse_shape = (batch, seqlen, heads, head_dim), (batch, heads, seqlen)
        views, lse_views = [], []
        for ptr, code, *rest in parts:
            views.append(_view(ptr, _CODES[code], out_shape, (*rest[:3], 1)))
            lse_views.append(_view(rest[3], torch.float32, lse_shape, tuple(rest[4:])))
        result, result_lse = reference_merge(views, lse_views)
        _view(out[0], _CODES[out[1]], out_shape, (*out[2:], 1)).copy_(result)
        _view(out_lse[0], torch.float32, lse_shape, tuple(out_lse[1:])).copy_(result_lse)


@pytest.fixture
def merge_binding(monkeypatch, fresh_discovery):
    fake = _MergeBinding()
    monkeypatch.setattr("forge_flash.discovery._active", CpuCudaBackend(fake))
    return fake


def test_adapter_passes_pointers_strides_and_dtypes(merge_binding):
    outs, lses = _partials(2, dtypes=[torch.float32, torch.bfloat16], head_dim=16)
    outs[1] = torch.randn(2, 5, 3, 24).to(torch.bfloat16)[..., 8:]  # strided part
    lses[1] = lses[1].mT.contiguous().mT  # non-contiguous LSE
    out, lse = ff.merge_attention_states(outs, lses)
    (call,) = merge_binding.calls
    assert call["parts"][1] == (
        outs[1].data_ptr(), 1, *outs[1].stride()[:3], lses[1].data_ptr(), *lses[1].stride()
    )  # fmt: skip
    assert call["out"] == (out.data_ptr(), 2, *out.stride()[:3])
    assert call["out_lse"] == (lse.data_ptr(), *lse.stride())
    assert (call["device"], call["stream"]) == (0, STREAM)
    expected, expected_lse = reference_merge(outs, lses)
    assert_close_to_reference(out, expected, torch.float32)
    assert_lse_close(lse, expected_lse)


def test_adapter_merges_in_place_without_a_copy(merge_binding):
    outs, lses = _partials(2)
    expected, expected_lse = reference_merge(outs, lses)
    ff.merge_attention_states(outs, lses, out=outs[0], out_lse=lses[0])
    (call,) = merge_binding.calls
    assert call["out"][0] == outs[0].data_ptr() and call["out_lse"][0] == lses[0].data_ptr()
    assert_close_to_reference(outs[0], expected, torch.float32)
    assert_lse_close(lses[0], expected_lse)


def test_adapter_gives_the_kernel_a_fresh_buffer_for_an_overlapping_out(merge_binding):
    outs, lses = _partials(2)
    base = torch.randn(2, 6, 3, 12)
    part, target = base[:, :5], base[:, 1:]  # the destination overlaps part 0, a token on
    expected, expected_lse = reference_merge([part.clone(), outs[1]], lses)
    _, lse = ff.merge_attention_states([part, outs[1]], lses, out=target)
    (call,) = merge_binding.calls
    assert call["out"][0] != target.data_ptr()  # written elsewhere, then copied
    assert_close_to_reference(target, expected, torch.float32)
    assert_lse_close(lse, expected_lse)


def test_adapter_merges_more_parts_than_one_launch_takes(merge_binding):
    outs, lses = _partials(37, batch=1, seqlen=3, heads=2, head_dim=8)
    out, lse = ff.merge_attention_states(outs, lses)
    assert len(merge_binding.calls) == 3  # 16, then 1 + 15, then 1 + 6
    assert [len(c["parts"]) for c in merge_binding.calls] == [16, 16, 7]
    expected, expected_lse = reference_merge(outs, lses)
    assert_close_to_reference(out, expected, torch.float32)
    assert_lse_close(lse, expected_lse)


def test_adapter_leaves_other_dtypes_to_the_naive_path(merge_binding):
    outs, lses = _partials(2, dtypes=[torch.float64, torch.float32])
    out, _ = ff.merge_attention_states(outs, lses)
    assert merge_binding.calls == [] and out.dtype == torch.float64
