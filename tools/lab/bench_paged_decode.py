"""Paged against contiguous KV caches in batched decode (issue 15's speed rows), GPU time from
CUDA-graph replays:

    python tools/lab/bench_paged_decode.py [--batches 1 8 64] [--keys ...] [--json PATH] [--profile]

One new token per sequence, 32 query heads over 8 KV heads of 128, bf16; caches of 4k, 32k and
128k keys per sequence, batch 1, 8 and 64; pages of 1, 16 and 64 keys in a shuffled block table.
``--profile`` times nothing: it runs each step once between cudaProfilerStart/Stop (after
warm-up calls), for ``ncu --profile-from-start off``.
Each row prints the paged step's time over the contiguous one (issue 15's target: within 5%
for pages of 16 and 64, within 30% for pages of 1).
"""

from __future__ import annotations

import argparse
import json

import torch

import forge_flash as ff
from forge_flash.benchmark import time_graph

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128


def _step(batch: int, keys: int, page: int | None):
    dev, dtype = torch.device("cuda"), torch.bfloat16
    q = torch.randn(batch, HEADS, HEAD_DIM, device=dev, dtype=dtype)
    lengths = torch.full((batch,), keys, dtype=torch.int32, device=dev)
    if page is None:
        k = torch.randn(batch, keys, KV_HEADS, HEAD_DIM, device=dev, dtype=dtype)
        v = torch.randn_like(k)
        return lambda i: ff.batched_decode_attention(q, k, v, lengths)
    blocks = -(-keys // page)
    table = torch.randperm(batch * blocks, device=dev).to(torch.int32).view(batch, blocks)
    k = torch.randn(batch * blocks, page, KV_HEADS, HEAD_DIM, device=dev, dtype=dtype)
    v = torch.randn_like(k)
    return lambda i: ff.batched_decode_attention(q, k, v, lengths, block_table=table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--keys", type=int, nargs="+", default=[4096, 32768, 131072])
    parser.add_argument("--pages", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument(
        "--profile", action="store_true", help="one profiled call per step, no timing"
    )
    args = parser.parse_args()
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
