"""tools/lab/check_with_fa4.sh, the two device calls of a check beside FA4, run here beside
stand-ins for gpu_session.sh and paged_fill_sweep.sh: what call 1 stashes for call 2, that each
call leaves only its JSONs and one archive of the logs (a device call brings back at most 8
files), what the summary shows, that call 2 on a fresh machine stops with exit 3, and that
REQUIRE_GPU stops either call before it runs anything on another GPU; SUITE=0 makes call 1 a
stash alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import textwrap
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[1] / "tools" / "lab"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")


def _tree(tmp_path: Path) -> Path:
    """A repository stand-in: the script, FA4's first chunk, a wheel folder and the stand-ins."""
    repo = tmp_path / "repo"
    lab = repo / "tools" / "lab"
    lab.mkdir(parents=True)
    shutil.copy(LAB / "check_with_fa4.sh", lab)
    (repo / ".fa4" / "s1").mkdir(parents=True)
    (repo / ".fa4" / "s1" / "c1").write_text("first chunk")
    (repo / "wheels").mkdir()
    (repo / "wheels" / "plugin.whl").write_text("wheel")
    # gpu_session.sh: records its arguments; writes a log with a failure line, a sanitizer log
    # and a JSON under $OUT, and prints pytest's last line and the sanitizers' summaries, as the
    # real one does
    (lab / "gpu_session.sh").write_text(
        textwrap.dedent("""\
            echo "$*" >> "$OUT/../sessions.txt"
            echo "FAILED tests/gpu/test_x.py::test_y" > "$OUT/gpu-tests.log"
            echo "========= ERROR SUMMARY: 0 errors" > "$OUT/sanitizer-memcheck.log"
            echo '{"rows": []}' > "$OUT/bench-$2.json"
            echo "1 failed, 1900 passed in 186.8s"
            grep -h SUMMARY "$OUT"/sanitizer-*.log
            """)
    )
    (lab / "paged_fill_sweep.sh").write_text(
        'mkdir -p "$2" && echo "U bf16 d128 ours 1.0" > "$2/ab-1.txt" && echo "geomean U 1.234"\n'
    )
    return repo


def _call(repo: Path, out: Path, stash: Path, *args: str, **env: str):
    return subprocess.run(
        ["bash", "tools/lab/check_with_fa4.sh", *args],
        cwd=repo, capture_output=True, text=True, timeout=60,
        env={**os.environ, "OUT": str(out), "STASH": str(stash), **env},
    )  # fmt: skip


def test_two_calls_stash_pack_and_summarise(tmp_path):
    repo, stash = _tree(tmp_path), tmp_path / "stash"
    out1, out2 = tmp_path / "o1", tmp_path / "o2"
    one = _call(repo, out1, stash, "1", "wheels", SWEEP="1")
    assert one.returncode == 0, one.stderr
    assert (stash / "c1").read_text() == "first chunk"
    assert (stash / "wheels" / "plugin.whl").read_text() == "wheel"
    assert sorted(p.name for p in out1.iterdir() if p.is_file()) == ["bench-tests.json", "logs.tgz"]
    with tarfile.open(out1 / "logs.tgz") as logs:
        assert {"suite.txt", "gpu-tests.log", "sanitizer-memcheck.log", "fill/ab-1.txt"} <= set(
            logs.getnames()
        )
    for shown in ("1900 passed", "ERROR SUMMARY: 0 errors", "FAILED tests/gpu/test_x.py", "1.234"):
        assert shown in one.stdout
    # a second call 1 on the same machine replaces the stashed wheels, not nests them
    assert _call(repo, out1, stash, "1", "wheels").returncode == 0
    assert sorted(p.name for p in (stash / "wheels").iterdir()) == ["plugin.whl"]

    two = _call(repo, out2, stash, "2")
    assert two.returncode == 0, two.stderr
    sessions = (tmp_path / "sessions.txt").read_text().splitlines()
    assert sessions[-1] == f"{stash}/wheels bench"
    assert "bench-bench.json" in {p.name for p in out2.iterdir()}
    assert "1900 passed" in two.stdout


def test_call_two_on_a_fresh_machine_stops(tmp_path):
    repo = _tree(tmp_path)
    run = _call(repo, tmp_path / "o", tmp_path / "no-stash", "2")
    assert run.returncode == 3
    assert "run call 1 again" in run.stdout
    assert not (tmp_path / "sessions.txt").exists()  # nothing ran


def test_unknown_call_is_a_usage_error(tmp_path):
    run = _call(_tree(tmp_path), tmp_path / "o", tmp_path / "s", "3")
    assert run.returncode == 2 and "call 1 WHEEL_DIR or call 2" in run.stderr


def _fake_gpu(tmp_path: Path, name: str) -> dict[str, str]:
    """A PATH whose nvidia-smi names this GPU (as `--query-gpu=name --format=csv,noheader`)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho '{name}'\n")
    smi.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def test_require_gpu_stops_on_another_gpu(tmp_path):
    repo, stash = _tree(tmp_path), tmp_path / "stash"
    env = _fake_gpu(tmp_path, "NVIDIA H100 80GB HBM3")
    run = _call(repo, tmp_path / "o", stash, "1", "wheels", REQUIRE_GPU="H200", **env)
    assert run.returncode == 4
    assert "NVIDIA H100 80GB HBM3" in run.stdout and "not H200" in run.stdout
    assert not stash.exists() and not (tmp_path / "sessions.txt").exists()  # nothing ran


def test_require_gpu_runs_on_that_gpu(tmp_path):
    repo, stash = _tree(tmp_path), tmp_path / "stash"
    env = _fake_gpu(tmp_path, "NVIDIA H200")
    run = _call(repo, tmp_path / "o", stash, "1", "wheels", REQUIRE_GPU="H200", **env)
    assert run.returncode == 0, run.stderr
    assert (stash / "c1").read_text() == "first chunk"


def test_suite_0_stashes_alone(tmp_path):
    repo, stash = _tree(tmp_path), tmp_path / "stash"
    one = _call(repo, tmp_path / "o1", stash, "1", "wheels", SUITE="0")
    assert one.returncode == 0, one.stderr
    assert "SUITE=0: no tests" in one.stdout
    assert (stash / "c1").read_text() == "first chunk"
    assert (stash / "wheels" / "plugin.whl").read_text() == "wheel"
    assert not (tmp_path / "sessions.txt").exists()  # gpu_session.sh did not run
    # call 2 then finds the stash
    two = _call(repo, tmp_path / "o2", stash, "2")
    assert two.returncode == 0, two.stderr
    assert (tmp_path / "sessions.txt").read_text().splitlines() == [f"{stash}/wheels bench"]
