"""forge_flash.distributed on two GPUs: context-parallel attention in a real NCCL group of two
spawned processes, one per GPU (helpers.context_parallel_cases runs every case in one spawn),
against the float64 reference over the whole sequence."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from helpers.context_parallel_cases import ERROR_CASES, GPU_CHECKS, gpu_cases, spawn

pytestmark = pytest.mark.skipif(
    torch.cuda.device_count() < 2 or not dist.is_available() or not dist.is_nccl_available(),
    reason="needs two GPUs and NCCL",
)


@pytest.fixture(scope="module")
def nccl_results(tmp_path_factory):
    return spawn("nccl", 2, (2,), tmp_path_factory.mktemp("nccl"))[2]


@pytest.mark.parametrize(
    "name", [case.name for case in gpu_cases()] + list(ERROR_CASES) + list(GPU_CHECKS)
)
def test_context_parallel_case_on_two_gpus(nccl_results, name):
    outcomes = nccl_results[name]
    assert sorted(outcomes) == [0, 1], f"ranks that reported: {sorted(outcomes)}"
    failures = {rank: why for rank, why in outcomes.items() if why is not None}
    assert not failures, "\n".join(f"rank {rank}:\n{why}" for rank, why in failures.items())
