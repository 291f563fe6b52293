"""tools/lab/unfinished_tests.py: the tests a cut pytest-xdist run started and never finished,
on a verbose log of the form the GPU machine's runs wrote (docs/bench-raw/2026-12-05zc-*)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

LAB = Path(__file__).resolve().parents[1] / "tools" / "lab"
spec = importlib.util.spec_from_file_location("unfinished_tests", LAB / "unfinished_tests.py")
unfinished_tests = importlib.util.module_from_spec(spec)
spec.loader.exec_module(unfinished_tests)

HUNG = "tests/gpu/test_varlen.py::test_packed[persistent-64-True-dtype1]"
LAST = "tests/gpu/test_b.py::test_last[a-b]"
# xdist at verbosity 1: a node id alone when a worker starts it (some with a trailing space), and
# "[gwN] [ P%] OUTCOME node " when it ends.
LINES = [
    "8 workers [5 items]",
    "tests/gpu/test_a.py::test_one[64]",
    "tests/gpu/test_a.py::test_two",
    "[gw0] [ 20%] PASSED tests/gpu/test_a.py::test_one[64] ",
    HUNG + " ",
    "[gw1] [ 40%] FAILED tests/gpu/test_a.py::test_two ",
    "tests/gpu/test_b.py::test_skipped ",
    "[gw0] [ 60%] SKIPPED tests/gpu/test_b.py::test_skipped ",
    LAST,
]
LOG = "\n".join(LINES) + "\n"


def test_names_the_started_tests_without_an_outcome_in_start_order():
    assert unfinished_tests.unfinished(LOG) == [HUNG, LAST]


def test_a_finished_run_has_none():
    ends = [f"[gw2] [ 80%] PASSED {HUNG} ", f"[gw3] [100%] ERROR {LAST} "]
    assert unfinished_tests.unfinished(LOG + "\n".join(ends) + "\n") == []


def test_a_run_without_xdist():
    # Without xdist each outcome ends the line of its node id; the last is still running.
    lines = ["t/test_x.py::test_fast PASSED    [ 50%]", "t/test_x.py::test_slow "]
    assert unfinished_tests.unfinished("\n".join(lines)) == ["t/test_x.py::test_slow"]


def test_the_command_prints_them(tmp_path):
    log = tmp_path / "gpu-tests.log"
    log.write_text(LOG)
    command = [sys.executable, str(LAB / "unfinished_tests.py"), str(log)]
    shown = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert shown.splitlines() == ["2 test(s) started and never finished:", f"  {HUNG}", f"  {LAST}"]
