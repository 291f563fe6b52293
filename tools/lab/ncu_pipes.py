"""How busy each of a kernel's units was, from Nsight Compute's raw page: the tensor cores', the
special-function unit's (XU: exp2, tanh), the FMA and ALU pipes' shares of their peaks and the
schedulers' issue share, over the SMs' active cycles, and from them the cycles the tensor cores
and the special-function unit were each busy. Where both of those are well below the cycles
the kernel took, neither unit's rate sets its time: the order of its work does (session 83: the
softcap-only instance kept both at two thirds, each busy for 2.05 M of 3.03 M cycles).

On the GPU machine (docs/bench-raw/2026-12-07s83-softcap-pipes-ncu-call.sh):

    ncu --clock-control none --profile-from-start off --section SpeedOfLight \\
        --section ComputeWorkloadAnalysis --section WarpStateStats --section InstructionStats \\
        --page raw --csv python tools/lab/profile_rows.py --variants > raw.csv

then anywhere (no GPU, no Nsight Compute):

    python tools/lab/ncu_pipes.py raw.csv [more.csv ...] [--names plain softcap alibi sinks]

One markdown table row per profiled kernel, in the files' order; ``--names`` labels them (else
the file's name and the kernel's template arguments).
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

# (column, Nsight Compute's metric): shares in % of the peak sustained over active cycles.
METRICS = (
    ("ms", "gpu__time_duration.sum"),  # ns in the raw page
    ("tensor %", "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_active"),
    ("XU %", "sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active"),
    ("FMA %", "sm__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active"),
    ("ALU %", "sm__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active"),
    ("issue %", "sm__issue_active.avg.pct_of_peak_sustained_elapsed"),
    ("warp instructions (M)", "smsp__inst_executed.sum"),
    ("SM cycles (M)", "sm__cycles_active.avg"),
)


def read_kernels(text: str) -> list[dict[str, str]]:
    """The profiled kernels of a raw-page CSV, each as {metric: value}: the rows after the
    header (the one naming "Kernel Name"), without its units row; the program's own output and
    Nsight Compute's notes before it are skipped."""
    rows = list(csv.reader(io.StringIO(text)))
    starts = [i for i, row in enumerate(rows) if "Kernel Name" in row]
    if not starts:
        return []
    header = rows[starts[0]]
    kernels = []
    for row in rows[starts[0] + 1 :]:
        if len(row) != len(header) or not row[0]:  # the units row has no ID
            continue
        kernels.append(dict(zip(header, row, strict=True)))
    return kernels


def number(value: str) -> float:
    """A raw-page value: thousands separated by commas."""
    return float(value.replace(",", ""))


def pipe_row(kernel: dict[str, str]) -> dict[str, float]:
    """METRICS' values of one kernel (ms from ns, counts in millions), and the cycles the tensor
    cores and the special-function unit were busy (share x active cycles, in millions)."""
    row = {}
    for column, metric in METRICS:
        value = number(kernel[metric])
        row[column] = value / 1e6 if column == "ms" or column.endswith("(M)") else value
    row["tensor busy (M cycles)"] = row["tensor %"] / 100 * row["SM cycles (M)"]
    row["XU busy (M cycles)"] = row["XU %"] / 100 * row["SM cycles (M)"]
    return row


def short_name(kernel: str) -> str:
    """A kernel's template arguments without the namespace and the parameter list."""
    inner = kernel.split("<", 1)[1].rsplit(">", 1)[0] if "<" in kernel else kernel
    return inner.replace("forge_flash::", "").replace("__nv_bfloat16", "bf16")


def cell(column: str, value: float) -> str:
    """ms to the microsecond, millions to 0.01, shares to 0.1%."""
    if column == "ms":
        return f"{value:.3f}"
    return f"{value:.2f}" if "(M" in column else f"{value:.1f}"


def table(labelled: list[tuple[str, dict[str, float]]]) -> str:
    """The rows as a markdown table."""
    columns = [column for column, _ in METRICS] + ["tensor busy (M cycles)", "XU busy (M cycles)"]
    lines = ["| kernel | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for label, row in labelled:
        cells = [cell(column, row[column]) for column in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="ncu --page raw --csv outputs")
    parser.add_argument("--names", nargs="*", default=[], help="each file's kernels' labels")
    args = parser.parse_args()
    labelled = []
    for path in args.files:
        for i, kernel in enumerate(read_kernels(path.read_text())):
            name = args.names[i] if i < len(args.names) else short_name(kernel["Kernel Name"])
            labelled.append((f"{path.stem} {name}", pipe_row(kernel)))
    if not labelled:
        print("no profiled kernels in the files")
        return 1
    print(table(labelled))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
