"""Varlen prefill through TMA (the kPackedSeqs twins of the TMA-only and the persistent
instances, sm90/fwd_kernel_sm90.cuh): their maps cover the packed tensors, so a sequence's last
K/V tile reads the next sequence's rows, which the kernel masks (K) and zeroes in shared memory
(V). Checked against the float64 reference per sequence, in the plain launch (sequences past
1024 keys) and the persistent one (all within 1024), with NaN and inf in the neighbouring
sequences' rows (they must not reach a sequence that does not see them), and by the profiler:
the twins are what run, at every head dim the Hopper kernels serve. At 192 and 256 these tests
are what caught the lazy running max in the twins (fwd_kernel_sm90.cuh, kLazyMax, says what was
measured).
"""

from __future__ import annotations

import re

import pytest
import torch

import forge_flash

from helpers.kernels import (
    assert_each_sequence_close,
    hopper_kernels_launched,
    is_packed_twin,
    kernel_backend,
    packed_qkv,
    sm90_only,
)

pytestmark = sm90_only


def _run(q, k, v, cu_q, cu_k, causal):
    seq_q = (cu_q[1:] - cu_q[:-1]).tolist()
    seq_k = (cu_k[1:] - cu_k[:-1]).tolist()
    out = torch.full_like(q, float("nan"))  # poisoned: every row the call owns must be written
    with kernel_backend():
        got, lse = forge_flash.flash_attn_varlen_fwd(
            q, k, v, cu_q, cu_k, max(seq_q), max(seq_k), causal=causal, out=out, return_lse=True
        )
    return got, lse


# Lengths past the persistent kernel's 1024 keys (the plain launch, where the twin runs), most
# not multiples of any K/V tile (64-192 keys), so that each sequence's first K/V tile reads into
# the next one; an empty sequence and seqlen_q != seqlen_k both ways (the causal diagonal per
# sequence); the last sequence ends at the tensor's end (TMA's own zero fill).
LENGTHS = [(1500, 1500), (0, 1100), (1025, 3000), (2047, 1300), (700, 2049), (1111, 1111)]
# Every sequence within the persistent kernel's 1024 keys (the persistent launch, where its twin
# runs): a work tile's first K/V tile reads into the next sequence, and the CTA's next work tile
# may be another sequence's, so the zeroed V rows of one work tile must not linger into the next.
SHORT = [(300, 301), (0, 17), (129, 500), (1000, 700), (64, 1000), (77, 77), (1, 130), (250, 1024)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [64, 96, 128, 192, 256, 80])
@pytest.mark.parametrize("lengths", [LENGTHS, SHORT], ids=["plain", "persistent"])
def test_packed_sequences_match_the_reference(lengths, head_dim, causal, dtype):
    q, k, v, cu_q, cu_k = packed_qkv(lengths, 8, 8, head_dim, dtype)
    got, lse = _run(q, k, v, cu_q, cu_k, causal)
    assert_each_sequence_close(q, k, v, cu_q, cu_k, got, lse, causal)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", [LENGTHS, SHORT], ids=["plain", "persistent"])
def test_gqa_packed_sequences(lengths, causal):
    q, k, v, cu_q, cu_k = packed_qkv(lengths, 16, 4, 128, torch.bfloat16)
    got, lse = _run(q, k, v, cu_q, cu_k, causal)
    assert_each_sequence_close(q, k, v, cu_q, cu_k, got, lse, causal)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("head_dim", [64, 96, 128, 256])
