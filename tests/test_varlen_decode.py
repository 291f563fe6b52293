"""Packed variable-length batches and batched decode against the float64 reference."""

from __future__ import annotations

import pytest
import torch

import forge_flash as ff
from forge_flash.backends import naive

from helpers.fake_plugin import CpuCudaBackend, FakeBinding
from helpers.reference import reference_attention, reference_varlen
from helpers.tolerance import assert_close_to_reference, assert_lse_close


def _packed(seqlens_q, seqlens_k, heads, heads_k, head_dim, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    total_q, total_k = sum(seqlens_q), sum(seqlens_k)
    q = torch.randn(total_q, heads, head_dim, generator=gen).to(dtype)
    k = torch.randn(total_k, heads_k, head_dim, generator=gen).to(dtype)
    v = torch.randn(total_k, heads_k, head_dim, generator=gen).to(dtype)
    cu_q = torch.tensor([0, *torch.tensor(seqlens_q).cumsum(0).tolist()], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(seqlens_k).cumsum(0).tolist()], dtype=torch.int32)
    return q, k, v, cu_q, cu_k


VARLEN_CASES = [
    # uneven, with empty query and empty key sequences, and q longer than k (masked rows)
    ([5, 0, 17, 1, 64, 3], [7, 3, 0, 1, 64, 1]),
    ([1, 1, 1], [100, 1, 37]),  # decode-like rows over different cache lengths
    ([130, 9], [9, 130]),
    ([0], [0]),  # one empty sequence
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seqlens_q,seqlens_k", VARLEN_CASES)
def test_varlen_matches_reference(seqlens_q, seqlens_k, causal, dtype):
    q, k, v, cu_q, cu_k = _packed(seqlens_q, seqlens_k, 8, 2, 64, dtype)
    expected_out, expected_lse = reference_varlen(q, k, v, seqlens_q, seqlens_k, causal=causal)
    out, lse = ff.flash_attn_varlen_fwd(
        q, k, v, cu_q, cu_k, max(seqlens_q), max(seqlens_k), causal=causal, return_lse=True
    )
    assert lse.shape == (8, sum(seqlens_q))
    assert_close_to_reference(out, expected_out, dtype)
    assert_lse_close(lse, expected_lse)
    plain = ff.flash_attn_varlen_fwd(
        q, k, v, cu_q, cu_k, max(seqlens_q), max(seqlens_k), causal=causal
    )
    assert_close_to_reference(plain, expected_out, dtype)


def test_varlen_empty_key_sequence_gives_zero_and_neg_inf():
    q, k, v, cu_q, cu_k = _packed([4, 3], [5, 0], 2, 1, 16, torch.float32)
    out, lse = ff.flash_attn_varlen_fwd(q, k, v, cu_q, cu_k, 4, 5, return_lse=True)
    assert torch.equal(out[4:], torch.zeros_like(out[4:]))
    assert torch.isneginf(lse[:, 4:]).all() and torch.isfinite(lse[:, :4]).all()


def test_varlen_max_seqlen_may_exceed_the_longest():
    q, k, v, cu_q, cu_k = _packed([3, 6], [4, 2], 4, 4, 32, torch.float32)
    tight = ff.flash_attn_varlen_fwd(q, k, v, cu_q, cu_k, 6, 4)
    loose = ff.flash_attn_varlen_fwd(q, k, v, cu_q, cu_k, 100, 100)
    assert torch.equal(tight, loose)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("heads,heads_k", [(32, 8), (8, 1), (6, 6)])
def test_batched_decode_matches_reference(heads, heads_k, dtype):
    gen = torch.Generator().manual_seed(heads)
    batch, max_len, head_dim = 5, 300, 128
    q = torch.randn(batch, heads, head_dim, generator=gen).to(dtype)
    k_cache = torch.randn(batch, max_len, heads_k, head_dim, generator=gen).to(dtype)
    v_cache = torch.randn(batch, max_len, heads_k, head_dim, generator=gen).to(dtype)
    lengths = [0, 1, 299, 300, 37]
    cache_seqlens = torch.tensor(lengths, dtype=torch.int32)
    out, lse = ff.batched_decode_attention(q, k_cache, v_cache, cache_seqlens, return_lse=True)
    expected_out, expected_lse = reference_attention(
        q.unsqueeze(1), k_cache, v_cache, key_lengths=lengths
    )
    assert out.shape == q.shape and lse.shape == (batch, heads)
    assert_close_to_reference(out, expected_out[:, 0], dtype)
    assert_lse_close(lse, expected_lse[:, :, 0])
    assert torch.equal(out[0], torch.zeros_like(out[0]))  # empty cache row
    # Without the LSE the naive path may take SDPA rather than its explicit float32 path.
    plain = ff.batched_decode_attention(q, k_cache, v_cache, cache_seqlens)
    assert_close_to_reference(plain, expected_out[:, 0], dtype, "out without lse")
    assert torch.equal(plain[0], torch.zeros_like(plain[0]))


@pytest.mark.parametrize("backend", ["naive", "adapter"])
def test_batched_decode_ignores_cache_entries_past_the_length(
    backend, monkeypatch, fresh_discovery
):
    # The adapter: the CUDA adapter over the fake binding, whose float64 reference (like the
    # kernels, which never load those rows) treats rows past a length as no keys.
    dtype = torch.float32
    if backend == "adapter":
        monkeypatch.setattr("forge_flash.discovery._active", CpuCudaBackend(FakeBinding()))
        dtype = torch.float16
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 4, 32, generator=gen).to(dtype)
    k_cache = torch.randn(2, 10, 2, 32, generator=gen).to(dtype)
    v_cache = torch.randn(2, 10, 2, 32, generator=gen).to(dtype)
    seqlens = torch.tensor([6, 3], dtype=torch.int32)
    before = ff.batched_decode_attention(q, k_cache, v_cache, seqlens)
    k_cache[0, 6:] = 1e4
    v_cache[1, 3:] = float("nan")
    after = ff.batched_decode_attention(q, k_cache, v_cache, seqlens)
    assert torch.equal(before, after)


