"""GPU time of ``batched_decode_attention`` (one new token for each of b sequences of L cached
keys; 32 query heads over 8 KV heads of 128, bf16), replayed from a CUDA graph, for the
batch sizes an inference engine decodes with:

    FORGE_FLASH_CHECK_DEVICE_VALUES=0 python tools/bench_batched_decode.py [TAG]

Prints ``TAG bB LL <us> us <GB/s> GB/s`` per shape (K/V bytes read over GPU time). Caches are
rotated over enough copies that they do not stay in L2, as in ``python -m forge_flash bench``.
"""

from __future__ import annotations

import math
import sys

import torch

import forge_flash
from forge_flash.benchmark import time_graph

BATCHES = (1, 2, 4, 8, 16, 32)
CACHE_LENS = (1024, 4096, 16384)
HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
ROTATION_BYTES = 128 * 2**20


def main() -> None:
    tag = sys.argv[1] if len(sys.argv) > 1 else "forge_flash"
    device = torch.device("cuda")
    torch.manual_seed(0)
    for b in BATCHES:
        for cache_len in CACHE_LENS:
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

            seconds = time_graph(step, device, copies=copies)
            gbps = kv_bytes / seconds / 1e9
            print(f"{tag} b{b} L{cache_len} {seconds * 1e6:.1f} us {gbps:.0f} GB/s")
            del caches
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
