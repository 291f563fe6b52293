"""tools/lab/ab_table.py (the A/B table of kernel builds) on the rows its scripts print, and
tools/lab/ab_wheels.sh's rounds (builds alternating, each script's rows in its own file) with a
stand-in venv and script in place of the GPU's."""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[1] / "tools" / "lab"
spec = importlib.util.spec_from_file_location("ab_table", LAB / "ab_table.py")
ab_table = importlib.util.module_from_spec(spec)
sys.modules["ab_table"] = ab_table  # its dataclasses look their module up there
spec.loader.exec_module(ab_table)

# One row of each script, as they print them (tools/lab/*.py, docs/bench-raw/).
PREFILL = (
    "M     bfloat16 d64  s2048  b8   blocks 31.03/SM full   ours  468.5 cudnn  467.1 "
    "ratio 1.003 err 6.2e-04"
)
WAVE = (
    "T    bfloat16 1x2048x28x128    rounds   3.39 ours  518.3 cudnn  548.7 TFLOP/s  "
    "ours/cudnn 0.945  err 5.7e-04"
)
DECODE = "M     d128 b1       4k s0:    10.0 cudnn:    11.2 (1.67 TB/s) vs cudnn 1.122x err 2.7e-04"
DECODE_STEP = (  # --queries 8 --fa4: a step of 8 tokens a sequence
    "M     d128 b8      32k q8 s0:   180.0 cudnn:   200.0 fa4:   190.0 (2.98 TB/s) "
    "vs cudnn 1.111x vs fa4 1.056x err 2.0e-03"
)
BAND = "W     window 4096 + sinks             1.909 ms    651 TFLOP/s  rounds 1.874-1.975"


@pytest.mark.parametrize(
    "line, tag, key, value, higher",
    [
        (PREFILL, "M", "bfloat16 d64 s2048 b8 blocks 31.03/SM full", 468.5, True),
        (WAVE, "T", "bfloat16 1x2048x28x128 rounds 3.39", 518.3, True),
        (DECODE, "M", "d128 b1 4k", 10.0, False),
        (DECODE_STEP, "M", "d128 b8 32k q8", 180.0, False),
        (BAND, "W", "window 4096 + sinks", 1.909, False),
    ],
)
def test_each_scripts_row_is_read(line, tag, key, value, higher):
    assert ab_table.parse_row(line) == ab_table.Row(tag, key, value, higher)


def test_bench_variants_rows_are_read():
    # bench_variants.py's own formatting, with and without a ratio and a note
    spec = importlib.util.spec_from_file_location("bench_variants", LAB / "bench_variants.py")
    bench_variants = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_variants)
    name = "hd128 8k causal softcap 50, scores past it"
    line = bench_variants.format_row("SP", name, 1.237, 0.95, "q, k x8")
    assert ab_table.parse_row(line) == ab_table.Row("SP", name, 1.237, False)
    base = bench_variants.format_row("M", "causal 32k, hd128 (base)", 7.221, None, "")
    assert ab_table.parse_row(base) == ab_table.Row("M", "causal 32k, hd128 (base)", 7.221, False)


@pytest.mark.parametrize(
    "line",
    [
        "",
        "Warning: something about TF32",
        "# .gpu/exp.sh: a comment ours 3.0",  # '#' is no tag
        "NVIDIA H200, 580.159.04",
        "M ours 12.0",  # no shape before the value
        "M d64 ours 0.0",  # no time or throughput is zero
        "M d64 ours 1.2.3",
    ],
)
def test_other_lines_are_passed_over(line):
    assert ab_table.parse_row(line) is None


def _expected_speed(base: list[float], other: list[float], higher: bool) -> float:
    ratio = (sum(other) / len(other)) / (sum(base) / len(base))
    return ratio if higher else 1 / ratio


