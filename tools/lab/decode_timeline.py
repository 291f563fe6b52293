"""Where a decode call's GPU time goes: each kernel's span and the gaps between them, from the
profiler's kernel records of CUDA-graph replays (the way `bench --graph` times a call).

    python tools/lab/decode_timeline.py [--rows 1:8192,1:65536,1:131072] [--calls 8]

One query per sequence, 32 query heads over 8 KV heads of 128, bf16, full caches of L keys, the
benchmark's inputs (`make_inputs`: K/V copies rotated out of L2). For forge-flash
(`flash_attn_fwd`, as `bench` calls it) and cuDNN (torch SDPA pinned to it) a graph of
`--calls` calls is captured and replayed under torch's profiler; per call the tool prints the
period (first kernel's start to the next call's), each kernel's median span (start of its
first CTA to end of its last; a programmatic launch's span starts early and includes its
wait), how far the call's last kernel ends past its first kernel's end (the merge's tail),
and the gap from a call's last kernel's end to the next call's first start. The profiler's
records add little to a graph's kernels, but compare periods with `bench --graph`, not
across tools.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from decode_rows_ab import kernel_events  # this folder's: the profiler's kernel records

from forge_flash.benchmark import Shape, capture_calls, contenders, make_inputs

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128


def kernel_records(fn, copies: int, calls: int, replays: int) -> list[list[dict]]:
    """The kernels of each replay's calls, in start order: one list per replay."""
    graph, _ = capture_calls(fn, torch.device("cuda"), copies=copies, min_calls=calls)
    torch.cuda.synchronize()
    return [kernel_events(graph.replay) for _ in range(replays)]


def call_groups(replays: list[list[dict]], calls: int) -> list[list[list[dict]]] | None:
    """Each replay's kernels split into its ``calls`` calls (the same kernels per call), or None
    where the counts do not split evenly."""
    per_call = len(replays[0]) // calls
    if per_call == 0 or any(len(r) != per_call * calls for r in replays):
        return None
    return [[r[i * per_call : (i + 1) * per_call] for i in range(calls)] for r in replays]


def unsplit(name: str, replays: list[list[dict]], calls: int) -> str:
    """The line that says the replays' kernels do not split into calls."""
    return f"  {name}: kernel counts {[len(r) for r in replays]} do not split into {calls} calls"


def summarise(name: str, replays: list[list[dict]], calls: int) -> str:
    split = call_groups(replays, calls)
    if split is None:
        return unsplit(name, replays, calls)
    per_call = len(split[0][0])
    periods, tails, gaps = [], [], []
    spans: list[list[float]] = [[] for _ in range(per_call)]
    for groups in split:
        for i, group in enumerate(groups):
            for j, k in enumerate(group):
                spans[j].append(k["dur"])
            first_end = group[0]["ts"] + group[0]["dur"]
            last_end = max(k["ts"] + k["dur"] for k in group)
            tails.append(last_end - first_end)
            if i + 1 < calls:
                nxt = groups[i + 1][0]["ts"]
                periods.append(nxt - group[0]["ts"])
                gaps.append(nxt - last_end)
    med = statistics.median
    lines = [
        f"  {name}: period {med(periods):7.2f} us, merge tail {med(tails):5.2f} us, "
        f"gap to next call {med(gaps):5.2f} us (medians of {len(periods)} calls)"
    ]
    for j, k in enumerate(replays[0][:per_call]):
        lines.append(f"    kernel {j}: span {med(spans[j]):7.2f} us  {k['name'][:90]}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1:8192,1:65536,1:131072", help="batch:keys,...")
    parser.add_argument("--calls", type=int, default=8, help="calls per captured graph")
    parser.add_argument("--replays", type=int, default=3)
    args = parser.parse_args()
    device = torch.device("cuda")
    for spec in args.rows.split(","):
        batch, keys = (int(x) for x in spec.split(":"))
        shape = Shape("decode", batch, HEADS, KV_HEADS, 1, keys, HEAD_DIM, False, "bf16")
        inputs = make_inputs(shape, device)
        skip = frozenset({"sdpa_flash", "fa4", "naive_loop"})
        print(f"batch {batch}, {keys} keys ({shape.kv_bytes / 1e6:.1f} MB of K/V):", flush=True)
        for name, contender in contenders(shape, inputs, device, skip=skip).items():
            if contender is None:
                continue
            with contender.context():
                replays = kernel_records(contender.run, len(inputs.ours), args.calls, args.replays)
            print(summarise(name, replays, args.calls), flush=True)


if __name__ == "__main__":
    main()
