"""The GPU checks that live outside the Python API, run as tests so that they cannot rot:

- tools/lab/wgmma_selftest.cu: the Hopper wgmma building blocks (csrc/kernels/sm90/wgmma.cuh:
  tile layout, descriptors, instructions, register layouts) against a float64 reference,
  built with nvcc for sm_90a; Hopper only.
- tools/lab/sanitize_matrix.py under compute-sanitizer's memcheck, racecheck and synccheck:
  one call down every kernel path, and no error or hazard.

Both skip where their tool (nvcc, compute-sanitizer) is missing. Slow: minutes each.
With FORGE_FLASH_TOOL_LOGS=DIR each tool's output is also written to DIR/<name>.log.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

LAB = Path(__file__).resolve().parents[2] / "tools" / "lab"

# What each sanitizer prints when it found nothing.
CLEAN = {
    "memcheck": r"ERROR SUMMARY: 0 errors",
    "racecheck": r"RACECHECK SUMMARY: 0 hazards displayed \(0 errors, 0 warnings\)",
    "synccheck": r"ERROR SUMMARY: 0 errors",
}


def _cuda_tool(name: str) -> str:
    """The path of a CUDA toolkit program (PATH, then $CUDA_HOME/bin); skips the test if none."""
    cuda_home = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
    found = shutil.which(name) or shutil.which(name, path=str(cuda_home / "bin"))
    if found is None:
        pytest.skip(f"{name} not found on PATH or in {cuda_home / 'bin'}")
    return found


def _run(name: str, command: list[str], *, timeout: float, **kwargs) -> str:
    """Runs a tool, keeps its output where FORGE_FLASH_TOOL_LOGS asks, returns the output. A tool
    still running after `timeout` seconds is killed with its children (compute-sanitizer's
    target holds the output pipe too) and fails the test with what it printed so far: the
    sanitize matrix prints each step before it runs it, so a kernel that hangs is the last one."""
    with subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **kwargs,
    ) as process:
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            returncode = None
        else:
            returncode = process.returncode
    log_dir = os.environ.get("FORGE_FLASH_TOOL_LOGS")
    if log_dir:
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        (Path(log_dir) / f"{name}.log").write_text(output)
    if returncode is None:
        pytest.fail(f"{name} still ran after {timeout:.0f} s; its output so far:\n{output[-6000:]}")
    assert returncode == 0, f"{name} exited with {returncode}:\n{output[-6000:]}"
    return output


@pytest.mark.slow
def test_wgmma_selftest(tmp_path):
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("wgmma_selftest needs a compute capability 9.0 (Hopper) GPU")
    nvcc = _cuda_tool("nvcc")
    binary = tmp_path / "wgmma_selftest"
    build = [
        nvcc, "-std=c++17", "-O3", "-gencode=arch=compute_90a,code=sm_90a",
        str(LAB / "wgmma_selftest.cu"), "-o", str(binary),
    ]  # fmt: skip
    _run("wgmma-selftest-build", build, timeout=900)
    output = _run("wgmma-selftest", [str(binary)], timeout=300)
    assert "ALL PASS" in output and "FAIL" not in output, output


@pytest.mark.slow
@pytest.mark.parametrize("tool", list(CLEAN))
def test_sanitize_matrix(tool):
    sanitizer = _cuda_tool("compute-sanitizer")
    command = [
        sanitizer, "--tool", tool, "--error-exitcode", "99",
        sys.executable, str(LAB / "sanitize_matrix.py"),
    ]  # fmt: skip
    env = dict(os.environ, FORGE_FLASH_BACKEND="cuda")  # an error, not a silent fallback
    # main's matrix: memcheck and synccheck under 20 s each, racecheck 177 s (H200, 2026-12-04)
    output = _run(f"sanitizer-{tool}", command, timeout=900, env=env)
    assert "sanitize matrix done" in output, output[-6000:]  # every call ran
    assert re.search(CLEAN[tool], output), output[-6000:]