@pytest.mark.parametrize("lengths", [LENGTHS, SHORT], ids=["plain", "persistent"])
def test_a_neighbours_nan_or_inf_stays_in_its_sequence(lengths, head_dim, bad):
    # Sequence 0's last K/V tile (1500 or 301 keys: not a multiple of the tiles' 64-192 keys)
    # reads the first rows of sequence 1 (whose queries are none). A NaN or inf in those K and V
    # rows must leave sequence 0 exactly as without it; in sequence 2's first rows, it must reach
    # every row of sequence 2 (non-causal: each sees them).
    q, k, v, cu_q, cu_k = packed_qkv(lengths, 8, 8, head_dim, torch.bfloat16)
    clean, _ = _run(q, k, v, cu_q, cu_k, False)
    for start in (int(cu_k[1]), int(cu_k[2])):
        k[start : start + 3, :, 1] = bad
        v[start : start + 3, :, 2] = bad
    got, _ = _run(q, k, v, cu_q, cu_k, False)
    first = slice(0, int(cu_q[1]))
    assert torch.equal(got[first], clean[first]), "sequence 0 changed with its neighbour's values"
    third = slice(int(cu_q[2]), int(cu_q[3]))  # non-causal: every row sees the bad keys
    assert not torch.isfinite(got[third]).all(dim=-1).any()


def test_the_packed_twin_runs():
    # The TMA-only instance's tiles (176 keys at head_dim 128; the cp.async instance's are 128),
    # and not a dense call's TMA-only kernel itself (the twin has one template argument more).
    q, k, v, cu_q, cu_k = packed_qkv(LENGTHS, 8, 8, 128, torch.bfloat16)
    varlen = hopper_kernels_launched(lambda: _run(q, k, v, cu_q, cu_k, False))
    dense_q, dense_k, dense_v = (
        torch.randn(2, 2048, 8, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3)
    )
    with kernel_backend():
        dense = hopper_kernels_launched(
            lambda: forge_flash.flash_attn_fwd(dense_q, dense_k, dense_v)
        )
    assert len(varlen) == 1 and "Sm90Config<128, 176" in varlen[0], varlen
    assert any("Sm90Config<128, 176" in name for name in dense), dense
    assert varlen[0] not in dense, (varlen, dense)
    assert is_packed_twin(varlen[0]), varlen
    assert not any(is_packed_twin(name) for name in dense), dense


def test_the_packed_twin_runs_at_head_dim_96():
    # Sm90Config<96, block_n, stages, persistent = false, tma_only = true, ...>, the twin: at 96
    # the TMA-only twin has the causal tiles (two consumers), also for non-causal calls, where a
    # dense call takes the three-consumer non-causal instance instead.
    q, k, v, cu_q, cu_k = packed_qkv(LENGTHS, 8, 8, 96, torch.bfloat16)
    for causal in (False, True):
        varlen = hopper_kernels_launched(lambda c=causal: _run(q, k, v, cu_q, cu_k, c))
        assert len(varlen) == 1, varlen
        assert re.search(r"Sm90Config<96, \d+, \d+, false, true", varlen[0]), varlen
        assert is_packed_twin(varlen[0]), varlen


@pytest.mark.parametrize("head_dim", [64, 96, 128])
def test_the_persistent_twin_runs(head_dim):
    # Sm90Config<head_dim, block_n, stages, persistent = true, tma_only = false, ...>, with the
    # twin's template argument; a dense call of short sequences runs the same tiles without it.
    q, k, v, cu_q, cu_k = packed_qkv(SHORT, 8, 8, head_dim, torch.bfloat16)
    varlen = hopper_kernels_launched(lambda: _run(q, k, v, cu_q, cu_k, False))
    assert len(varlen) == 1, varlen
    assert re.search(rf"Sm90Config<{head_dim}, \d+, \d+, true, false", varlen[0]), varlen
    assert is_packed_twin(varlen[0]), varlen
    dense_q, dense_k, dense_v = (
        torch.randn(8, 512, 8, head_dim, device="cuda", dtype=torch.bfloat16) for _ in range(3)
    )
    with kernel_backend():
        dense = hopper_kernels_launched(
            lambda: forge_flash.flash_attn_fwd(dense_q, dense_k, dense_v)
        )
    assert dense and not any(is_packed_twin(name) for name in dense), dense


