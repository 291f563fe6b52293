"""Where a decode step's appended token costs GPU time: the kernels of `flash_attn_with_kvcache`
steps (the append kernel and the decode kernel launched programmatically behind it) beside the
attention alone, from the profiler's kernel records of CUDA-graph replays:

    python tools/lab/append_timeline.py [--batches 64] [--calls 8] [--rotary] [--projection]

The shapes of tools/kvcache_append_cost.py (32 query heads over 8 KV heads of 128, bf16,
4096-key contiguous caches with ragged lengths, one new token per sequence). For each batch it
prints decode_timeline.py's summary of both graphs (period per step, each kernel's median span:
a programmatic launch's span starts early and includes its waits), then one step's kernels with
their start and end relative to the step's first kernel: how far the decode kernel's start
trails the append kernel's, and its end the append's end. ``--projection``: a plain kernel
writes q, k and v before every step, as kvcache_append_cost.py's option does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from decode_timeline import call_groups, kernel_records, summarise, unsplit  # this folder's

import forge_flash

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: the append-cost shapes
from kvcache_append_cost import project, step_case


def step_offsets(replays: list[list[dict]], calls: int) -> list[str]:
    """Each kernel of a step: median start and end (us) relative to the step's first kernel."""
    split = call_groups(replays, calls)
    if split is None:
        return [unsplit("steps", replays, calls)]
    per_call = len(split[0][0])
    starts: list[list[float]] = [[] for _ in range(per_call)]
    ends: list[list[float]] = [[] for _ in range(per_call)]
    for groups in split:
        for group in groups:
            t0 = group[0]["ts"]
            for j, k in enumerate(group):
                starts[j].append(k["ts"] - t0)
                ends[j].append(k["ts"] + k["dur"] - t0)
    med = statistics.median
    return [
        f"    kernel {j}: start {med(starts[j]):7.2f} us, end {med(ends[j]):7.2f} us  "
        f"{replays[0][j]['name'][:70]}"
        for j in range(per_call)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="64", help="comma-separated batch sizes")
    parser.add_argument("--calls", type=int, default=8, help="steps per captured graph")
    parser.add_argument("--replays", type=int, default=3)
    parser.add_argument("--rotary", action="store_true", help="rotary tables over all 128 features")
    parser.add_argument("--projection", action="store_true", help="q, k, v written per step")
    args = parser.parse_args()
    device = torch.device("cuda")
    for batch in (int(b) for b in args.batches.split(",")):
        c = step_case(batch, False, device, args.projection)
        tables = {"rotary_cos": c["cos"], "rotary_sin": c["sin"]} if args.rotary else {}
        grown = c["seqlens"] + 1

        def alone(_: int, c=c, grown=grown) -> object:
            project(c)
            return forge_flash.flash_attn_with_kvcache(
                c["q"], c["k_cache"], c["v_cache"], cache_seqlens=grown, causal=True
            )

        def step(_: int, c=c, tables=tables) -> object:
            project(c)
            return forge_flash.flash_attn_with_kvcache(
                c["q"], c["k_cache"], c["v_cache"], c["k"], c["v"], cache_seqlens=c["seqlens"],
                causal=True, **tables,
            )  # fmt: skip

        flags = f"rotary={int(args.rotary)}, projection={int(args.projection)}"
        print(f"batch {batch}, contiguous, {flags}")
        for name, fn in (("attention alone", alone), ("step with the append", step)):
            replays = kernel_records(fn, 1, args.calls, args.replays)
            print(summarise(name, replays, args.calls))
            print("\n".join(step_offsets(replays, args.calls)))


if __name__ == "__main__":
    main()
