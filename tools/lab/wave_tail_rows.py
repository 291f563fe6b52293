"""Prefill calls whose grid ends in a partly full round of work tiles, beside cuDNN, for A/B
rounds of builds (each build in its own venv, alternating, as tools/lab/prefill_rows_ab.py):

    python tools/lab/wave_tail_rows.py TAG                      # the default shapes below
    python tools/lab/wave_tail_rows.py TAG 1x2048x28x128,2x4096x10x256

A shape is batch x seqlen x heads x head_dim, non-causal (add `c` for causal: 1x2048x28x128c).
The Hopper kernel's plain launch runs one CTA per SM, so batch * heads * query blocks work
tiles run in rounds of the SM count; the printed `rounds` is that ratio for 128-row query
blocks (192 at head_dim 64, and 96 non-causal). A last round partly full costs a whole one
(the tail split that cut it, and lost to its merge, is in docs/benchmarks.md's "Tried and
lost"). Timing: CUDA events around 20 back-to-back calls over 3 input copies, best of 3; the
last column is the largest error against float32 SDPA math on the first sequence and two
heads, a guard against timing a wrong kernel.
"""

from __future__ import annotations

import argparse
import functools
import math

import torch
from prefill_rows_ab import best_ms  # tools/lab, beside this script
from torch.nn.attention import SDPBackend, sdpa_kernel

import forge_flash

# Real models' prefill calls with few rounds (132 SMs): 28 heads (Qwen2-7B) x 2k tokens is 448
# query blocks, 3.39 rounds; 40 heads (Llama-2-13B) x 4k 9.70; Gemma-2-9B's 16 heads of 256 x
# 2k 1.94; one 8k sequence of 32 heads of 64 10.42 (192-row blocks); 48 heads of 128 x 3k 8.73;
# and the benchmark's 16 heads of 128 x 16k, 15.52.
DEFAULT = "1x2048x28x128,1x4096x40x128,1x2048x16x256,1x8192x32x64,1x3072x48x128,1x16384x16x128"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tag")
    parser.add_argument("shapes", nargs="?", default=DEFAULT)
    parser.add_argument("--fp16", action="store_true")
    args = parser.parse_args()
    dtype = torch.float16 if args.fp16 else torch.bfloat16
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for spec in args.shapes.split(","):
        causal = spec.endswith("c")
        b, s, h, d = (int(x) for x in spec.rstrip("c").split("x"))
        inputs = [
            tuple(torch.randn(b, s, h, d, device="cuda", dtype=dtype) for _ in "qkv")
            for _ in range(3)
        ]
        attention = functools.partial(forge_flash.flash_attn_fwd, causal=causal)
        ours = best_ms(attention, inputs, iters=20)
        t = [tuple(x.transpose(1, 2) for x in qkv) for qkv in inputs]
        sdpa = torch.nn.functional.scaled_dot_product_attention
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            cudnn = best_ms(functools.partial(sdpa, is_causal=causal), t, iters=20)
        q, k, v = inputs[0]
        got = forge_flash.flash_attn_fwd(q[:1, :, :2], k[:1, :, :2], v[:1, :, :2], causal=causal)
        with sdpa_kernel(SDPBackend.MATH):
            ref = sdpa(*(x[:1, :, :2].transpose(1, 2).float() for x in (q, k, v)), is_causal=causal)
        err = (got.float() - ref.transpose(1, 2)).abs().max().item()
        flops = 4 * b * h * s * s * d / (2 if causal else 1)
        block = 192 if d == 64 or (d == 96 and not causal) else 128
        rounds = b * h * math.ceil(s / block) / sms
        print(
            f"{args.tag:4s} {str(dtype)[6:]:8s} {spec:16s} rounds {rounds:6.2f} "
            f"ours {flops / ours / 1e9:6.1f} cudnn {flops / cudnn / 1e9:6.1f} TFLOP/s  "
            f"ours/cudnn {cudnn / ours:.3f}  err {err:.1e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