# The persistent twin draws its work tiles from a counter in the call's workspace as its CTAs free
# up (fwd_kernel_sm90.cuh, kDrawsTiles), skipping query blocks past their sequence's end: many
# sequences of mixed lengths (empty ones, some without keys, one query), GQA, causal and not; per
# sequence against the float64 reference, bit for bit the same in a second call (whichever CTA
# draws a tile computes all of it), and replayed from a CUDA graph, whose captured memset zeroes
# the counter again at every replay (device-value checks off: they read cu_seqlens back).
def _mixed_lengths(count, seed):
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 1025, (count, 2), generator=generator).tolist()
    lengths[3], lengths[10], lengths[17] = (0, 300), (200, 0), (1, 1024)
    return [tuple(pair) for pair in lengths]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim,heads", [(64, (16, 4)), (96, (12, 12)), (128, (8, 8))])
def test_the_persistent_twin_draws_its_tiles(head_dim, heads, causal, monkeypatch):
    from forge_flash import validation

    lengths = _mixed_lengths(40, seed=head_dim + causal)
    q, k, v, cu_q, cu_k = packed_qkv(lengths, *heads, head_dim, torch.bfloat16)
    got, lse = _run(q, k, v, cu_q, cu_k, causal)
    assert_each_sequence_close(q, k, v, cu_q, cu_k, got, lse, causal)
    again, again_lse = _run(q, k, v, cu_q, cu_k, causal)
    assert torch.equal(again, got) and torch.equal(again_lse, lse)

    monkeypatch.setattr(validation, "_CHECK_DEVICE_VALUES", False)
    max_q, max_k = max(a for a, _ in lengths), max(b for _, b in lengths)
    out = torch.full_like(q, float("nan"))
    with kernel_backend():
        call = lambda: forge_flash.flash_attn_varlen_fwd(  # noqa: E731
            q, k, v, cu_q, cu_k, max_q, max_k, causal=causal, out=out
        )
        call()  # the workspace's size, learned outside the capture
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            call()
    for _ in range(3):
        out.fill_(float("nan"))
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(out, got)


# Runs of work tiles without keys (every query block of a sequence of no keys; causal query
# blocks before their first key), drawn one after another by the head_dim 64 twin, whose second
# consumer runs turns behind the first: such tiles take turns too, else the first consumer waits
# for a tile number that the producer cannot post before the second reads older ones, and the
# second waits for the first's next turn (a hang, found by the tests above).
@pytest.mark.parametrize("causal", [False, True])
def test_runs_of_keyless_work_tiles(causal):
    lengths = [(1000, 0), (1000, 0), (300, 200), (1000, 90), (1000, 0), (129, 129), (1000, 64)]
    q, k, v, cu_q, cu_k = packed_qkv(lengths, 16, 16, 64, torch.bfloat16)
    got, lse = _run(q, k, v, cu_q, cu_k, causal)
    assert_each_sequence_close(q, k, v, cu_q, cu_k, got, lse, causal)


@pytest.mark.parametrize("head_dim", [192, 256])
@pytest.mark.parametrize("lengths", [LENGTHS, SHORT], ids=["plain", "persistent"])
def test_the_twins_run_at_head_dims_192_and_256(lengths, head_dim):
    # Sm90Config<head_dim, block_n, stages, persistent, tma_only, ...>: long keys take the
    # TMA-only twin; short ones the persistent twin at 192 and the TMA-only one at 256 (where the
    # dispatcher runs persistent plans on the TMA-only instance, dense calls too).
    q, k, v, cu_q, cu_k = packed_qkv(lengths, 8, 8, head_dim, torch.bfloat16)
    names = hopper_kernels_launched(lambda: _run(q, k, v, cu_q, cu_k, False))
    assert len(names) == 1, names
    persistent = lengths is SHORT and head_dim == 192
    flags = "true, false" if persistent else "false, true"
    assert re.search(rf"Sm90Config<{head_dim}, \d+, \d+, {flags}", names[0]), names
    assert is_packed_twin(names[0]), names
