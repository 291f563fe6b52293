"""GPU tests: run only where a CUDA GPU and a kernel plugin (forge-flash-cu13/-cu12) are usable."""

from __future__ import annotations

import pytest
import torch


def _kernel_backend_reason() -> str | None:
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    from forge_flash import discovery

    if discovery.plugin_binding() is None:  # forge-flash-cu13 or -cu12, whichever runs here
        return f"no usable kernel plugin: {discovery.backend_info().backends['cuda'].reason}"
    if torch.cuda.get_device_capability() < (8, 0):
        return "GPU older than SM80"
    return None


_REASON = _kernel_backend_reason()


def pytest_collection_modifyitems(config, items):
    if _REASON is None:
        return
    skip = pytest.mark.skip(reason=f"GPU tests skipped: {_REASON}")
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield
