"""The kernels give the CPU's answer (tests/test_same_answer.py): any finite softmax scale, and
NaN in, NaN out on every kernel path (SM80 prefill, decode tiles with and without split-KV,
the Hopper kernels, varlen, batched decode)."""

from __future__ import annotations

import pytest
import torch

import forge_flash as ff

from helpers.kernels import (
    assert_close_to_reference,
    kernel_backend,
    rand_qkv,
    reference_attention,
    torch_attention,
)

NAN = float("nan")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("scale", [0.0, -0.08, -1.0])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "seqlen_q,seqlen_k,head_dim", [(300, 300, 128), (1, 5000, 128), (77, 1100, 64), (40, 40, 256)]
)
def test_any_finite_scale(seqlen_q, seqlen_k, head_dim, causal, scale, dtype):
    q, k, v = rand_qkv(2, seqlen_q, seqlen_k, 8, 2, head_dim, dtype)
    with kernel_backend():
        out, lse = ff.flash_attn_fwd(q, k, v, softmax_scale=scale, causal=causal, return_lse=True)
    ref, ref_lse = reference_attention(q, k, v, causal=causal, scale=scale)
    assert_close_to_reference(out, ref, torch_attention(q, k, v, causal=causal, scale=scale))
    finite = torch.isfinite(ref_lse)
    torch.testing.assert_close(lse[finite], ref_lse[finite].float(), atol=2e-3, rtol=1e-3)


def _nan_rows(out: torch.Tensor) -> torch.Tensor:
    return out.isnan().any(dim=-1)


# Shapes that reach each kernel path: Hopper persistent and per-tile prefill, SM80 prefill at a
# routed head_dim, decode tiles (one pass; split-KV with the cluster merge or the combine kernel).
PATHS = [
    (2, 300, 300, 128),
    (1, 1500, 1500, 64),
    (2, 70, 90, 40),
    (1, 1, 3000, 128),
    (1, 1, 70000, 128),
]


@pytest.mark.parametrize("return_lse", [False, True])
@pytest.mark.parametrize("where", ["q", "k", "v"])
@pytest.mark.parametrize("batch,seqlen_q,seqlen_k,head_dim", PATHS)
def test_nan_reaches_the_rows_that_see_it(batch, seqlen_q, seqlen_k, head_dim, where, return_lse):
    q, k, v = rand_qkv(batch, seqlen_q, seqlen_k, 8, 2, head_dim, torch.bfloat16)
    row, key = seqlen_q // 2, seqlen_k // 3
    if where == "q":
        q[0, row, 3, 1] = NAN
    elif where == "k":
        k[0, key, 1, 0] = NAN  # KV head 1: query heads 4-7
    else:
        v[0, key, 1, 2] = NAN
    with kernel_backend():
        result = ff.flash_attn_fwd(q, k, v, return_lse=return_lse)
    out, lse = result if return_lse else (result, None)
    nan = _nan_rows(out)
    if where == "q":
        assert nan[0, row, 3] and nan.sum() == 1
        if lse is not None:
            assert lse[0, 3, row].isnan() and lse.isnan().sum() == 1
    else:
        assert nan[0, :, 4:].all(), "a row that sees the NaN came back without it"
        assert not nan[0, :, :4].any() and not nan[1:].any()
    ref, _ = reference_attention(q, k, v)
    rest = ~nan  # the other rows: as without the NaN (bf16 output rounding)
    torch.testing.assert_close(out[rest].double(), ref[rest], atol=2e-2, rtol=2e-2)


def test_nan_in_batched_decode_and_varlen():
    q, k, v = rand_qkv(4, 1, 600, 16, 4, 128, torch.float16)
    q[2, 0, 5, 0] = NAN
    lengths = torch.tensor([600, 1, 300, 0], dtype=torch.int32, device="cuda")
    with kernel_backend():
        out = ff.batched_decode_attention(q[:, 0], k, v, lengths)
        cu_q = torch.arange(0, 5, dtype=torch.int32, device="cuda")
        cu_k = torch.arange(0, 2401, 600, dtype=torch.int32, device="cuda")
        packed = ff.flash_attn_varlen_fwd(
            q[:, 0], k.flatten(0, 1), v.flatten(0, 1), cu_q, cu_k, 1, 600
        )
    assert _nan_rows(out)[2, 5] and _nan_rows(out).sum() == 1
    assert _nan_rows(packed)[2, 5] and _nan_rows(packed).sum() == 1


@pytest.mark.parametrize("backend", ["cuda", "naive"])
@pytest.mark.parametrize("return_lse", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seqlen_q,seqlen_k,head_dim", [(3, 1, 128), (40, 300, 64), (300, 40, 128)])
def test_a_row_whose_every_key_is_nan_comes_back_nan(
    seqlen_q, seqlen_k, head_dim, causal, return_lse, backend
):
    # Every score of such a row is NaN: a running max that skips NaN must not turn the row
    # into one that sees no key (0). SDPA's CPU kernel did (tests/test_same_answer.py); here
    # the kernels and the naive path on the GPU (SDPA's CUDA kernels without an LSE).
    q, k, v = rand_qkv(2, seqlen_q, seqlen_k, 8, 2, head_dim, torch.bfloat16)
    k[1, :, 1, 3] = NAN  # every key of batch 1's KV head 1: query heads 4-7
    with kernel_backend(backend):
        result = ff.flash_attn_fwd(q, k, v, causal=causal, return_lse=return_lse)
    out = result[0] if return_lse else result
    rows = torch.arange(seqlen_q, device="cuda")
    sees_a_key = (
        rows + seqlen_k - seqlen_q >= 0 if causal else torch.ones_like(rows, dtype=torch.bool)
    )
    expected = torch.zeros(2, seqlen_q, 8, dtype=torch.bool, device="cuda")
    expected[1, :, 4:] = sees_a_key.unsqueeze(-1)
    assert torch.equal(_nan_rows(out), expected)
    ref, _ = reference_attention(q, k, v, causal=causal)
    assert_close_to_reference(
        out[~expected], ref[~expected], torch_attention(q, k, v, causal=causal)[~expected]
    )
