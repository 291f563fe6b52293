"""Time of ``batched_decode_attention`` (one new token for each of b sequences of L cached
keys; 32 query heads over 8 KV heads of 128, bf16) for the batch sizes an inference engine
decodes with:

    FORGE_FLASH_CHECK_DEVICE_VALUES=0 python tools/lab/bench_batched_decode.py [TAG]
    python tools/lab/bench_batched_decode.py TAG --cpu

On the GPU: replayed from a CUDA graph (GPU time). With ``--cpu``: eager calls on the CPU (the
naive path), median wall time, fewer shapes. Prints ``TAG bB LL <us> us <GB/s> GB/s`` per
shape (K/V bytes read over that time). Caches are rotated over enough copies that they do not
stay in the last-level cache, as in ``python -m forge_flash bench``.
"""

from __future__ import annotations

import math
import sys

import torch

import forge_flash
from forge_flash.benchmark import time_call, time_graph

BATCHES = (1, 2, 4, 8, 16, 32)
CACHE_LENS = (1024, 4096, 16384)
HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
ROTATION_BYTES = 128 * 2**20


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--cpu"]
    tag = args[0] if args else "forge_flash"
    cpu = "--cpu" in sys.argv[1:]
    device = torch.device("cpu" if cpu else "cuda")
    torch.manual_seed(0)
    for b in BATCHES[:4] if cpu else BATCHES:
        for cache_len in CACHE_LENS[:2] if cpu else CACHE_LENS:
            kv_bytes = 2 * b * cache_len * KV_HEADS * HEAD_DIM * 2
            copies = max(1, min(8, math.ceil(ROTATION_BYTES / kv_bytes)))
            q = torch.randn(b, HEADS, HEAD_DIM, device=device, dtype=torch.bfloat16)
            caches = [
                tuple(
                    torch.randn(
                        b, cache_len, KV_HEADS, HEAD_DIM, device=device, dtype=torch.bfloat16
                    )
                    for _ in range(2)
                )
                for _ in range(copies)
            ]
            lens = torch.full((b,), cache_len, dtype=torch.int32, device=device)

            def step(i: int, q=q, caches=caches, lens=lens) -> torch.Tensor:
                k_cache, v_cache = caches[i % len(caches)]
                return forge_flash.batched_decode_attention(q, k_cache, v_cache, lens)

            if cpu:
                seconds = time_call(step, device, budget_s=1.0)
            else:
                seconds = time_graph(step, device, copies=copies)
            gbps = kv_bytes / seconds / 1e9
            print(f"{tag} b{b} L{cache_len} {seconds * 1e6:.1f} us {gbps:.1f} GB/s", flush=True)
            del caches
            if not cpu:
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
