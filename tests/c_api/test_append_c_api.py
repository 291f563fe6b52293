"""Builds and runs the host-only test of ff_append_kv's argument checks (no GPU, no kernels
needed): the C API must refuse bad sizes, flags, pointers, strides and overlaps by itself.
Needs a C++ compiler and the CUDA toolkit's headers and static cudart; skips otherwise."""

from __future__ import annotations

import subprocess

import pytest
from test_c_api_validation import CUDA_HOME, ROOT, _missing


@pytest.mark.skipif(_missing() is not None, reason=f"C API test not buildable: {_missing()}")
def test_append_c_api_refuses_invalid_arguments(tmp_path):
    exe = tmp_path / "append_validation_test"
    build = [
        "g++", "-std=c++17", "-O1", "-Wall", "-Werror",
        f"-I{ROOT / 'csrc' / 'include'}", f"-I{CUDA_HOME / 'include'}",
        str(ROOT / "tests" / "c_api" / "append_validation_test.cpp"),
        str(ROOT / "csrc" / "api" / "append_api.cpp"),
        str(ROOT / "csrc" / "api" / "flash_api.cpp"),
        f"-L{CUDA_HOME / 'lib64'}", "-lcudart_static", "-ldl", "-lpthread", "-lrt",
        "-o", str(exe),
    ]  # fmt: skip
    built = subprocess.run(build, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert result.returncode == 0 and not failures, result.stdout + result.stderr
    assert " 0 failed" in result.stdout