def test_speeds_are_ratios_of_means_turned_so_that_above_one_is_faster():
    lines = [
        "M  d64 s512 ours 400.0 cudnn 1",
        "A  d64 s512 ours 410.0 cudnn 1",
        "M  d64 s512 ours 402.0 cudnn 1",
        "A  d64 s512 ours 414.0 cudnn 1",
        "M  d128 b1 4k s0: 10.0 cudnn: 11",
        "A  d128 b1 4k s0: 12.5 cudnn: 11",
        "Warning: a log line between the rows",
    ]
    table = ab_table.build_table(lines)
    assert table.builds == ["M", "A"]
    fast = table.speed("d64 s512", "A")
    slow = table.speed("d128 b1 4k", "A")
    assert fast == pytest.approx(_expected_speed([400, 402], [410, 414], True))
    assert fast > 1
    assert slow == pytest.approx(_expected_speed([10.0], [12.5], False))
    assert slow == pytest.approx(0.8)
    assert table.geomean("A") == pytest.approx(math.sqrt(fast * slow))
    text = ab_table.format_table(table)
    assert "400/402" in text and "410/414" in text
    assert text.splitlines()[-1].split()[-1] == f"{math.sqrt(fast * slow):.3f}"


def test_the_base_can_be_named_and_rows_one_side_lacks_are_left_out():
    lines = [
        "M  d64 ours 100.0",
        "A  d64 ours 120.0",
        "A  d96 ours 50.0",  # M did not run it: no ratio, not in the geomean
    ]
    table = ab_table.build_table(lines, base="A")
    assert table.builds == ["A", "M"]
    assert table.speed("d64", "M") == pytest.approx(100 / 120)
    assert table.speed("d96", "M") is None
    assert table.geomean("M") == pytest.approx(100 / 120)
    assert "-" in ab_table.format_table(table).splitlines()[2].split()


def test_a_first_word_that_shares_no_row_with_the_base_is_no_build():
    lines = [
        "W  window 4096  1.900 ms",
        "R  window 4096  1.880 ms",
        "causal 32k, hd128 (base)  7.065 ms",  # another script's table
    ]
    table = ab_table.build_table(lines)
    assert table.builds == ["W", "R"]
    assert table.geomean("R") == pytest.approx(1.9 / 1.88)


def test_no_rows_or_an_unknown_base_is_an_error():
    with pytest.raises(ValueError, match="no A/B rows"):
        ab_table.build_table(["Warning: nothing here"])
    with pytest.raises(ValueError, match="'X' ran no row"):
        ab_table.build_table(["M d64 ours 1.0"], base="X")


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_ab_wheels_alternates_the_builds_in_every_round(tmp_path):
    # ab_wheels.sh beside a stand-in wheel_venv.sh (a "venv" whose python is this one) and a
    # stand-in script that prints a row with a value per build and a log line.
    lab = tmp_path / "lab"
    lab.mkdir()
    for name in ("ab_wheels.sh", "build_args.sh", "ab_table.py"):
        shutil.copy(LAB / name, lab / name)
    (lab / "wheel_venv.sh").write_text(
        textwrap.dedent(f"""\
            mkdir -p "$1/bin" && ln -sf {sys.executable} "$1/bin/python"
            echo "$2" > "$1/wheels"
            """)
    )
    (lab / "fake_rows.py").write_text(
        textwrap.dedent("""\
            import sys
            tag, shape = sys.argv[1], sys.argv[2]
            print("Warning: a log line")
            value = {"M": 100.0, "A": 110.0}[tag]
            print(f"{tag} {shape} ours {value} cudnn 1.0")
            with open(sys.argv[3], "a") as order:
                print(tag, file=order)
            """)
    )
    out, order = tmp_path / "out", tmp_path / "order.txt"
    env = {**os.environ, "OUT": str(out), "AB_VENVS": str(tmp_path)}
    run = subprocess.run(
        ["bash", str(lab / "ab_wheels.sh"), "2", "M=wheels/m", "A=wheels/a", "--",
         f"fake_rows.py d64 {order}", f"fake_rows.py d128 {order}"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "ab-venv-A" / "wheels").read_text().strip() == "wheels/a"
    assert order.read_text().split() == ["M", "A"] * 4
    assert (out / "ab-1.txt").read_text().count("d64 ours") == 4
    assert (out / "ab-2.txt").read_text().count("d128 ours") == 4
    table = (out / "table.txt").read_text()
    assert table == run.stdout
    assert table.splitlines()[-1].split()[-1] == "1.100"
