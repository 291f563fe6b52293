"""forge_flash.distributed on the CPU: context-parallel attention in real gloo groups of 2 and
3 processes (helpers.context_parallel_cases runs every case in one spawn of 3 processes: in
the world group and in a group of its last 2), and the shard/unshard helpers."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from forge_flash.distributed import shard_sequence, unshard_sequence

from helpers.context_parallel_cases import ERROR_CASES, cpu_cases, spawn

needs_gloo = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo"
)


@pytest.fixture(scope="module")
def ring_results(tmp_path_factory):
    """One spawn of 3 processes: the cases run in the world group and in a group of 2."""
    return spawn("gloo", 3, (3, 2), tmp_path_factory.mktemp("gloo"))


@needs_gloo
@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("name", [case.name for case in cpu_cases()] + list(ERROR_CASES))
def test_context_parallel_case(ring_results, world, name):
    outcomes = ring_results[world][name]
    assert sorted(outcomes) == list(range(world)), f"ranks that reported: {sorted(outcomes)}"
    failures = {rank: why for rank, why in outcomes.items() if why is not None}
    assert not failures, "\n".join(f"rank {rank}:\n{why}" for rank, why in failures.items())


def test_zigzag_shards_hold_chunk_r_and_its_mirror():
    x = torch.arange(16).view(1, 16)
    assert shard_sequence(x, "zigzag", 0, 2).tolist() == [[0, 1, 2, 3, 12, 13, 14, 15]]
    assert shard_sequence(x, "zigzag", 1, 2).tolist() == [[4, 5, 6, 7, 8, 9, 10, 11]]
    assert shard_sequence(x, "contiguous", 1, 4).tolist() == [[4, 5, 6, 7]]


@pytest.mark.parametrize("layout", ["zigzag", "contiguous"])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_unshard_inverts_shard(layout, world):
    x = torch.randn(2, 3, 6 * world, 5)
    shards = [shard_sequence(x, layout, rank, world, dim=2) for rank in range(world)]
    assert torch.equal(unshard_sequence(shards, layout, dim=-2), x)


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda x: shard_sequence(x.tolist(), "zigzag", 0, 2), TypeError, "x must be"),
        (lambda x: shard_sequence(x, "ring", 0, 2), ValueError, "layout must be"),
        (lambda x: shard_sequence(x, "zigzag", 2, 2), ValueError, "rank must be below"),
        (lambda x: shard_sequence(x, "zigzag", 0, 0), ValueError, "world must be"),
        (lambda x: shard_sequence(x, "zigzag", 0, 2.0), TypeError, "world must be"),
        (lambda x: shard_sequence(x, "zigzag", 0, 2, dim=3), ValueError, "dim must"),
        (lambda x: shard_sequence(x, "zigzag", 0, 4), ValueError, "x.shape[1] must divide"),
        (lambda x: unshard_sequence([], "zigzag"), ValueError, "shards must hold"),
        (lambda x: unshard_sequence(x, "zigzag"), TypeError, "shards must be a sequence"),
        (lambda x: unshard_sequence([x, x[:, :2]], "zigzag"), ValueError, "shards[1] must"),
        (lambda x: unshard_sequence([x[:, :3]], "zigzag"), ValueError, "shards[0].shape[1]"),
    ],
)
def test_helper_arguments_are_named(call, error, message):
    with pytest.raises(error) as info:
        call(torch.zeros(2, 12, 3))
    assert str(info.value).startswith(message)
