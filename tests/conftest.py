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
