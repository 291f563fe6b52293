"""tools/lab/ncu_pipes.py's reading of Nsight Compute's raw page (ncu --page raw --csv): the
kernels after the header, without the units row and the program's own output, their values
with thousands separators, and the busy cycles derived from them, on a page written here in
that layout."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

LAB = Path(__file__).resolve().parents[1] / "tools" / "lab"
spec = importlib.util.spec_from_file_location("ncu_pipes", LAB / "ncu_pipes.py")
ncu_pipes = importlib.util.module_from_spec(spec)
sys.modules["ncu_pipes"] = ncu_pipes
spec.loader.exec_module(ncu_pipes)

METRICS = [metric for _, metric in ncu_pipes.METRICS]
# Two kernels: durations in ns with separators; shares in %; counts.
VALUES = (
    ("void k<bf16, Cfg<128>, Plain>(P, int)",
     "1,500,000", "80", "40", "15", "20", "39", "540,000,000", "2,500,000"),
    ("void k<bf16, Cfg<128>, BoundedSoftcap>(P, int)",
     "1,800,000", "66", "67", "13", "7", "37", "630,000,000", "3,000,000"),
)  # fmt: skip


def page() -> str:
    """Nsight Compute's notes and the program's prints, then the header, the units row and a row
    per kernel, each field quoted as ncu writes them."""

    def quote(cells: list[str]) -> str:
        return ",".join(f'"{cell}"' for cell in cells)

    lines = [
        '"==WARNING== Note: Running with unmodified GPU clocks."," results may be inconsistent."',
        '"profiled forge_flash plain: hd128 8k"',
        quote(["ID", "Kernel Name", *METRICS]),
        quote(["", "", *["" for _ in METRICS]]),
    ]
    for i, (name, *values) in enumerate(VALUES):
        lines.append(quote([str(i), name, *values]))
    lines.append('"==PROF== Disconnected from process 1"')
    return "\n".join(lines) + "\n"


def test_kernels_are_the_rows_after_the_header_without_the_units_row():
    kernels = ncu_pipes.read_kernels(page())
    assert [k["Kernel Name"] for k in kernels] == [name for name, *_ in VALUES]
    assert kernels[1]["sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active"] == "67"
    assert ncu_pipes.read_kernels("no header here\n") == []


def test_values_are_scaled_and_busy_cycles_derived():
    row = ncu_pipes.pipe_row(ncu_pipes.read_kernels(page())[1])
    assert row["ms"] == 1.8  # 1,800,000 ns
    assert row["warp instructions (M)"] == 630.0
    assert row["SM cycles (M)"] == 3.0
    assert row["tensor %"] == 66.0 and row["XU %"] == 67.0 and row["issue %"] == 37.0
    # busy = share x active cycles: 0.66 x 3.0 M and 0.67 x 3.0 M
    assert abs(row["tensor busy (M cycles)"] - 1.98) < 1e-9
    assert abs(row["XU busy (M cycles)"] - 2.01) < 1e-9


def test_the_table_has_a_row_per_kernel_with_its_label():
    kernels = ncu_pipes.read_kernels(page())
    rows = [(f"run {name}", ncu_pipes.pipe_row(k)) for name, k in zip("ab", kernels, strict=True)]
    lines = ncu_pipes.table(rows).splitlines()
    assert len(lines) == 4 and lines[0].startswith("| kernel | ms | tensor % | XU % | FMA %")
    # ms, the five shares, millions of instructions and cycles, then the two busy counts
    assert lines[2] == (
        "| run a | 1.500 | 80.0 | 40.0 | 15.0 | 20.0 | 39.0 | 540.00 | 2.50 | 2.00 | 1.00 |"
    )
    assert ncu_pipes.short_name(VALUES[1][0]) == "bf16, Cfg<128>, BoundedSoftcap"
