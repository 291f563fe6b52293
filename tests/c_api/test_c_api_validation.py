"""Builds and runs the host-only C API validation test (no GPU, no kernels needed).

The C API must refuse bad sizes, strides, pointers and flags by itself, whatever the Python
layer already checked. Needs a C++ compiler and the CUDA toolkit's headers and static cudart;
skips with the reason when either is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CUDA_HOME = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))


def _missing() -> str | None:
    if shutil.which("g++") is None:
        return "no g++"
    if not (CUDA_HOME / "include" / "cuda_runtime_api.h").exists():
        return f"no CUDA toolkit headers under {CUDA_HOME}"
    if not (CUDA_HOME / "lib64" / "libcudart_static.a").exists():
        return f"no static cudart under {CUDA_HOME}/lib64"
    return None


@pytest.mark.skipif(_missing() is not None, reason=f"C API test not buildable: {_missing()}")
def test_c_api_refuses_invalid_arguments(tmp_path):
    exe = tmp_path / "validation_test"
    build = [
        "g++", "-std=c++17", "-O1", "-Wall", "-Werror",
        f"-I{ROOT / 'csrc' / 'include'}", f"-I{CUDA_HOME / 'include'}",
        str(ROOT / "tests" / "c_api" / "validation_test.cpp"),
        str(ROOT / "csrc" / "api" / "flash_api.cpp"),
        f"-L{CUDA_HOME / 'lib64'}", "-lcudart_static", "-ldl", "-lpthread", "-lrt",
        "-o", str(exe),
    ]  # fmt: skip
    subprocess.run(build, check=True, capture_output=True, text=True)
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert result.returncode == 0 and not failures, result.stdout + result.stderr
    assert "0 failed" in result.stdout
