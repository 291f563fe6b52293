"""Host time of one ``flash_attn_fwd`` prefill call, the GPU idle before each call.

    FORGE_FLASH_CHECK_DEVICE_VALUES=0 python tools/lab/prefill_host_overhead.py TAG

Median of 3000 calls per shape (causal, bf16), once with one set of tensors ("same") and once
alternating between two sets, so that every call sees new addresses ("alternating"): the
second is what the Hopper kernel's TMA map cache (csrc/kernels/tma_maps.cu) must re-address.
Needs the kernels (a GPU and the plugin). TAG labels the printed rows (e.g. the wheel).
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

import forge_flash as ff

SHAPES = ((1, 256, 16, 128), (1, 2048, 16, 128), (4, 64, 8, 64))  # batch, seqlen, heads, head_dim


def main() -> None:
    tag = sys.argv[1] if len(sys.argv) > 1 else ""
    for shape in SHAPES:
        sets = [
            [torch.randn(*shape, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
            for _ in range(2)
        ]
        for mode in ("same", "alternating"):
            for i in range(50):
                ff.flash_attn_fwd(*sets[i % 2], causal=True)
            times = []
            for i in range(3000):
                args = sets[i % 2 if mode == "alternating" else 0]
                torch.cuda.synchronize()
                begin = time.perf_counter()
                ff.flash_attn_fwd(*args, causal=True)
                times.append(time.perf_counter() - begin)
            median = statistics.median(times) * 1e6
            print(f"{tag} {shape} {mode:<11} host us per call: median {median:.2f}", flush=True)


if __name__ == "__main__":
    main()
