"""Where a paged decode step's extra time goes: GPU time (CUDA-graph replays) of one decode
step over the same keys, reached in different ways:

    python tools/lab/paged_decode_breakdown.py [--rounds 3]

contig          a (batch, keys, 8, 128) cache: the plain decode instance
contig+idx      the same with cache_batch_idx = arange(batch): the IndexedKV instance, strided rows
contig+pad      the same with cache_leftpad = 0: IndexedKV with a start per sequence
perm-N, ident-N pages of N keys through a shuffled / an identity block table: ident-N minus
                contig+idx is what the block table's round trip costs, perm-N minus ident-N
                what scattered pages cost (address translation, DRAM placement)

One new token per sequence, 32 query heads over 8 KV heads of 128, bf16, through
``flash_attn_with_kvcache``. Prints min-max over the rounds, in us, and which kernel each way
ran. Measured on the H200 (docs/benchmarks.md, 2026-12-02): at batch 1 over 4k keys the table's
round trip costs 0.6-0.7 us of 9.9; at batch 64 shuffled pages of 16 cost 3%.
"""

from __future__ import annotations

import argparse

import torch

from forge_flash.benchmark import time_graph
from forge_flash.kvcache import flash_attn_with_kvcache

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
WAYS = ("contig", "contig+idx", "contig+pad", "perm-16", "ident-16", "perm-64", "ident-256",
        "ident-4096")  # fmt: skip
SHAPES = ((1, 4096), (1, 32768), (8, 4096), (64, 4096))


def _step(batch: int, keys: int, way: str):
    dev, dtype = torch.device("cuda"), torch.bfloat16
    q = torch.randn(batch, 1, HEADS, HEAD_DIM, device=dev, dtype=dtype)
    lengths = torch.full((batch,), keys, dtype=torch.int32, device=dev)
    extra = {}
    if way.startswith("contig"):
        k = torch.randn(batch, keys, KV_HEADS, HEAD_DIM, device=dev, dtype=dtype)
        if way == "contig+idx":
            extra["cache_batch_idx"] = torch.arange(batch, device=dev, dtype=torch.int32)
        if way == "contig+pad":
            extra["cache_leftpad"] = torch.zeros(batch, device=dev, dtype=torch.int32)
    else:
        order, page = way.split("-")
        blocks = -(-keys // int(page))
        ids = torch.randperm if order == "perm" else torch.arange
        extra["block_table"] = ids(batch * blocks, device=dev).to(torch.int32).view(batch, blocks)
        k = torch.randn(batch * blocks, int(page), KV_HEADS, HEAD_DIM, device=dev, dtype=dtype)
    v = torch.randn_like(k)
    return lambda _: flash_attn_with_kvcache(q, k, v, cache_seqlens=lengths, **extra)


def _kernel_name(step) -> str:
    step(0)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        step(0)
        torch.cuda.synchronize()
    names = [e.key for e in prof.key_averages() if "decode_kernel" in e.key]
    return names[0].split("(")[0] if names else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[tuple[int, int, str], list[float]] = {}
    for _ in range(args.rounds):
        for batch, keys in SHAPES:
            for way in WAYS:
                if way == "ident-4096" and keys % 4096:
                    continue
                seconds = time_graph(_step(batch, keys, way), torch.device("cuda"), copies=4)
                times.setdefault((batch, keys, way), []).append(seconds * 1e6)
            torch.cuda.empty_cache()
    print(f"{'batch':>5} {'keys':>6} " + " ".join(f"{way:>14}" for way in WAYS))
    for batch, keys in SHAPES:
        cells = [times.get((batch, keys, way)) for way in WAYS]
        shown = [f"{min(c):6.2f}-{max(c):5.2f}" if c else "-" for c in cells]
        print(f"{batch:>5} {keys:>6} " + " ".join(f"{s:>14}" for s in shown))
    for way in WAYS:
        print(f"{way}: {_kernel_name(_step(1, 4096, way))}")


if __name__ == "__main__":
    main()
