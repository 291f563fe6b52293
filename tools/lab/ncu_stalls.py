"""Where a kernel's warps wait, from Nsight Compute's per-instruction stall samples: the share of
samples per stall reason, per SASS opcode, and the instructions that hold the most.

On the GPU machine, profile with the SourceCounters section and print the source page as CSV:

    ncu --clock-control none --profile-from-start off --section SourceCounters \\
        -o prof python tools/lab/profile_rows.py --variants
    ncu -i prof.ncu-rep --page source --csv --print-source sass > src.csv

then, anywhere (no GPU, no Nsight Compute):

    python tools/lab/ncu_stalls.py src.csv            # the kernels in the file, numbered
    python tools/lab/ncu_stalls.py src.csv 3 --top 30 # kernel 3: reasons, opcodes, top 30
    python tools/lab/ncu_stalls.py src.csv --mix 1 3  # instructions executed per opcode
    python tools/lab/ncu_stalls.py src.csv --phases 0 1  # the K/V loop's time by phase

(Nsight Compute 2025.3 printed each profiled kernel's block twice: the numbered list shows the
pairs by their sample counts.)

`--phases K...` cuts each kernel's K/V loop (a consumer's instructions per K/V tile) at its
landmarks (the K/V waits, the turn barrier, the products, the wait for S, the tanhs, the wait for
the consumer's own P V, the exp2s and P's stores, P's fence) and prints each phase's share of the
loop's samples: the share of a consumer's time it spends there. Session 84 read the softcap-only
instance's loop this way (tanh 27%, exp2 40%: each consumer in its softmax two thirds of the
time, three times one tile's special-function work, so the three consumers' softmaxes ran
together; docs/benchmarks.md).

`--mix` compares kernels by what they execute rather than where they wait: warp-level
instructions executed per opcode (the source page's "Instructions Executed"), largest first by the
first kernel named. Ours against FA4's head_dim 128 kernel showed alike softmax instructions and
the difference in a producer's spinning wait and the wgmma descriptors
(docs/bench-history/2026-12-04.md, 16:10).

A stall sampled at an instruction is the reason its warp could not issue that instruction: at a
MUFU, "mio" is the special-function queue being full and "wait" a fixed-latency dependency (the
FFMA that feeds it); at WARPGROUP.DEPBAR, "barrier" is a consumer waiting for its own wgmma, the
sign of a kernel the tensor cores pace.
"""

from __future__ import annotations

import argparse
import collections
import csv
import io

SAMPLES = "Warp Stall Sampling (All Samples)"
EXECUTED = "Instructions Executed"


def kernels(path: str) -> list[tuple[str, list[dict[str, str]]]]:
    """The (kernel name, rows) of each kernel block of a source-page CSV."""
    blocks: list[tuple[str, list[str]]] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith('"Kernel Name"'):
                blocks.append((next(csv.reader([line]))[1], []))
            elif blocks:
                blocks[-1][1].append(line)
    parsed = []
    for name, lines in blocks:
        reader = csv.DictReader(io.StringIO("".join(lines)))
        parsed.append((name, [row for row in reader if row.get("Address")]))
    return parsed


def number(text: str | None) -> float:
    try:
        return float((text or "").replace(",", ""))
    except ValueError:
        return 0.0


def opcode(source: str) -> str:
    words = source.split()
    if words and words[0].startswith("@"):  # a predicate guard
        words = words[1:]
    return words[0].split(".")[0] if words else ""


def report(rows: list[dict[str, str]], top: int) -> None:
    reasons = [k for k in rows[0] if k.startswith("stall_") and "(Not" not in k]
    total = sum(number(r[SAMPLES]) for r in rows) or 1.0

    def share(value: float) -> str:
        return f"{100 * value / total:5.1f}%"

    by_reason = collections.Counter({k: sum(number(r[k]) for r in rows) for k in reasons})
    print(f"{int(total)} samples; by reason:")
    for reason, value in by_reason.most_common(10):
        print(f"  {reason[6:]:<18} {share(value)}")
    by_op: collections.Counter[str] = collections.Counter()
    op_reasons: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for r in rows:
        op = opcode(r["Source"])
        by_op[op] += number(r[SAMPLES])
        for k in reasons:
            op_reasons[op][k[6:]] += number(r[k])
    print("by opcode (its three largest reasons):")
    for op, value in by_op.most_common(15):
        parts = ", ".join(f"{k} {share(v)}" for k, v in op_reasons[op].most_common(3))
        print(f"  {op:<10} {share(value)}  {parts}")
    print(f"the {top} instructions with the most samples:")
    for r in sorted(rows, key=lambda r: -number(r[SAMPLES]))[:top]:
        parts = sorted(((number(r[k]), k[6:]) for k in reasons), reverse=True)[:2]
        why = ", ".join(f"{k} {int(v)}" for v, k in parts if v > 0)
        source = r["Source"].strip()[:58]
        print(f"  {r['Address'][-6:]:>6} {share(number(r[SAMPLES]))} {source:<58} {why}")


def mix(found: list[tuple[str, list[dict[str, str]]]], top: int) -> None:
    """Warp-level instructions executed per opcode of each kernel given, in millions, side by
    side; opcodes ordered by the first kernel's count, then the others' own."""
    counts = []
    for _, rows in found:
        by_op: collections.Counter[str] = collections.Counter()
        for r in rows:
            by_op[opcode(r["Source"])] += number(r.get(EXECUTED))
        counts.append(by_op)
    for i, (name, _) in enumerate(found):
        print(f"[{i}] {name[:100]}")
    order = [op for op, _ in counts[0].most_common()]
    order += [op for c in counts[1:] for op, _ in c.most_common() if op not in order]
    print(f"{'opcode':<10}" + "".join(f"{f'[{i}] M':>12}" for i in range(len(found))))
    for op in order[:top]:
        print(f"{op:<10}" + "".join(f"{c[op] / 1e6:12.1f}" for c in counts))
    print(f"{'total':<10}" + "".join(f"{sum(c.values()) / 1e6:12.1f}" for c in counts))


# The landmarks of a Hopper consumer's K/V loop, in its order: each starts a phase that runs to
# the next landmark of another phase (compile_one_kernel.py --loop-order shows the same order).
PHASES = (
    ("SYNCS.PHASECHK", "K/V waits"),
    ("BAR.SYNC", "turn barrier"),
    ("HGMMA", "products issued"),
    ("DEPBAR.LE gsb0, 0x1", "wait for S"),
    ("MUFU.TANH", "tanh"),
    ("DEPBAR.LE gsb0, 0x0", "wait for own P V"),
    ("MUFU.EX2", "exp2, P stored"),
    ("FENCE.VIEW", "P's fence"),
)


def phases(rows: list[dict[str, str]]) -> list[tuple[str, float]]:
    """The K/V loop's stall samples by phase: the loop is the instructions executed as often as
    the most executed HGMMA (the consumers' per-tile count; the producer's waits spin more
    often and fall outside), cut at PHASES' landmarks in address order. Returns (phase, share
    of the loop's samples), phases in the order first met; "before" holds what precedes the
    first landmark."""
    counts = [number(r.get(EXECUTED)) for r in rows if opcode(r["Source"]) == "HGMMA"]
    if not counts:
        return []
    loop = [r for r in rows if number(r.get(EXECUTED)) == max(counts)]
    total = sum(number(r[SAMPLES]) for r in loop) or 1.0
    found: dict[str, float] = {}
    current = "before"
    for r in sorted(loop, key=lambda r: int(r["Address"], 16)):
        current = next((name for key, name in PHASES if key in r["Source"]), current)
        found[current] = found.get(current, 0.0) + number(r[SAMPLES])
    return [(name, value / total) for name, value in found.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="ncu --page source --csv --print-source sass output")
    parser.add_argument(
        "kernel", nargs="?", type=int, help="which kernel block (default: list them)"
    )
    parser.add_argument("--top", type=int, default=20, help="instructions (--mix: opcodes) to list")
    parser.add_argument(
        "--mix", type=int, nargs="+", metavar="K", help="instructions per opcode of kernels K"
    )
    parser.add_argument(
        "--phases", type=int, nargs="+", metavar="K", help="kernels K's K/V loop by phase"
    )
    args = parser.parse_args()
    found = kernels(args.csv)
    if args.mix:
        mix([found[k] for k in args.mix], args.top)
        return
    if args.phases:
        for k in args.phases:
            print(f"[{k}] {found[k][0][:100]}")
            for name, share in phases(found[k][1]):
                print(f"  {name:<18} {100 * share:5.1f}%")
        return
    if args.kernel is None:
        for i, (name, rows) in enumerate(found):
            samples = int(sum(number(r.get(SAMPLES)) for r in rows))
            print(f"{i}: {len(rows)} instructions, {samples} samples, {name[:140]}")
        return
    name, rows = found[args.kernel]
    print(name[:200])
    report(rows, args.top)


if __name__ == "__main__":
    main()
