"""Paged against contiguous KV caches in batched decode (issue 15's speed rows), GPU time from
CUDA-graph replays:

    python tools/lab/bench_paged_decode.py [--batches 1 8 64] [--keys ...] [--json PATH] [--profile]
    python tools/lab/bench_paged_decode.py --breakdown [--rounds 3]

One new token per sequence, 32 query heads over 8 KV heads of 128, bf16; caches of 4k, 32k and
128k keys per sequence, batch 1, 8 and 64; pages of 1, 16 and 64 keys in a shuffled block table.
``--profile`` times nothing: it runs each step once between cudaProfilerStart/Stop (after
warm-up calls), for ``ncu --profile-from-start off``.
Each row prints the paged step's time over the contiguous one (issue 15's target: within 5%
for pages of 16 and 64, within 30% for pages of 1).

``--breakdown [--rounds 3]`` times one step over the same keys reached in different ways,
through ``flash_attn_with_kvcache``, min-max over the rounds, and names the kernel each ran:

    contig          a (batch, keys, 8, 128) cache: the plain decode instance
    contig+idx      the same with cache_batch_idx = arange(batch): IndexedKV, strided rows
    contig+pad      the same with cache_leftpad = 0: IndexedKV with a start per sequence
    perm-N, ident-N pages of N keys through a shuffled / an identity block table: ident-N
                    minus contig+idx is what the paged way costs over the strided one in the
                    same kernel, perm-N minus ident-N what scattered pages cost (address
                    translation, DRAM placement)

Measured on the H200 (docs/bench-history/2026-12-02.md): at batch 1 over 4k keys pages of 16-4096
keys cost 0.3-0.6 us of 9.9 on their own instance (PagedKV; 0.5-0.9 on IndexedKV, and not through
the block table's load: with that load issued beside the length's, the gap stayed); at batch 64
ordered pages cost nothing, shuffled pages of 16 3%.
"""

from __future__ import annotations

import argparse
import json

import torch

import forge_flash as ff
from forge_flash.benchmark import time_graph

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128


def _caches(batch: int, keys: int, page: int | None, shuffled: bool = True):
    """K, V and block table (None for a contiguous cache) holding `keys` keys per sequence."""
    dev, dtype = torch.device("cuda"), torch.bfloat16
    if page is None:
        k = torch.randn(batch, keys, KV_HEADS, HEAD_DIM, device=dev, dtype=dtype)
        return k, torch.randn_like(k), None
    blocks = -(-keys // page)
    ids = torch.randperm if shuffled else torch.arange
    table = ids(batch * blocks, device=dev).to(torch.int32).view(batch, blocks)
    k = torch.randn(batch * blocks, page, KV_HEADS, HEAD_DIM, device=dev, dtype=dtype)
    return k, torch.randn_like(k), table


def _lengths(batch: int, keys: int) -> torch.Tensor:
    return torch.full((batch,), keys, dtype=torch.int32, device="cuda")


def _step(batch: int, keys: int, page: int | None):
    q = torch.randn(batch, HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    k, v, table = _caches(batch, keys, page)
    lengths = _lengths(batch, keys)
    return lambda i: ff.batched_decode_attention(q, k, v, lengths, block_table=table)


BREAKDOWN_WAYS = ("contig", "contig+idx", "contig+pad", "perm-16", "ident-16", "perm-64",
                  "ident-256", "ident-4096")  # fmt: skip
BREAKDOWN_SHAPES = ((1, 4096), (1, 32768), (8, 4096), (64, 4096))


def _way_step(batch: int, keys: int, way: str):
    q = torch.randn(batch, 1, HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
    extra = {}
    if way.startswith("contig"):
        k, v, _ = _caches(batch, keys, None)
        if way == "contig+idx":
            extra["cache_batch_idx"] = torch.arange(batch, device="cuda", dtype=torch.int32)
        if way == "contig+pad":
            extra["cache_leftpad"] = torch.zeros(batch, device="cuda", dtype=torch.int32)
    else:
        order, page = way.split("-")
        k, v, extra["block_table"] = _caches(batch, keys, int(page), shuffled=order == "perm")
    lengths = _lengths(batch, keys)
    return lambda i: ff.flash_attn_with_kvcache(q, k, v, cache_seqlens=lengths, **extra)


def _kernel_name(step) -> str:
    step(0)
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        step(0)
        torch.cuda.synchronize()
    names = [e.key for e in prof.key_averages() if "decode_kernel" in e.key]
    return names[0].split("(")[0] if names else "?"


def breakdown(rounds: int) -> None:
    times: dict[tuple[int, int, str], list[float]] = {}
    for _ in range(rounds):
        for batch, keys in BREAKDOWN_SHAPES:
            for way in BREAKDOWN_WAYS:
                if way == "ident-4096" and keys % 4096:
                    continue
                seconds = time_graph(_way_step(batch, keys, way), torch.device("cuda"), copies=4)
                times.setdefault((batch, keys, way), []).append(seconds * 1e6)
            torch.cuda.empty_cache()
    print(f"{'batch':>5} {'keys':>6} " + " ".join(f"{way:>14}" for way in BREAKDOWN_WAYS))
    for batch, keys in BREAKDOWN_SHAPES:
        cells = [times.get((batch, keys, way)) for way in BREAKDOWN_WAYS]
        shown = [f"{min(c):6.2f}-{max(c):5.2f}" if c else "-" for c in cells]
        print(f"{batch:>5} {keys:>6} " + " ".join(f"{s:>14}" for s in shown))
    for way in BREAKDOWN_WAYS:
        print(f"{way}: {_kernel_name(_way_step(1, 4096, way))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--keys", type=int, nargs="+", default=[4096, 32768, 131072])
    parser.add_argument("--pages", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument(
        "--profile", action="store_true", help="one profiled call per step, no timing"
    )
    parser.add_argument(
        "--breakdown", action="store_true", help="the same keys reached different ways"
    )
    parser.add_argument("--rounds", type=int, default=3, help="--breakdown's rounds")
    args = parser.parse_args()
    if args.breakdown:
        breakdown(args.rounds)
        return
    if args.profile:
        for batch in args.batches:
            for keys in args.keys:
                for page in [None, *args.pages]:
                    step = _step(batch, keys, page)
                    for i in range(3):
                        step(i)
                    torch.cuda.synchronize()
                    torch.cuda.profiler.start()
                    step(3)
                    torch.cuda.synchronize()
                    torch.cuda.profiler.stop()
                    print(f"profiled batch {batch} keys {keys} page {page}", flush=True)
                    del step
                    torch.cuda.empty_cache()
        return
    rows = []
    pages = " ".join(f"{f'page {page}':>14}" for page in args.pages)
    print(f"{'batch':>5} {'keys':>7} {'contiguous us':>14} {pages}")
    for batch in args.batches:
        for keys in args.keys:
            base = time_graph(_step(batch, keys, None), torch.device("cuda"), copies=4) * 1e6
            row = {"batch": batch, "keys": keys, "contiguous_us": base}
            shown = []
            for page in args.pages:
                us = time_graph(_step(batch, keys, page), torch.device("cuda"), copies=4) * 1e6
                row[f"page{page}_us"] = us
                shown.append(f"{us:7.1f} ({us / base:4.2f}x)")
            rows.append(row)
            print(f"{batch:>5} {keys:>7} {base:14.1f} " + " ".join(f"{s:>14}" for s in shown))
            torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, handle, indent=1)


if __name__ == "__main__":
    main()
