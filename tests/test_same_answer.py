"""One input, one answer, on every entry point, flag and backend: any finite softmax scale (0
and negative included) computes the definition, and a NaN in q, k or v reaches the rows that
see it as NaN, never as 0. The CPU runs the naive path and the CUDA adapter over the
pointer-level fake binding; tests/gpu/test_same_answer_gpu.py holds the kernels to the same."""

from __future__ import annotations

import pytest
import torch

import forge_flash as ff

from helpers.fake_plugin import CpuCudaBackend, FakeBinding
from helpers.reference import reference_attention
from helpers.tolerance import assert_close_to_reference, assert_lse_close

NAN = float("nan")


@pytest.fixture(params=["naive", "adapter"])
def backend(request, monkeypatch, fresh_discovery):
    """The naive path, or the CUDA adapter over the fake binding (what reaches the plugin)."""
    if request.param == "adapter":
        monkeypatch.setattr("forge_flash.discovery._active", CpuCudaBackend(FakeBinding()))
        return torch.float16
    return torch.float32


def _qkv(batch, seqlen_q, seqlen_k, heads, heads_k, dim, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(batch, seqlen_q, heads, dim), (batch, seqlen_k, heads_k, dim)]
    q = torch.randn(*shapes[0], generator=gen).to(dtype)
    k = torch.randn(*shapes[1], generator=gen).to(dtype)
    v = torch.randn(*shapes[1], generator=gen).to(dtype)
    return q, k, v


@pytest.mark.parametrize("scale", [0.0, -0.3, -2.0])
@pytest.mark.parametrize("causal", [False, True])
def test_any_finite_scale(backend, scale, causal):
    dtype = backend
    q, k, v = _qkv(2, 9, 13, 4, 2, 32, dtype)
    out, lse = ff.flash_attn_fwd(q, k, v, softmax_scale=scale, causal=causal, return_lse=True)
    expected, expected_lse = reference_attention(q, k, v, scale=scale, causal=causal)
    assert_close_to_reference(out, expected, dtype)
    assert_lse_close(lse, expected_lse)
    # Without the LSE the naive path takes SDPA where it can: scale <= 0 must not.
    assert_close_to_reference(
        ff.flash_attn_fwd(q, k, v, softmax_scale=scale, causal=causal), expected, dtype
    )


def test_any_finite_scale_in_decode_and_flat_calls(backend):
    dtype = backend
    q, k, v = _qkv(3, 1, 20, 4, 2, 16, dtype)
    lengths = torch.tensor([20, 7, 0], dtype=torch.int32)
    out = ff.batched_decode_attention(q[:, 0], k, v, lengths, softmax_scale=-0.5)
    expected, _ = reference_attention(q, k, v, scale=-0.5, key_lengths=lengths.tolist())
    assert_close_to_reference(out, expected[:, 0], dtype)
    flat = ff.attention_fwd(q.flatten(2), k.flatten(2), v.flatten(2), 4, 2, 16, 0.0, True)
    expected, _ = reference_attention(q, k, v, scale=0.0, causal=True)
    assert_close_to_reference(flat, expected.flatten(2), dtype)


def _nan_rows(out: torch.Tensor) -> torch.Tensor:
    return out.isnan().any(dim=-1)


@pytest.mark.parametrize("return_lse", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("where", ["q", "k", "v"])
def test_nan_reaches_every_row_that_sees_it(backend, where, causal, return_lse):
    dtype = backend
    q, k, v = _qkv(2, 6, 6, 4, 2, 16, dtype)
    if where == "q":  # query row 3 of batch 1, head 2
        q[1, 3, 2, 5] = NAN
    elif where == "k":  # key 2 of batch 0, KV head 1 (query heads 2 and 3)
        k[0, 2, 1, 0] = NAN
    else:
        v[0, 2, 1, 7] = NAN
    result = ff.flash_attn_fwd(q, k, v, causal=causal, return_lse=return_lse)
    out = result[0] if return_lse else result
    expected, _ = reference_attention(q, k, v, causal=causal)
    nan = _nan_rows(out)
    if where == "q":
        assert nan[1, 3, 2] and nan.sum() == 1
    else:
        # Rows of query heads 2-3 that see key 2: all rows, or rows >= 2 with the causal mask.
        sees = torch.zeros_like(nan)
        sees[0, 2 if causal else 0 :, 2:4] = True
        # (A row that does not see the key may come back NaN too: masked keys of a tile still
        # enter its matrix products on some paths, as 0 * NaN. Never the other way round.)
        assert nan[sees].all(), "a row that sees the NaN came back without it"
    rest = ~nan & ~_nan_rows(expected)
    assert_close_to_reference(out[rest], expected[rest], dtype)


def test_nan_in_every_entry_point(backend):
    dtype = backend
    q, k, v = _qkv(2, 1, 9, 4, 2, 16, dtype)
    q[1, 0, 0, 3] = NAN  # sequence 1, head 0
    lengths = torch.tensor([9, 5], dtype=torch.int32)
    decode = ff.batched_decode_attention(q[:, 0], k, v, lengths)
    assert _nan_rows(decode)[1, 0] and _nan_rows(decode).sum() == 1
    cu = torch.tensor([0, 1, 2], dtype=torch.int32)
    cu_k = torch.tensor([0, 9, 18], dtype=torch.int32)
    packed = ff.flash_attn_varlen_fwd(
        q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), cu, cu_k, 1, 9
    )
    assert _nan_rows(packed)[1, 0] and _nan_rows(packed).sum() == 1
    flat = (q.flatten(2), k.flatten(2), v.flatten(2), 4, 2, 16)
    for entry in (ff.attention_fwd, ff.multi_head_attention, ff.decoder_attention):
        out = entry(*flat).unflatten(-1, (4, 16))
        assert _nan_rows(out)[1, 0, 0] and _nan_rows(out).sum() == 1, entry.__name__