def test_batched_decode_equals_flash_attn_fwd_on_full_caches():
    gen = torch.Generator().manual_seed(4)
    q = torch.randn(3, 8, 64, generator=gen)
    k = torch.randn(3, 50, 2, 64, generator=gen)
    v = torch.randn(3, 50, 2, 64, generator=gen)
    full = torch.full((3,), 50, dtype=torch.int32)
    decode = ff.batched_decode_attention(q, k, v, full)
    uniform = ff.flash_attn_fwd(q.unsqueeze(1), k, v, causal=True)[:, 0]
    torch.testing.assert_close(decode, uniform, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("lengths_on_host", [True, False], ids=["host-lengths", "device-lengths"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_naive_key_counts_on_either_path(monkeypatch, lengths_on_host, causal, dtype):
    """Key counts with several query rows (``cache_attention``): the per-sequence slices the CPU
    takes and the on-device masking a GPU fallback takes (forced here on CPU tensors) both
    match the reference, with and without the LSE, and never read past a sequence's keys."""
    monkeypatch.setattr(naive, "_lengths_on_host", lambda _: lengths_on_host)
    gen = torch.Generator().manual_seed(7)
    batch, seqlen_q, max_len, heads, heads_k, head_dim = 4, 5, 40, 8, 2, 32
    q = torch.randn(batch, seqlen_q, heads, head_dim, generator=gen).to(dtype)
    k = torch.randn(batch, max_len, heads_k, head_dim, generator=gen).to(dtype)
    v = torch.randn(batch, max_len, heads_k, head_dim, generator=gen).to(dtype)
    lengths = [0, 3, 40, 17]  # empty, fewer keys than query rows (causal rows see none), full
    expected_out, expected_lse = reference_attention(q, k, v, causal=causal, key_lengths=lengths)
    for b, length in enumerate(lengths):
        v[b, length:] = float("nan")  # slots past a length may hold anything
    seqused_k = torch.tensor(lengths, dtype=torch.int32)
    scale = head_dim**-0.5
    for with_lse in (True, False):
        result = ff.api.cache_attention(
            q, k, v, seqused_k, softmax_scale=scale, causal=causal, return_lse=with_lse
        )
        out, lse = result if with_lse else (result, None)
        assert_close_to_reference(out, expected_out, dtype, f"out (lse={with_lse})")
        if with_lse:
            assert_lse_close(lse, expected_lse)
