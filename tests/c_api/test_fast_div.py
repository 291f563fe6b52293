"""FastDiv (csrc/kernels/fast_div.h), the kernels' division by launch-fixed divisors, against the
host's own division (tests/c_api/fast_div_test.cpp). Needs g++; skips otherwise."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from test_c_api_validation import ROOT


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")
def test_fast_div_matches_integer_division(tmp_path):
    exe = tmp_path / "fast_div_test"
    build = [
        "g++", "-std=c++17", "-O2", "-Wall", "-Werror",
        str(ROOT / "tests" / "c_api" / "fast_div_test.cpp"), "-o", str(exe),
    ]  # fmt: skip
    built = subprocess.run(build, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "exact" in run.stdout
