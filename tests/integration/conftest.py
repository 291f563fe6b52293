"""Integration tests: forge-flash inside model code (a tiny decoder, transformers, compile).

CPU tests run everywhere (CI included). Tests marked ``kernels`` need the CUDA kernels (a GPU
of SM80+ and the forge-flash-cu13 plugin) and skip cleanly without them.
"""

from __future__ import annotations

import pytest
import torch


def _kernels_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    from forge_flash import discovery

    status = discovery.backend_info().backends.get("cuda")
    if status is None or not status.available:
        return f"the cuda backend cannot run: {status.reason if status else 'unknown'}"
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "kernels: needs the CUDA kernels (skipped without them)")


def pytest_collection_modifyitems(config, items):
    marked = [item for item in items if item.get_closest_marker("kernels")]
    if not marked:
        return
    reason = _kernels_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"needs the CUDA kernels: {reason}")
    for item in marked:
        item.add_marker(skip)


@pytest.fixture
def no_tf32():
    """Full float32 matmuls on the GPU, so the only low-precision step is attention."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


@pytest.fixture(scope="module", autouse=True)
def _one_cpu_thread():
    """One intra-op thread: the tiny model's matmuls are far too small to split, and on a
    busy 2-core machine a second OpenMP thread made them up to 80x slower (spin-waiting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