@pytest.mark.parametrize("return_lse", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seqlen_q,seqlen_k", [(3, 1), (4, 6), (6, 4)])
def test_a_row_whose_every_key_is_nan_comes_back_nan(
    backend, seqlen_q, seqlen_k, causal, return_lse
):
    # Every score of such a row is NaN. SDPA's CPU kernel, whose running max skips NaN, gave
    # those rows 0 (the naive path without an LSE; found by a fuzz of the entry points).
    dtype = backend
    q, k, v = _qkv(2, seqlen_q, seqlen_k, 4, 2, 16, dtype, seed=4)
    k[1, :, 1, 3] = NAN  # every key of batch 1's KV head 1: query heads 2 and 3
    result = ff.flash_attn_fwd(q, k, v, causal=causal, return_lse=return_lse)
    out = result[0] if return_lse else result
    expected, _ = reference_attention(q, k, v, causal=causal)
    sees_a_key = (
        torch.arange(seqlen_q) + seqlen_k - seqlen_q >= 0
        if causal
        else torch.ones(seqlen_q, dtype=torch.bool)
    )
    nan = torch.zeros(2, seqlen_q, 4, dtype=torch.bool)
    nan[1, :, 2:] = sees_a_key.unsqueeze(-1)
    assert torch.equal(_nan_rows(out), nan)
    assert torch.equal(_nan_rows(expected), nan)  # the reference agrees
    assert_close_to_reference(out[~nan], expected[~nan], dtype)


@pytest.mark.parametrize("return_lse", [False, True])
@pytest.mark.parametrize("seqlen_q,seqlen_k", [(4, 6), (6, 6), (2, 9)])
def test_the_naive_path_keeps_a_nan_key_out_of_the_rows_its_mask_hides_it_from(
    seqlen_q, seqlen_k, return_lse
):
    # Causal: the last key is seen by the last row only. An additive 0 / -inf mask gives its NaN
    # score NaN in the other rows too (NaN + -inf); the naive path masks by a select there.
    # (A NaN in V is another matter: 0 * NaN in P V reaches those rows on every path, the
    # reference's included.)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        q, k, v = _qkv(1, seqlen_q, seqlen_k, 4, 2, 16, dtype, seed=5)
        k[0, -1, 0, 2] = NAN  # KV head 0: query heads 0 and 1
        result = ff.flash_attn_fwd(q, k, v, causal=True, return_lse=return_lse)
        out = result[0] if return_lse else result
        expected, _ = reference_attention(q, k, v, causal=True)
        nan = torch.zeros(1, seqlen_q, 4, dtype=torch.bool)
        nan[0, -1, :2] = True
        assert torch.equal(_nan_rows(out), nan), dtype
        assert_close_to_reference(out[~nan], expected[~nan], dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_the_naive_path_finds_exactly_the_rows_all_zero_or_holding_a_nan(dtype):
    from forge_flash.backends.naive import _rows_all_zero_or_nan

    out = torch.randn(2, 5, 3, 8).to(dtype)
    assert not _rows_all_zero_or_nan(out)
    for value in (float("inf"), float("-inf"), 1e-30, -1e-30):  # not doubts: not 0, not NaN
        odd = out.clone()
        odd[1, 2, 0, 3] = value
        assert not _rows_all_zero_or_nan(odd), value
    for row in (torch.zeros(8), -torch.zeros(8), torch.tensor([0.0, -0.0] * 4)):
        zero = out.clone()
        zero[0, 4, 2] = row
        assert _rows_all_zero_or_nan(zero)
    for sign in (1.0, -1.0):  # a NaN with either sign bit
        nan = out.clone()
        nan[1, 0, 1, 7] = sign * NAN
        assert _rows_all_zero_or_nan(nan), sign
    strided = torch.randn(2, 5, 8, 3).to(dtype).transpose(-1, -2)  # rows not contiguous
    assert not _rows_all_zero_or_nan(strided)
    strided[0, 0, 1] = 0
    assert _rows_all_zero_or_nan(strided)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_naive_path_poisons_exactly_the_rows_whose_query_holds_a_nan(dtype):
    # Off the CPU the naive path cannot read a check back without waiting for the device, so
    # it writes NaN into the output rows of NaN query rows (SDPA's CPU kernel returned 0 there;
    # other devices' kernels are not trusted to do better). Its logic, on CPU tensors.
    from forge_flash.backends.naive import _poison_nan_query_rows

    q = torch.randn(2, 5, 3, 8).to(dtype)
    for poison in ([], [(0, 1, 2)], [(1, 4, 0), (0, 0, 1)]):
        holds = q.clone()
        for b, i, h in poison:
            holds[b, i, h, 3] = NAN
        out = torch.zeros_like(holds)
        _poison_nan_query_rows(holds, out, 0)
        assert torch.equal(_nan_rows(out), holds.isnan().any(dim=-1))
    infinite = q.clone()
    infinite[0, 1, 0, 2], infinite[1, 2, 1, 5] = float("inf"), float("-inf")  # no NaN
    out = torch.zeros_like(infinite)
    _poison_nan_query_rows(infinite, out, 0)
    assert not out.isnan().any()
    later = q.clone()
    later[0, 0, 0, 0] = NAN  # before first_row: not this call's to poison
    out = torch.zeros_like(later)
    _poison_nan_query_rows(later, out, 1)
    assert not out.isnan().any()


def test_a_row_that_sees_no_key_stays_zero_even_with_a_nan_query(backend):
    dtype = backend
    q, k, v = _qkv(1, 5, 3, 2, 2, 16, dtype)  # causal: rows 0 and 1 see no key
    q[0, 0, 0, 0] = NAN
    out, lse = ff.flash_attn_fwd(q, k, v, causal=True, return_lse=True)
    assert torch.equal(out[0, :2].float(), torch.zeros(2, 2, 16))
    assert torch.isneginf(lse[0, :, :2]).all()


# -- decoder_attention checks every argument, on every route, before any work ---------------


def _flat(batch, seqlen_q, seqlen_k):
    gen = torch.Generator().manual_seed(3)
    return (
        torch.randn(batch, seqlen_q, 4 * 16, generator=gen),
        torch.randn(batch, seqlen_k, 2 * 16, generator=gen),
        torch.randn(batch, seqlen_k, 2 * 16, generator=gen),
    )


ROUTES = {"batched decode": (3, 1, 9), "single decode": (1, 1, 9), "prefill": (2, 5, 9)}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"is_causal": "x"}, TypeError, r"^is_causal must be a bool"),
        ({"cast_dtype": torch.float64}, ValueError, r"^cast_dtype must be"),
        ({"scale": float("nan")}, ValueError, r"^scale must be finite"),
        ({"scale": "0.1"}, TypeError, r"^scale must be a float"),
        ({"window_size": (-2, 0)}, ValueError, r"^window_size"),
        ({"softcap": -1.0}, ValueError, r"^softcap"),
    ],
)
def test_decoder_attention_refuses_bad_arguments_on_every_route(route, kwargs, error, match):
    q, k, v = _flat(*ROUTES[route])
    with pytest.raises(error, match=match):
        ff.decoder_attention(q, k, v, 4, 2, 16, **kwargs)
