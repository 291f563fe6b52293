"""The K/V append kernel's own source run on the CPU (tests/c_api/append_kernel_host.cpp): the
kernel header compiled by the host compiler behind the real C API and pybind11 binding, driven
by the real adapter (``CudaBackend.append_kv``) on CPU tensors. The checks are the GPU test's
(helpers.append_cases): bit for bit the torch ops, the float64 reference, poisoned caches,
strided views on the scalar path, invalid values clamped. They show the kernel's indexing,
clamping and rotary arithmetic, and the adapter-binding-C API path, without a GPU; what only the
GPU shows (16-byte accesses on device memory, the launch, programmatic dependent launch) is
tests/gpu/test_append_kernel_gpu.py's. Needs g++, the CUDA toolkit's headers and pybind11;
skips otherwise.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sysconfig

import pytest
import torch
from test_c_api_validation import CUDA_HOME, ROOT, _missing

from helpers.append_cases import (
    LAYOUTS,
    ROTARY,
    check_invalid_values_clamped,
    check_layout,
    check_scalar_path,
)
from helpers.fake_plugin import CpuCudaBackend

try:
    import pybind11
except ImportError:  # not in the test extra: the plugin's build needs it, the CPU suite not
    pybind11 = None

_MISSING = _missing() or (None if pybind11 is not None else "no pybind11")


@pytest.fixture(scope="module")
def host_binding(tmp_path_factory):
    """The binding module with the append kernel compiled for the host, imported."""
    out = tmp_path_factory.mktemp("append_host") / f"_C{sysconfig.get_config_var('EXT_SUFFIX')}"
    build = [
        "g++", "-std=c++17", "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-Wl,-Bsymbolic",
        "-Wall", "-Wno-unknown-pragmas", "-Werror",
        f"-I{ROOT / 'csrc' / 'include'}", f"-I{CUDA_HOME / 'include'}",
        f"-I{sysconfig.get_paths()['include']}", f"-I{pybind11.get_include()}",
        '-DFORGE_FLASH_VERSION="0.0.0"', '-DFORGE_FLASH_SASS_ARCHS="90"',
        '-DFORGE_FLASH_PTX_ARCHS=""', '-DFORGE_FLASH_CUDA_VERSION="host"',
        str(ROOT / "csrc" / "binding" / "module.cpp"),
        str(ROOT / "csrc" / "api" / "append_api.cpp"),
        str(ROOT / "csrc" / "api" / "flash_api.cpp"),
        str(ROOT / "tests" / "c_api" / "append_kernel_host.cpp"),
        "-o", str(out),
    ]  # fmt: skip
    built = subprocess.run(build, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    spec = importlib.util.spec_from_file_location("_C", out)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def on_host_kernel(host_binding, monkeypatch, fresh_discovery):
    monkeypatch.setattr("forge_flash.discovery._active", CpuCudaBackend(host_binding))


pytestmark = pytest.mark.skipif(_MISSING is not None, reason=f"not buildable: {_MISSING}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("rotary", list(ROTARY))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_kernel_matches_reference_and_torch_ops_bitwise(on_host_kernel, layout, rotary, dtype):
    check_layout(layout, rotary, dtype, "cpu")


def test_strided_views_on_the_scalar_path(on_host_kernel):
    check_scalar_path("cpu")


def test_invalid_device_values_are_clamped_like_the_torch_ops(on_host_kernel):
    check_invalid_values_clamped("cpu")


def test_the_binding_refuses_bad_arguments_with_the_c_api_message(host_binding):
    k = torch.zeros(1, 1, 1, 64, dtype=torch.float16)
    cache = torch.zeros(1, 4, 1, 64, dtype=torch.float16)
    cos = torch.zeros(4, 16, dtype=torch.float16)
    seqlens = torch.zeros(1, dtype=torch.int32)
    strides = (64, 64, 64) * 2 + (256, 64, 64) * 2 + (0, 0, 0) * 2
    bad = host_binding.AppendKvCall(
        strides, (16, 1, 16, 1), 0, (1, 1, 0, 0, 1, 64, 1, 4, 0), (31, 4, 0, 1, 1), 0, True
    )
    with pytest.raises(ValueError, match=r"^forge_flash: rotary_dim must be even"):
        bad(k.data_ptr(), k.data_ptr(), cache.data_ptr(), cache.data_ptr(), 0, 0,
            seqlens.data_ptr(), 0, 0, 0, cos.data_ptr(), cos.data_ptr(), 0, 0)  # fmt: skip
    assert torch.count_nonzero(cache) == 0
