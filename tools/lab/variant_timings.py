"""What a score variant costs, timed three ways, and the host time of its call.

    python tools/lab/variant_timings.py [--json PATH]

bench_variants.py times one call between two CUDA events with the GPU idle before it, so its
figure holds the host's whole call (Python checks, planning, the launch) as well as the kernel.
An engine queues its calls, and the host's time then hides behind the GPU's. This prints, for
plain attention, softcap 50, ALiBi and sinks at head_dim 128 over 2 x 8k tokens, 16 heads, bf16,
causal and not:

* ``one``: bench_variants.py's figure (median of 30 single calls, synchronised after each);
* ``queued``: 20 calls back to back between two events, per call (median of 10);
* ``graph``: the GPU time of calls replayed from a CUDA graph (benchmark.time_graph);
* ``host``: the host's time to issue one call (20 back to back, no synchronisation), and the
  same on a call too small to keep the GPU busy (1 x 256 tokens), where it is all the host's.

With ``--window``: a window of 4096 over 32k causal tokens against full causal attention
instead. Ratios are the base's time over the row's (above 1: faster than the base).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from bench_variants import gpu_ms as one_ms  # its way: single calls, synchronised after each

import forge_flash as ff
from forge_flash.benchmark import time_graph


def queued_ms(fn, calls: int = 20) -> float:
    times = []
    for _ in range(10):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end) / calls)
    return statistics.median(times)


def host_us(fn, calls: int = 20) -> float:
    times = []
    for _ in range(10):
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls * 1e6)
    torch.cuda.synchronize()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    parser.add_argument("--window", action="store_true", help="the window rows instead")
    args = parser.parse_args()
    device = torch.device("cuda")

    def make(batch: int, seqlen: int) -> list[torch.Tensor]:
        return [
            torch.randn(batch, seqlen, 16, 128, device=device, dtype=torch.bfloat16)
            for _ in range(3)
        ]

    scores = {
        "plain": {},
        "softcap 50": {"softcap": 50.0},
        "alibi": {"alibi_slopes": torch.rand(16, device=device) * 0.1},
        "sinks": {"sinks": torch.randn(16, device=device)},
    }
    medium, small = make(2, 8192), make(1, 256)
    groups = [  # (label, inputs, {name: options}); the first of each group is its base
        ("hd128 8k non-causal", medium, scores),
        ("hd128 8k causal", medium, {n: {"causal": True, **o} for n, o in scores.items()}),
    ]
    if args.window:
        band = {"full": {"causal": True}, "window 4096": {"causal": True, "window_size": (4096, 0)}}
        groups = [("hd128 32k causal", make(1, 32768), band)]
    rows = []
    for label, qkv, variants in groups:
        base = None
        for name, options in variants.items():

            def call(qkv=qkv, options=options):
                return ff.flash_attn_fwd(*qkv, **options)

            for _ in range(3):
                call()
            torch.cuda.synchronize()
            got = {
                "one_ms": one_ms(call),
                "queued_ms": queued_ms(call),
                "graph_ms": time_graph(lambda _i, call=call: call(), device, copies=1, min_calls=10)
                * 1e3,
                "host_us": host_us(call),
                "small_host_us": host_us(lambda options=options: call(small, options)),
            }
            base = base or got
            ratios = {k: base[k] / got[k] for k in ("one_ms", "queued_ms", "graph_ms")}
            rows.append({"row": f"{label} {name}", **got, "ratios_vs_base": ratios})
            print(
                f"{label:<19} {name:<11} one {got['one_ms']:.3f} ms "
                f"({ratios['one_ms']:.3f}x)  queued {got['queued_ms']:.3f} ms "
                f"({ratios['queued_ms']:.3f}x)  graph {got['graph_ms']:.3f} ms "
                f"({ratios['graph_ms']:.3f}x)  host {got['host_us']:.1f} us, "
                f"small call {got['small_host_us']:.1f} us",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "gpu": torch.cuda.get_device_name(),
                    "torch": torch.__version__,
                    "forge_flash": ff.__version__,
                    "rows": rows,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
