"""The A/B table of kernel builds, from the rows the lab's A/B scripts print, each build's runs
alternating with the others' (M A M A ...: tools/lab/ab_wheels.sh runs them so):

    python tools/lab/ab_table.py ab-1.txt ab-2.txt          # the base: the first tag read
    python tools/lab/ab_table.py --base M decode.txt

A row is one line of prefill_rows_ab.py or wave_tail_rows.py (`ours <TFLOP/s>`: higher is
faster), decode_rows_ab.py (`s0: <us>`), band_rows.py or bench_variants.py (`<ms> ms`): lower
is faster), whose first word is the build's tag; its key is the text between the tag and that
value, so every build's runs of a shape line up. Other lines (warnings, logs) are passed over.

Per row, each build's values in the order run, and its speed against the base: the ratio of
the means of their runs, turned so that above 1 is faster than the base whatever the unit; then
each build's geometric mean over the rows it shares with the base. A build's own spread between
its runs is the noise its ratios stand in: read them together. A first word that shares no row
with the base (another script's line) is not taken for a build.
"""

from __future__ import annotations

import argparse
import gzip
import math
import re
import statistics
from dataclasses import dataclass

# (the value's pattern, whether a higher value is faster)
_VALUES = (
    (re.compile(r"\bours\s+([0-9.]+)"), True),
    (re.compile(r"\bs0:\s+([0-9.]+)"), False),
    (re.compile(r"\s([0-9.]+) ms\b"), False),
)
_TAG = re.compile(r"[A-Za-z0-9_.+-]+")


@dataclass(frozen=True)
class Row:
    tag: str  # the build
    key: str  # the shape, as the script printed it
    value: float
    higher_is_faster: bool


def parse_row(line: str) -> Row | None:
    """The A/B row on this line, or None for any other line."""
    parts = line.split(maxsplit=1)
    if len(parts) < 2 or not _TAG.fullmatch(parts[0]):
        return None
    tag, rest = parts
    for pattern, higher in _VALUES:
        found = pattern.search(rest)
        if found is None:
            continue
        key = " ".join(rest[: found.start()].split())
        try:
            value = float(found.group(1))
        except ValueError:  # "1.2.3": not a number
            return None
        return Row(tag, key, value, higher) if key and value > 0 else None
    return None


@dataclass
class Table:
    builds: list[str]  # the base first, then in the order read
    rows: dict[str, dict[str, list[float]]]  # key -> build -> values in order
    higher_is_faster: dict[str, bool]

    def speed(self, key: str, build: str) -> float | None:
        """build's speed on this row against the base (> 1: faster), or None where either did
        not run it."""
        runs = self.rows[key]
        if build not in runs or self.builds[0] not in runs:
            return None
        ratio = statistics.fmean(runs[build]) / statistics.fmean(runs[self.builds[0]])
        return ratio if self.higher_is_faster[key] else 1.0 / ratio

    def geomean(self, build: str) -> float | None:
        """The geometric mean of build's speeds over the rows that it and the base ran."""
        speeds = [s for key in self.rows if (s := self.speed(key, build)) is not None]
        if not speeds:
            return None
        return math.exp(statistics.fmean(math.log(s) for s in speeds))


def build_table(lines: list[str], base: str | None = None) -> Table:
    """The rows of these lines, grouped by shape and build; ValueError when `base` ran nothing,
    or when no line holds a row."""
    builds: list[str] = []
    rows: dict[str, dict[str, list[float]]] = {}
    higher: dict[str, bool] = {}
    for line in lines:
        row = parse_row(line)
        if row is None:
            continue
        if row.tag not in builds:
            builds.append(row.tag)
        rows.setdefault(row.key, {}).setdefault(row.tag, []).append(row.value)
        higher[row.key] = row.higher_is_faster
    if not builds:
        raise ValueError("no A/B rows in the input (lines of prefill_rows_ab.py and the like)")
    if base is not None:
        if base not in builds:
            raise ValueError(f"base build {base!r} ran no row; builds read: {', '.join(builds)}")
        builds.remove(base)
        builds.insert(0, base)
    # A "build" that shares no row with the base is some other script's line (a log, another
    # table) whose first word passed for a tag: left out.
    shared = [b for b in builds[1:] if any(b in r and builds[0] in r for r in rows.values())]
    builds = builds[:1] + shared
    rows = {k: r for k, r in rows.items() if any(b in r for b in builds)}
    return Table(builds, rows, higher)


def format_table(table: Table) -> str:
    base = table.builds[0]
    width = max(len(key) for key in table.rows)
    runs_width = {
        b: max((len(_runs(r.get(b, []))) for r in table.rows.values()), default=1)
        for b in table.builds
    }
    head = [f"{'row':{width}s}"]
    head += [f"{b:>{runs_width[b]}s}" for b in table.builds]
    head += [f"{b + '/' + base:>9s}" for b in table.builds[1:]]
    lines = ["  ".join(head)]
    for key, runs in table.rows.items():
        cells = [f"{key:{width}s}"]
        cells += [f"{_runs(runs.get(b, [])):>{runs_width[b]}s}" for b in table.builds]
        cells += [f"{_ratio(table.speed(key, b)):>9s}" for b in table.builds[1:]]
        lines.append("  ".join(cells))
    pad = "  ".join([f"{'geomean':{width}s}"] + [" " * runs_width[b] for b in table.builds])
    lines.append(pad + "".join(f"  {_ratio(table.geomean(b)):>9s}" for b in table.builds[1:]))
    return "\n".join(lines)


def _runs(values: list[float]) -> str:
    return "/".join(f"{v:.4g}" for v in values) if values else "-"


def _ratio(speed: float | None) -> str:
    return "-" if speed is None else f"{speed:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="outputs of the A/B scripts")
    parser.add_argument("--base", help="the build the others are compared with (default: first)")
    args = parser.parse_args()
    lines: list[str] = []
    for name in args.files:
        opener = gzip.open if name.endswith(".gz") else open  # docs/bench-raw keeps large files so
        with opener(name, "rt", encoding="utf-8", errors="replace") as f:
            lines.extend(f)
    print(format_table(build_table(lines, args.base)))


if __name__ == "__main__":
    main()
