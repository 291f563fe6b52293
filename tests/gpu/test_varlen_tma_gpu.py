"""Varlen prefill through TMA (the TMA-only instance's kPackedSeqs twin, sm90/fwd_kernel_sm90.cuh):
its maps cover the packed tensors, so a sequence's last K/V tile reads the next sequence's rows,
which the kernel masks (K) and zeroes in shared memory (V). Checked against the float64
reference per sequence, with NaN and inf in the neighbouring sequences' rows (they must not reach
a sequence that does not see them), and by the profiler: the twin is what runs at head_dim 64
and 128, the only head dims it serves (fwd_instantiate.cuh, sm90_tma_packed_info, says why);
the others keep the cp.async copies, checked here against the same reference.
"""

from __future__ import annotations

import re

import pytest
import torch

import forge_flash

from helpers.kernels import (
    assert_close_to_reference,
    kernel_backend,
    reference_attention,
    torch_attention,
)

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
    reason="the TMA-fed Hopper kernels run on SM90 only",
)


def _packed(lengths: list[tuple[int, int]], heads: int, heads_k: int, head_dim: int, dtype):
    """q (total_q, heads, d), k and v (total_k, heads_k, d) and their cu_seqlens."""
    seq_q, seq_k = [a for a, _ in lengths], [b for _, b in lengths]

    def offsets(seq: list[int]) -> torch.Tensor:
        return torch.tensor(
            [0, *torch.tensor(seq).cumsum(0).tolist()], dtype=torch.int32, device="cuda"
        )

    q = torch.randn(sum(seq_q), heads, head_dim, device="cuda", dtype=dtype)
    k = torch.randn(sum(seq_k), heads_k, head_dim, device="cuda", dtype=dtype)
    v = torch.randn(sum(seq_k), heads_k, head_dim, device="cuda", dtype=dtype)
    return q, k, v, offsets(seq_q), offsets(seq_k)


def _run(q, k, v, cu_q, cu_k, causal):
    seq_q = (cu_q[1:] - cu_q[:-1]).tolist()
    seq_k = (cu_k[1:] - cu_k[:-1]).tolist()
    out = torch.full_like(q, float("nan"))  # poisoned: every row the call owns must be written
    with kernel_backend():
        got, lse = forge_flash.flash_attn_varlen_fwd(
            q, k, v, cu_q, cu_k, max(seq_q), max(seq_k), causal=causal, out=out, return_lse=True
        )
    return got, lse


def _check_each_sequence(q, k, v, cu_q, cu_k, got, lse, causal):
    for i in range(cu_q.numel() - 1):
        qs, ks = slice(cu_q[i], cu_q[i + 1]), slice(cu_k[i], cu_k[i + 1])
        one = [x[s].unsqueeze(0) for x, s in ((q, qs), (k, ks), (v, ks))]
        ref, ref_lse = reference_attention(*one, causal=causal)
        assert_close_to_reference(got[qs].unsqueeze(0), ref, torch_attention(*one, causal=causal))
        expect, seen = ref_lse[0], lse[:, qs]
        finite = torch.isfinite(expect)
        assert torch.equal(torch.isfinite(seen), finite)
        torch.testing.assert_close(seen[finite], expect[finite].float(), atol=2e-3, rtol=1e-3)


# Lengths past the persistent kernel's 1024 keys (the plain launch, where the twin runs), most
# not multiples of any K/V tile (64-192 keys), so that each sequence's first K/V tile reads into
# the next one; an empty sequence and seqlen_q != seqlen_k both ways (the causal diagonal per
# sequence); the last sequence ends at the tensor's end (TMA's own zero fill).
LENGTHS = [(1500, 1500), (0, 1100), (1025, 3000), (2047, 1300), (700, 2049), (1111, 1111)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [64, 96, 128, 192, 256, 80])
def test_packed_sequences_match_the_reference(head_dim, causal, dtype):
    q, k, v, cu_q, cu_k = _packed(LENGTHS, 8, 8, head_dim, dtype)
    got, lse = _run(q, k, v, cu_q, cu_k, causal)
    _check_each_sequence(q, k, v, cu_q, cu_k, got, lse, causal)


@pytest.mark.parametrize("causal", [False, True])
def test_gqa_packed_sequences(causal):
    q, k, v, cu_q, cu_k = _packed(LENGTHS, 16, 4, 128, torch.bfloat16)
    got, lse = _run(q, k, v, cu_q, cu_k, causal)
    _check_each_sequence(q, k, v, cu_q, cu_k, got, lse, causal)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
def test_a_neighbours_nan_or_inf_stays_in_its_sequence(head_dim, bad):
    # Sequence 0's last K/V tile (1500 keys: not a multiple of the tiles' 128-192 keys) reads
    # the first rows of sequence 1 (whose queries are none). A NaN or inf in those K and V rows
    # must leave sequence 0 exactly as without it; in sequence 2's first rows, it must reach
    # every row of sequence 2 (non-causal: each sees them).
    q, k, v, cu_q, cu_k = _packed(LENGTHS, 8, 8, head_dim, torch.bfloat16)
    clean, _ = _run(q, k, v, cu_q, cu_k, False)
    for start in (int(cu_k[1]), int(cu_k[2])):
        k[start : start + 3, :, 1] = bad
        v[start : start + 3, :, 2] = bad
    got, _ = _run(q, k, v, cu_q, cu_k, False)
    first = slice(0, int(cu_q[1]))
    assert torch.equal(got[first], clean[first]), "sequence 0 changed with its neighbour's values"
    third = slice(int(cu_q[2]), int(cu_q[3]))  # non-causal: every row sees the bad keys
    assert not torch.isfinite(got[third]).all(dim=-1).any()


def _sm90_kernels(call) -> list[str]:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        call()
        torch.cuda.synchronize()
    return [e.key for e in profile.key_averages() if "fwd_kernel_sm90" in e.key]


def test_the_packed_twin_runs():
    # The TMA-only instance's tiles (176 keys at head_dim 128; the cp.async instance's are 128),
    # and not a dense call's TMA-only kernel itself (the twin has one template argument more).
    q, k, v, cu_q, cu_k = _packed(LENGTHS, 8, 8, 128, torch.bfloat16)
    varlen = _sm90_kernels(lambda: _run(q, k, v, cu_q, cu_k, False))
    dense_q, dense_k, dense_v = (
        torch.randn(2, 2048, 8, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3)
    )
    with kernel_backend():
        dense = _sm90_kernels(lambda: forge_flash.flash_attn_fwd(dense_q, dense_k, dense_v))
    assert len(varlen) == 1 and "Sm90Config<128, 176" in varlen[0], varlen
    assert any("Sm90Config<128, 176" in name for name in dense), dense
    assert varlen[0] not in dense, (varlen, dense)


@pytest.mark.parametrize("head_dim", [96, 192, 256])
def test_other_head_dims_keep_the_copies(head_dim):
    # Sm90Config<head_dim, block_n, stages, persistent, tma_only, ...>: no TMA-only instance
    # (nor its twin) runs a varlen call at these head dims.
    q, k, v, cu_q, cu_k = _packed(LENGTHS, 8, 8, head_dim, torch.bfloat16)
    names = _sm90_kernels(lambda: _run(q, k, v, cu_q, cu_k, False))
    assert names, "a Hopper kernel runs the call"
    for name in names:
        assert re.search(r"Sm90Config<\d+, \d+, \d+, (true|false), false", name), name
