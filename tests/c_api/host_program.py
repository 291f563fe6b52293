"""The C++ test programs of tests/c_api that need only g++ (host arithmetic of the kernels'
headers: FastDiv, the split rules): built and run in one step, for their pytest wrappers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")


def build_and_run(tmp_path: Path, source: str, *, timeout: int = 300) -> str:
    """tests/c_api/<source> compiled with g++ (C++17, -O2, warnings as errors; the public
    headers on the include path) and run; its stdout. Fails the test where either step fails."""
    exe = tmp_path / Path(source).stem
    build = [
        "g++", "-std=c++17", "-O2", "-Wall", "-Werror", f"-I{ROOT / 'csrc' / 'include'}",
        str(ROOT / "tests" / "c_api" / source), "-o", str(exe),
    ]  # fmt: skip
    built = subprocess.run(build, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout
