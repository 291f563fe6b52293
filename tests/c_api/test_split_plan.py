"""plan_fwd's split rules (csrc/kernels/split_plan.h) against their bounds, the hand-out of
steps in cta_work and the decisions their comments record, in tests/c_api/split_plan_test.cpp.
Needs g++; skips otherwise."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from test_c_api_validation import ROOT


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")
def test_split_rules_hold(tmp_path):
    exe = tmp_path / "split_plan_test"
    build = [
        "g++", "-std=c++17", "-O2", "-Wall", "-Werror", f"-I{ROOT / 'csrc' / 'include'}",
        str(ROOT / "tests" / "c_api" / "split_plan_test.cpp"), "-o", str(exe),
    ]  # fmt: skip
    built = subprocess.run(build, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "all hold" in run.stdout
