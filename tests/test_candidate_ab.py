"""tools/lab/candidate_ab.sh, one device call for kernel candidates against a base build, run
here beside stand-ins for wheel_venv.sh, ab_wheels.sh and the candidates' pytest: a candidate
whose tests fail drops out of the rounds and the check, the rest run both, and the call exits 1
when none is left."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[1] / "tools" / "lab"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")


def _tree(tmp_path: Path) -> Path:
    """A repository stand-in: the script, a wheel folder per build and the stand-ins. A venv's
    python passes its tests unless its wheel folder holds a file named `broken`."""
    repo = tmp_path / "repo"
    lab = repo / "tools" / "lab"
    lab.mkdir(parents=True)
    for name in ("candidate_ab.sh", "build_args.sh"):
        shutil.copy(LAB / name, lab)
    for name in ("wM", "wA", "wB"):
        (repo / ".gpu" / name).mkdir(parents=True)
    (repo / ".gpu" / "wB" / "broken").write_text("")
    (lab / "wheel_venv.sh").write_text(
        textwrap.dedent("""\
            mkdir -p "$1/bin"
            if [ -e "$2/broken" ]; then result="1 failed, 3 passed"; else result="4 passed"; fi
            printf '#!/bin/sh\\necho "$*" >> "%s/pytest-args.txt"\\necho "%s"\\n' \\
                "$(dirname "$1")" "$result" > "$1/bin/python"
            chmod +x "$1/bin/python"
            """)
    )
    (lab / "ab_wheels.sh").write_text(
        'mkdir -p "$OUT" && echo "$*" > "$OUT/args.txt" && echo "row M A" > "$OUT/table.txt"\n'
    )
    (repo / "check.sh").write_text('echo "checked $WHEELS into $OUT"\n')
    return repo


def _call(repo: Path, out: Path, *args: str, **env: str):
    return subprocess.run(
        ["bash", "tools/lab/candidate_ab.sh", *args],
        cwd=repo, capture_output=True, text=True, timeout=60,
        env={**os.environ, "OUT": str(out), "AB_VENVS": str(out.parent / "venvs"), **env},
    )  # fmt: skip


def test_a_candidate_that_fails_its_tests_drops_out(tmp_path):
    repo, out = _tree(tmp_path), tmp_path / "out"
    done = _call(
        repo, out, "M=.gpu/wM", "A=.gpu/wA", "B=.gpu/wB", "--", "bench_variants.py --parts x",
        TESTS="softcap", CHECK="check.sh", ROUNDS="2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "A tests rc 0" in done.stdout and "4 passed" in done.stdout
    assert "1 failed, 3 passed" in (out / "B-tests.txt").read_text()
    # the rounds: the base and A only, the scripts passed on as one argument each
    args = (out / "ab" / "args.txt").read_text().split()
    assert args[:3] == ["2", "M=.gpu/wM", "A=.gpu/wA"] and "B=.gpu/wB" not in args
    assert args[3:] == ["--", "bench_variants.py", "--parts", "x"]
    assert "row M A" in done.stdout
    # the check ran for A alone, into its own folder
    assert f"checked .gpu/wA into {out}/A-check" in done.stdout
    assert ".gpu/wB" not in done.stdout.split("ab done")[1]
    # pytest got the -k expression
    assert "-k softcap" in (tmp_path / "venvs" / "pytest-args.txt").read_text()


def test_no_candidate_left_exits_1(tmp_path):
    repo, out = _tree(tmp_path), tmp_path / "out"
    done = _call(repo, out, "M=.gpu/wM", "B=.gpu/wB", "--", "x.py", TESTS="softcap")
    assert done.returncode == 1
    assert not (out / "ab").exists()


def test_without_tests_every_candidate_runs(tmp_path):
    repo, out = _tree(tmp_path), tmp_path / "out"
    done = _call(repo, out, "M=.gpu/wM", "B=.gpu/wB", "--", "x.py")
    assert done.returncode == 0, done.stderr
    assert (out / "ab" / "args.txt").read_text().split()[:3] == ["3", "M=.gpu/wM", "B=.gpu/wB"]


def test_usage(tmp_path):
    repo = _tree(tmp_path)
    done = _call(repo, tmp_path / "out", "M=.gpu/wM", "--", "x.py")
    assert done.returncode == 2 and "usage" in done.stderr


def test_the_sanitizers_verdicts_are_printed_and_python_warnings_are_not(tmp_path):
    """A racecheck verdict ends in "0 warnings": it must survive the filter that drops Python's
    warnings, and each verdict the check left in its folder is printed with its file's name."""
    repo, out = _tree(tmp_path), tmp_path / "out"
    race = "========= RACECHECK SUMMARY: 2 hazards displayed (2 errors, 0 warnings)"
    (repo / "check.sh").write_text(
        textwrap.dedent(f"""\
            echo "/x/y.py:3: UserWarning: something noisy"
            echo "  warnings.warn("
            echo "racecheck rc 0: {race}"
            echo "{race}" > "$OUT/w-racecheck.txt"
            echo "========= ERROR SUMMARY: 0 errors" > "$OUT/w-memcheck.txt"
            echo "12 passed" > "$OUT/w-tests.txt"
            """)
    )
    done = _call(repo, out, "M=.gpu/wM", "A=.gpu/wA", "--", "x.py", CHECK="check.sh")
    assert done.returncode == 0, done.stderr
    assert "racecheck rc 0: ========= RACECHECK SUMMARY: 2 hazards" in done.stdout
    assert "UserWarning" not in done.stdout and "warnings.warn" not in done.stdout
    assert "A-check/w-racecheck.txt:========= RACECHECK SUMMARY: 2 hazards" in done.stdout
    assert "A-check/w-memcheck.txt:========= ERROR SUMMARY: 0 errors" in done.stdout
    assert "w-tests.txt" not in done.stdout
