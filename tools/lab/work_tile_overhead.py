"""What a work tile costs besides its keys: each contender's fixed cost per query block.

    python tools/lab/work_tile_overhead.py [--head-dims 64 96 128] [--keys 2048 4096 8192 16384]

For each head dim, non-causal calls with the same query blocks (4096 queries a sequence, 16k
queries in all, 2048 // head_dim heads: the benchmark's prefill shape) against several key lengths,
timed as GPU time from CUDA-graph replays (`forge_flash.benchmark.time_graph`; single calls where a
contender cannot be captured) in rounds where the contenders take turns (ours, cuDNN, and FA4 where
flash_attn.cute imports). A call's time is then close to a line in the key length, time = fixed +
keys x slope: the slope is the steady rate of the K/V loop, the fixed part what each round of work
tiles (one query block an SM) pays to start and end: launching a CTA, loading Q and the first K/V
tiles, the epilogue's stores. Printed per contender: the least-squares line's fixed part per round
of work tiles (us), its slope as TFLOP/s, and the share of the fixed part in the call at each key
length. Where ours has the same slope as the best peer but a larger fixed part, the long non-causal
rows lose on work-tile start-up, not on the loop.

Rounds of work tiles: 128-row query blocks over the SMs, rounded up (one CTA an SM). Our head_dim
64 calls run 192-row blocks (three consumers) and so fewer rounds: compare the fixed share of the
call there, not the figure per round.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics

import torch

from forge_flash.benchmark import Shape, contenders, make_inputs, time_call, time_graph

QUERIES_PER_SEQ = 4096
TOKENS = 16384


def gpu_seconds(fn, device: torch.device, copies: int) -> float:
    """GPU time per call from CUDA-graph replays, or the median of single calls where the
    contender cannot be captured."""
    try:
        return time_graph(fn, device, copies=copies, min_calls=4)
    except RuntimeError as exc:
        print(f"  not capturable ({exc}): single calls")
        return time_call(fn, device, budget_s=0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--head-dims", type=int, nargs="+", default=[64, 96, 128])
    parser.add_argument("--keys", type=int, nargs="+", default=[2048, 4096, 8192, 16384])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    device = torch.device("cuda")
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    print(torch.cuda.get_device_name(device), f"{sms} SMs")
    results = []
    for d in args.head_dims:
        heads, batch = 2048 // d, TOKENS // QUERIES_PER_SEQ
        blocks = batch * heads * math.ceil(QUERIES_PER_SEQ / 128)
        waves = math.ceil(blocks / sms)
        times: dict[str, dict[int, list[float]]] = {}
        for keys in args.keys:
            shape = Shape(
                "prefill", batch, heads, heads, QUERIES_PER_SEQ, keys, d, False, args.dtype
            )  # fmt: skip
            inputs = make_inputs(shape, device)
            made = contenders(shape, inputs, device, frozenset({"naive_loop", "sdpa_flash"}))
            calls = {name: c for name, c in made.items() if c is not None}
            for _ in range(args.rounds):
                for name, contender in calls.items():
                    with contender.context():
                        seconds = gpu_seconds(contender.run, device, len(inputs.ours))
                    times.setdefault(name, {}).setdefault(keys, []).append(seconds * 1e6)
            del inputs, calls
            torch.cuda.empty_cache()
        print(f"\nhead_dim {d}: {batch} x {QUERIES_PER_SEQ} queries, {heads} heads, {blocks} query "
              f"blocks = {waves} rounds of work tiles on {sms} SMs")  # fmt: skip
        print(f"{'contender':<12} {'fixed/round us':>14} {'loop TFLOP/s':>12}  " +
              "  ".join(f"{k:>6}: us, TF, fixed%" for k in args.keys))  # fmt: skip
        for name, by_keys in times.items():
            keys = sorted(by_keys)
            us = [statistics.median(by_keys[k]) for k in keys]
            slope, fixed = statistics.linear_regression([float(k) for k in keys], us)
            flops_per_key = 4.0 * batch * heads * QUERIES_PER_SEQ * d
            loop_tflops = flops_per_key / (slope * 1e-6) / 1e12
            cells = "  ".join(
                f"{t:8.1f} {flops_per_key * k / t / 1e6:4.0f} {100 * fixed / t:4.1f}%"
                for k, t in zip(keys, us, strict=True)
            )
            print(f"{name:<12} {fixed / waves:14.2f} {loop_tflops:12.0f}  {cells}")
            results.append(
                {"head_dim": d, "contender": name, "keys": keys, "us": us, "rounds": waves,
                 "fixed_us_per_round": fixed / waves, "loop_tflops": loop_tflops}
            )  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(device), "rows": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
