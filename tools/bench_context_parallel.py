"""Context-parallel prefill on several GPUs against one GPU (issue 16's figure):

    torchrun --nproc-per-node 2 tools/bench_context_parallel.py cp.json [--seqlen 131072]

One causal sequence of 128k tokens, 32 query heads over 8 KV heads of 128, bfloat16, batch 1.
Every rank first runs ``forge_flash.flash_attn_fwd`` on the whole sequence on its own GPU (the
one-GPU time), then ``context_parallel_attention`` on its shard, for each layout. Times are
wall clock per iteration from a barrier to the end of the slowest rank's work (median).

The time hidden by overlap: the same ring run once with no transfers (each step attends to
the K/V shard the rank already holds: the same blocks, shapes and merges) and the transfers
run once alone (the world - 1 ring steps of one K/V shard each, nothing else); hidden =
attention alone + transfers alone - ring. Prints a table on rank 0 and writes JSON to the
path given.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time

import torch
import torch.distributed as dist

import forge_flash
from forge_flash import distributed as cp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json_path")
    parser.add_argument("--seqlen", type=int, default=131072)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--heads-k", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--cpu", action="store_true", help="gloo on the CPU (a smoke test)")
    args = parser.parse_args()

    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast stays off
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if args.cpu:
        device = torch.device("cpu")
        dist.init_process_group("gloo")
    else:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda: None

    torch.manual_seed(0)  # the same whole sequence on every rank
    shape_q = (1, args.seqlen, args.heads, args.head_dim)
    shape_kv = (1, args.seqlen, args.heads_k, args.head_dim)
    q = torch.randn(shape_q, device=device, dtype=torch.bfloat16)
    k = torch.randn(shape_kv, device=device, dtype=torch.bfloat16)
    v = torch.randn(shape_kv, device=device, dtype=torch.bfloat16)
    flops = 4 * args.seqlen * args.seqlen * args.heads * args.head_dim / 2  # causal

    def timed(fn) -> float:
        for _ in range(args.warmup):
            fn()
        times = []
        for _ in range(args.iters):
            synchronize()
            dist.barrier()
            start = time.perf_counter()
            fn()
            synchronize()
            elapsed = torch.tensor([time.perf_counter() - start], device=device)
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # the slowest rank
            times.append(elapsed.item())
        return statistics.median(times)

    whole = forge_flash.flash_attn_fwd(q, k, v, causal=True)
    one_gpu = timed(lambda: forge_flash.flash_attn_fwd(q, k, v, causal=True))
    results = {}
    for layout in ("zigzag", "contiguous"):
        shards = [cp.shard_sequence(x, layout, rank, world).contiguous() for x in (q, k, v)]
        out = cp.context_parallel_attention(*shards, causal=True, layout=layout)
        error = (out.float() - cp.shard_sequence(whole, layout, rank, world).float()).abs().max()
        dist.all_reduce(error, op=dist.ReduceOp.MAX)
        ring = timed(lambda s=shards, lay=layout: cp.context_parallel_attention(
            *s, causal=True, layout=lay))  # fmt: skip
        compute = timed(lambda s=shards, lay=layout: _ring_without_transfers(s, rank, world, lay))
        transfers = timed(lambda s=shards: _transfers_alone(s, rank, world))
        hidden = compute + transfers - ring
        results[layout] = {
            "ring_ms": 1e3 * ring,
            "speedup_vs_one_gpu": one_gpu / ring,
            "tflops_total": flops / ring / 1e12,
            "attention_alone_ms": 1e3 * compute,
            "transfers_alone_ms": 1e3 * transfers,
            "hidden_ms": 1e3 * hidden,
            "hidden_fraction_of_transfers": hidden / transfers if transfers else None,
            "max_abs_diff_vs_one_gpu": error.item(),
        }
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "world": world,
        "torch": torch.__version__,
        "backend": forge_flash.active_backend().name,
        "shape": {
            "batch": 1,
            "seqlen": args.seqlen,
            "heads": args.heads,
            "heads_k": args.heads_k,
            "head_dim": args.head_dim,
            "dtype": "bfloat16",
            "causal": True,
        },
        "one_gpu_ms": 1e3 * one_gpu,
        "one_gpu_tflops": flops / one_gpu / 1e12,
        "layouts": results,
    }
    if rank == 0:
        _print_table(report)
        with open(args.json_path, "w") as f:
            json.dump(report, f, indent=2)
    dist.destroy_process_group()


def _ring_without_transfers(shards, rank: int, world: int, layout: str) -> None:
    q, k, v = shards
    scale = q.shape[-1] ** -0.5
    with torch.no_grad():
        cp._ring_attention(q, k, v, rank, world, True, scale, layout, _NoTransfer())


def _transfers_alone(shards, rank: int, world: int) -> None:
    _, k, v = shards
    exchange = cp._RingExchange(dist, None, rank, world)
    kv = torch.stack((k, v))
    for _ in range(world - 1):
        kv = exchange.start(kv).wait()


class _NoTransfer:
    """An exchange that hands back the shard it was given (the ring's arithmetic alone)."""

    def start(self, kv):
        return self._Held(kv)

    class _Held:
        def __init__(self, kv):
            self._kv = kv

        def wait(self):
            return self._kv


def _print_table(report: dict) -> None:
    shape = report["shape"]
    print(
        f"{report['device']} x{report['world']}, causal prefill of {shape['seqlen']} tokens, "
        f"{shape['heads']}/{shape['heads_k']} heads of {shape['head_dim']}, bf16"
    )
    print(f"one GPU: {report['one_gpu_ms']:.1f} ms ({report['one_gpu_tflops']:.0f} TFLOP/s)")
    print("layout      ring ms  speedup  attention-alone ms  transfers ms  hidden ms  max|diff|")
    for layout, r in report["layouts"].items():
        print(
            f"{layout:<10} {r['ring_ms']:8.1f} {r['speedup_vs_one_gpu']:7.2f}x "
            f"{r['attention_alone_ms']:19.1f} {r['transfers_alone_ms']:13.2f} "
            f"{r['hidden_ms']:10.2f} {r['max_abs_diff_vs_one_gpu']:10.2e}"
        )


if __name__ == "__main__":
    main()
