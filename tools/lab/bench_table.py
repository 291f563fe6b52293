"""Render `python -m forge_flash bench --json` output as the markdown tables of
docs/benchmarks.md: one row per shape, ours beside each contender present in the file (torch
SDPA's flash and cuDNN backends, FA4, the naive per-head loop), with ratios (their time / ours:
above 1, forge_flash is faster) and ours against the faster of cuDNN and FA4; rows of `bench
--paged` (prefill over a paged cache) in a table of their own.

    python tools/lab/bench_table.py RESULTS.json   (or .json.gz: docs/bench-raw keeps large ones so)
"""

from __future__ import annotations

import gzip
import json
import sys
from collections import defaultdict

NAMES = {"sdpa_flash": "flash", "sdpa_cudnn": "cudnn", "fa4": "fa4", "naive_loop": "naive loop"}
TARGET_RIVALS = ("sdpa_cudnn", "fa4")
# A table row's shape; its page size follows it in the key (files from before paged rows lack it).
SHAPE_FIELDS = ("kind", "dtype", "b", "d", "sq", "sk", "causal")


def _figure(kind: str, row: dict | None) -> str:
    if row is None or row["ms"] is None:
        return "n/a"
    if kind != "decode":  # prefill, and prefill over a paged cache ("paged")
        return f"{row['tflops']:.3g}"
    return f"{row['ms'] * 1e3:.1f} ({row['gbps']:.0f})"


def _ratio(ours: dict, row: dict | None) -> str:
    if row is None or row["ms"] is None:
        return "n/a"
    return f"{row['ms'] / ours['ms']:.2f}x"


def _target(ours: dict, found: dict[str, dict]) -> str:
    times = [found[c]["ms"] for c in TARGET_RIVALS if c in found and found[c]["ms"] is not None]
    return f"{min(times) / ours['ms']:.2f}" if times else "n/a"


def render(rows: list[dict]) -> str:
    by_shape: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        page = row.get("page_size", 0)  # files written before paged rows lack it
        key = (*(row[f] for f in SHAPE_FIELDS), page)
        by_shape[key][row["backend"]] = row
    present = {row["backend"] for row in rows}
    contenders = [c for c in NAMES if c in present]
    target = "fa4" in present  # without FA4 the "ours vs cudnn" column says it already
    lines = []
    for kind in ("prefill", "paged", "decode"):
        shapes = [k for k in by_shape if k[0] == kind]
        if not shapes:
            continue
        unit = "us (GB/s)" if kind == "decode" else "TFLOP/s"
        header = [kind, "causal", f"ours {unit}", *(NAMES[c] for c in contenders)]
        header += [f"ours vs {NAMES[c]}" for c in contenders]
        header += ["ours / max(cudnn, fa4)"] if target else []
        lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for key in shapes:
            found = by_shape[key]
            ours = found["forge_flash"]
            _, dtype, batch, d, sq, sk, causal, page = key
            # decode: one sequence, or a batch of them (`bench --full`'s batched rows)
            shape = f"{dtype} b{batch} kv {sk}" if kind == "decode" else f"{dtype} d{d} s{sq}"
            shape += f" pages of {page}" if kind == "paged" else ""
            cells = [_figure(kind, ours)] + [_figure(kind, found.get(c)) for c in contenders]
            cells += [_ratio(ours, found.get(c)) for c in contenders]
            cells += [_target(ours, found)] if target else []
            lines.append(f"| {shape} | {'yes' if causal else 'no'} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    opener = gzip.open if sys.argv[1].endswith(".gz") else open
    with opener(sys.argv[1], "rt", encoding="utf-8") as f:
        print(render(json.load(f)["rows"]))
