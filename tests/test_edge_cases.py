"""Masked rows, empty shapes, out=, strided inputs, untouched inputs, bounded memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import forge_flash as ff

from helpers.reference import reference_attention
from helpers.tolerance import assert_close_to_reference, assert_lse_close


def _qkv(batch, seqlen_q, seqlen_k, heads, heads_k, head_dim, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, seqlen_q, heads, head_dim, generator=gen).to(dtype)
    k = torch.randn(batch, seqlen_k, heads_k, head_dim, generator=gen).to(dtype)
    v = torch.randn(batch, seqlen_k, heads_k, head_dim, generator=gen).to(dtype)
    return q, k, v


@pytest.mark.parametrize("return_lse", [False, True])
def test_causal_rows_that_see_no_key_give_zero_and_neg_inf(return_lse):
    q, k, v = _qkv(2, 9, 4, 4, 2, 32)  # rows 0..4 see nothing, row 5 sees key 0 ...
    result = ff.flash_attn_fwd(q, k, v, causal=True, return_lse=True)
    out, lse = result
    assert torch.equal(out[:, :5], torch.zeros_like(out[:, :5]))
    assert torch.isneginf(lse[:, :, :5]).all()
    assert torch.isfinite(lse[:, :, 5:]).all()
    # Row 5 sees only key 0: its output is v[key 0] of its KV head exactly.
    torch.testing.assert_close(out[:, 5], v[:, 0].repeat_interleave(2, dim=1))
    if not return_lse:
        plain = ff.flash_attn_fwd(q, k, v, causal=True)
        assert torch.equal(plain[:, :5], torch.zeros_like(plain[:, :5]))
        torch.testing.assert_close(plain, out, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_no_keys_at_all(dtype):
    q, k, v = _qkv(2, 3, 0, 4, 4, 16, dtype)
    out, lse = ff.flash_attn_fwd(q, k, v, return_lse=True)
    assert torch.equal(out, torch.zeros_like(out)) and torch.isneginf(lse).all()
    assert torch.equal(ff.flash_attn_fwd(q, k, v), torch.zeros_like(out))


@pytest.mark.parametrize("batch,seqlen_q,seqlen_k", [(0, 5, 5), (2, 0, 5), (0, 0, 0), (3, 0, 0)])
def test_empty_shapes(batch, seqlen_q, seqlen_k):
    q, k, v = _qkv(batch, seqlen_q, seqlen_k, 4, 2, 16)
    out, lse = ff.flash_attn_fwd(q, k, v, causal=True, return_lse=True)
    assert out.shape == q.shape and lse.shape == (batch, 4, seqlen_q)


def test_empty_varlen_batch():
    q = torch.zeros(0, 4, 16)
    k = torch.zeros(0, 2, 16)
    cu = torch.zeros(1, dtype=torch.int32)
    out, lse = ff.flash_attn_varlen_fwd(q, k, k, cu, cu, 0, 0, return_lse=True)
    assert out.shape == (0, 4, 16) and lse.shape == (4, 0)


def test_empty_decode_batch():
    q = torch.zeros(0, 4, 16)
    cache = torch.zeros(0, 7, 2, 16)
    out = ff.batched_decode_attention(q, cache, cache, torch.zeros(0, dtype=torch.int32))
    assert out.shape == (0, 4, 16)


def test_out_receives_the_result_even_when_strided():
    q, k, v = _qkv(2, 6, 8, 4, 2, 32)
    expected = ff.flash_attn_fwd(q, k, v, causal=True)
    storage = torch.full((2, 4, 6, 32), float("nan")).transpose(1, 2)  # (2, 6, 4, 32), strided
    returned = ff.flash_attn_fwd(q, k, v, causal=True, out=storage)
    assert returned is storage
    torch.testing.assert_close(storage, expected, atol=1e-6, rtol=1e-6)


def test_inputs_are_not_modified():
    q, k, v = _qkv(2, 33, 40, 6, 3, 64, torch.bfloat16)
    copies = [t.clone() for t in (q, k, v)]
    ff.flash_attn_fwd(q, k, v, causal=True, return_lse=True)
    ff.flash_attn_fwd(q, k, v)
    for before, after in zip(copies, (q, k, v), strict=True):
        assert torch.equal(before, after)


def test_forward_only_records_no_autograd_graph():
    q, k, v = (t.requires_grad_() for t in _qkv(1, 20, 20, 4, 2, 16))
    out, lse = ff.flash_attn_fwd(q, k, v, causal=True, return_lse=True)
    assert not out.requires_grad and not lse.requires_grad
    assert not ff.flash_attn_fwd(q, k, v).requires_grad


def test_views_of_a_packed_qkv_projection():
    # q, k, v sliced out of one (batch, seqlen, 3, heads, head_dim) projection: no copies needed.
    gen = torch.Generator().manual_seed(5)
    qkv = torch.randn(2, 50, 3, 4, 32, generator=gen)
    q, k, v = qkv.unbind(dim=2)
    assert not q.is_contiguous()
    out, lse = ff.flash_attn_fwd(q, k, v, causal=True, return_lse=True)
    expected_out, expected_lse = reference_attention(q, k, v, causal=True)
    assert_close_to_reference(out, expected_out, torch.float32)
    assert_lse_close(lse, expected_lse)


def test_float16_range_values_do_not_overflow_in_half_inputs():
    # Scores far beyond float16's range: the naive path computes them in float32.
    q, k, v = _qkv(1, 4, 6, 2, 2, 64, torch.float16)
    q = q * 200
    k = k * 200
    out, lse = ff.flash_attn_fwd(q, k, v, return_lse=True)
    expected_out, expected_lse = reference_attention(q, k, v)
    assert_close_to_reference(out, expected_out, torch.float16)
    assert_lse_close(lse, expected_lse)


_MEMORY_PROBE = """
import json, resource, sys, torch
sys.path.insert(0, {python_dir!r})
import forge_flash as ff
seqlen, heads, head_dim = {seqlen}, {heads}, {head_dim}
q = torch.randn(1, seqlen, heads, head_dim, dtype=torch.bfloat16)
k = torch.randn(1, seqlen, heads, head_dim, dtype=torch.bfloat16)
v = torch.randn(1, seqlen, heads, head_dim, dtype=torch.bfloat16)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = ff.flash_attn_fwd(q, k, v, causal=True, return_lse={return_lse})
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"grown_kib": after - before}}))
"""


@pytest.mark.parametrize("return_lse", [False, True])
def test_memory_stays_bounded_for_long_prefill(return_lse):
    """4k tokens x 32 heads: a full float32 score matrix would be 2 GiB; the naive path must
    stay far below that (the same bound is what lets 32k tokens run on a 24 GiB machine)."""
    seqlen, heads, head_dim = 4096, 32, 128
    python_dir = os.path.dirname(os.path.dirname(ff.__file__))
    code = _MEMORY_PROBE.format(
        python_dir=python_dir, seqlen=seqlen, heads=heads, head_dim=head_dim, return_lse=return_lse
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    grown_mib = json.loads(result.stdout.strip().splitlines()[-1])["grown_kib"] / 1024
    full_scores_mib = seqlen * seqlen * heads * 4 / 2**20
    assert grown_mib < full_scores_mib / 2, f"peak memory grew by {grown_mib:.0f} MiB"


@pytest.mark.parametrize(
    "seqlen_q,seqlen_k",
    [(3, 50), (40, 60), (33, 33), (60, 40)],
    ids=["decode-rows", "more-keys", "square", "more-queries"],
)
@pytest.mark.parametrize("return_lse", [False, True])
def test_naive_blocks_of_rows_give_the_same_answer(monkeypatch, seqlen_q, seqlen_k, return_lse):
    """Tiny block limits force every blocked branch of the naive path (masks and score blocks
    of a few rows, and few-row causal calls that would otherwise fold the GQA group)."""
    from forge_flash.backends import naive

    monkeypatch.setattr(naive, "MASK_BLOCK_ELEMENTS", 2 * seqlen_k)
    monkeypatch.setattr(naive, "SCORE_BLOCK_BYTES", 2 * 8 * seqlen_k * 4)
    q, k, v = _qkv(2, seqlen_q, seqlen_k, 8, 2, 32, seed=seqlen_q)
    expected_out, expected_lse = reference_attention(q, k, v, causal=True)
    result = ff.flash_attn_fwd(q, k, v, causal=True, return_lse=return_lse)
    out = result[0] if return_lse else result
    assert_close_to_reference(out, expected_out, q.dtype)
    if return_lse:
        assert_lse_close(result[1], expected_lse)
