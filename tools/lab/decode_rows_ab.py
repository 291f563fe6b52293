"""Decode rows of forge-flash beside cuDNN in one process, for A/B rounds of kernel builds and
split-count sweeps.

One query per sequence, 32 query heads over 8 KV heads of 128 (`--head-dim`), full caches of L
keys, bf16; GPU time of graph replays (`forge_flash.benchmark.time_graph`) over K/V copies
rotated out of L2, each call once per pass (`--passes`, default 2), best kept. Each build runs
this in its own venv, the builds alternating (M A M A ...):

    python tools/lab/decode_rows_ab.py TAG                      # the default rows
    python tools/lab/decode_rows_ab.py TAG 64:4096,16:4096 --splits 1,2,4
    python tools/lab/decode_rows_ab.py TAG --head-major --kernels

A row prints our time with the dispatcher's split count (`s0`), then with each count of
`--splits` forced (`flash_attn_with_kvcache(num_splits=...)`), cuDNN's (torch SDPA pinned to
it, GQA natively, on its (b, h, s, d) layout as `bench` gives it), and ours against cuDNN.
`--head-major` also times ours on cuDNN's layout (each head's keys contiguous, passed as a
strided (b, s, h, d) view): whether a gap is the kernel or the layout. `--kernels` prints each
contender's kernels with their grid, block, registers and shared memory (torch's profiler).
Last column: the largest error of our output against float32 math on the first sequence.

`--queries N` makes each row a step of N query tokens per sequence over the cache (speculative
decoding's verification of N - 1 drafted tokens, causal, aligned bottom-right): with 32/8 heads,
steps of up to 4 tokens fill a decode tile (16 rows), longer ones run as prefill (split-KV where
the grid is small). The key of its rows gains `qN`. cuDNN's SDPA call takes no bottom-right
causal mask, so it runs those rows without one (the same keys but for the last N - 1, some
more work); `--fa4` adds FA4's `flash_attn_func` (causal bottom-right, GQA natively) where it
is installed, its JIT compile untimed.
"""

from __future__ import annotations

import argparse
import contextlib

import torch

import forge_flash
from forge_flash.benchmark import MIN_GRAPH_CALLS, Shape, contenders, make_inputs, time_graph

HEADS, KV_HEADS = 32, 8
DEFAULT_ROWS = "1:4096,1:16384,1:131072,8:32768,16:4096,32:4096,64:4096,64:16384,128:4096"


def best_us(fn, copies: int) -> float:
    device = torch.device("cuda")
    times = [time_graph(fn, device, copies=copies, min_calls=MIN_GRAPH_CALLS) for _ in range(2)]
    return min(times) * 1e6


def kernel_events(run) -> list[dict]:
    """The kernels ``run()`` launches, in start order: torch profiler trace events (name, ts and
    dur in us, args: grid, block, registers, shared memory)."""
    import json
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    with tempfile.NamedTemporaryFile(suffix=".json") as trace:
        prof.export_chrome_trace(trace.name)
        with open(trace.name) as f:
            events = json.load(f)["traceEvents"]
    return sorted((e for e in events if e.get("cat") == "kernel"), key=lambda e: e["ts"])


def kernels(fn) -> list[str]:
    """Each kernel one call of ``fn`` launches: name, grid, block, registers, shared memory."""
    fn(0)
    torch.cuda.synchronize()
    lines = []
    for e in kernel_events(lambda: fn(0)):
        a = e.get("args", {})
        lines.append(
            f"    {e['name'][:100]} grid {a.get('grid')} block {a.get('block')} "
            f"regs {a.get('registers per thread')} smem {a.get('shared memory')} "
            f"{e.get('dur', 0):.1f} us"
        )
    return lines


def reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """float32 attention of q (b, n, h, d) over k/v (b, L, h_k, d): GQA, and for n > 1 query
    i of the step sees keys up to L - n + i (causal, bottom-right)."""
    q, k, v = q.float(), k.float(), v.float()
    group = q.shape[2] // k.shape[2]
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k.repeat_interleave(group, 2)) * q.shape[-1] ** -0.5
    n, keys = q.shape[1], k.shape[1]
    key, query = (torch.arange(x, device=scores.device) for x in (keys, n))
    scores = scores.masked_fill(key > query.view(-1, 1) + (keys - n), float("-inf"))
    return torch.einsum(
        "bhqk,bkhd->bqhd", torch.softmax(scores, dim=-1), v.repeat_interleave(group, 2)
    )


def row(tag: str, batch: int, keys: int, head_dim: int, splits: list[int], args) -> None:
    n_q = args.queries
    shape = Shape("decode", batch, HEADS, KV_HEADS, n_q, keys, head_dim, n_q > 1, "bf16")
    inputs = make_inputs(shape, torch.device("cuda"))
    n = len(inputs.ours)
    # The lengths made once: without them each call would fill a lengths tensor first.
    lens = torch.full((batch,), keys, dtype=torch.int32, device="cuda")

    def ours(s: int, layout: str = "ours"):
        sets = inputs.ours
        if layout == "head-major":  # cuDNN's tensors, as (b, s, h, d) views
            pairs = zip(inputs.ours, inputs.sdpa, strict=True)
            sets = [(q, k.transpose(1, 2), v.transpose(1, 2)) for (q, _, _), (_, k, v) in pairs]

        def run(i: int) -> torch.Tensor:
            q, k, v = sets[i % n]
            return forge_flash.flash_attn_with_kvcache(
                q, k, v, cache_seqlens=lens, causal=n_q > 1, num_splits=s
            )

        return run

    calls = {f"s{s}": (ours(s), contextlib.nullcontext) for s in [0, *splits]}
    if args.head_major:
        calls["hm"] = (ours(0, "head-major"), contextlib.nullcontext)
    others = {"forge_flash", "sdpa_flash", "naive_loop"} | (set() if args.fa4 else {"fa4"})
    rivals = contenders(shape, inputs, torch.device("cuda"), skip=frozenset(others))
    for name, label in (("sdpa_cudnn", "cudnn"), ("fa4", "fa4")):
        if rivals.get(name) is not None:
            calls[label] = (rivals[name].run, rivals[name].context)
    # Every call once per pass, best of the passes: a call measured first after the inputs'
    # set-up ran up to 10% slow (an idle GPU's clocks), so no call is always first.
    times = dict.fromkeys(calls, float("inf"))
    for _ in range(args.passes):
        for name, (fn, context) in calls.items():
            with context():
                times[name] = min(times[name], best_us(fn, n))
    q, k, v = (t[:1] for t in inputs.ours[0])
    err = (ours(0)(0)[:1].float() - reference(q, k, v)).abs().max().item()
    cols = " ".join(f"{name}: {t:7.1f}" for name, t in times.items())
    ratio = "".join(
        f" vs {rival} {times[rival] / times['s0']:5.3f}x"
        for rival in ("cudnn", "fa4")
        if rival in times
    )
    step = f" q{n_q}" if n_q > 1 else ""  # rows of one query keep their earlier key (ab_table.py)
    print(
        f"{tag:5s} d{head_dim:<3d} b{batch:<4d} {keys // 1024:4d}k{step} {cols} "
        f"({shape.kv_bytes / times['s0'] / 1e6:4.2f} TB/s){ratio} err {err:.1e}",
        flush=True,
    )
    if args.kernels:
        for name, (fn, context) in calls.items():
            if name in ("s0", "cudnn"):
                with context():
                    print(f"  {name}:\n" + "\n".join(kernels(fn)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tag", help="the build's name, printed on each row")
    parser.add_argument("rows", nargs="?", default=DEFAULT_ROWS, help="batch:keys,...")
    parser.add_argument("--splits", default="", help="split counts to force, e.g. 1,2,4")
    parser.add_argument("--head-major", action="store_true", help="ours on cuDNN's layout too")
    parser.add_argument("--kernels", action="store_true", help="each contender's kernels")
    parser.add_argument("--head-dim", type=int, default=128, help="64, 96, 128, ...")
    parser.add_argument("--passes", type=int, default=2, help="timing passes (best kept)")
    parser.add_argument("--queries", type=int, default=1, help="query tokens per sequence")
    parser.add_argument("--fa4", action="store_true", help="FA4 beside cuDNN, where installed")
    args = parser.parse_args()
    splits = [int(s) for s in args.splits.split(",") if s]
    for spec in args.rows.split(","):
        batch, keys = (int(x) for x in spec.split(":"))
        row(args.tag, batch, keys, args.head_dim, splits, args)


if __name__ == "__main__":
    main()
