"""Shared test setup: deterministic hypothesis and a fixture for a clean backend cache."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# Derandomised so CI runs are reproducible; `HYPOTHESIS_PROFILE=dev` explores more.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Under pytest-xdist (`-n N`) every worker would start torch with a thread per core: on the GPU
# machine 16 workers x 16 threads on 16 cores, for the float64 references the tests compute on
# the CPU. The workers share the cores instead (xdist names their count in this variable).
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _WORKERS))


@pytest.fixture
def fresh_discovery(monkeypatch):
    """Start from undiscovered backends and no FORGE_FLASH_BACKEND override; forget after."""
    from forge_flash import discovery

    monkeypatch.delenv(discovery.BACKEND_ENV, raising=False)
    discovery.reset()
    yield
    discovery.reset()


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)
