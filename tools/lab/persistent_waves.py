"""Whether the persistent Hopper kernel loses its last round of work tiles to idle SMs.

    python tools/lab/persistent_waves.py

The benchmark's prefill rows hold 16k tokens, so head_dim 64 at 512 tokens makes 4096 work tiles
of 128 query rows: 31.03 per SM on the H200's 132 SMs, whose last round leaves most SMs idle.
Batch 33 makes 4224 tiles, exactly 32 per SM. If that last round costs a whole round, batch 33
takes as long as batch 32 ("us per tile-round" falls); if not, its time grows with its work
(x 33/32). Same for head_dim 128 (2048 and 2112 tiles). bf16, CUDA events around 30 calls
cycling through 4 input sets, best of 5; each row twice, alternating.
"""

from __future__ import annotations

import torch

import forge_flash

SMS = 132


def best_ms(fn, inputs: list, iters: int = 30, rounds: int = 5) -> float:
    for args in inputs[:2]:
        fn(*args)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(iters):
            fn(*inputs[i % len(inputs)])
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / iters)
    return best


def main() -> None:
    for head_dim, heads in ((64, 32), (128, 16)):
        for causal in (False, True):
            for batch in (32, 33, 32, 33):
                shape = (batch, 512, heads, head_dim)
                inputs = [
                    [torch.randn(shape, device="cuda", dtype=torch.bfloat16) for _ in range(3)]
                    for _ in range(4)
                ]

                def call(q, k, v, causal=causal):
                    return forge_flash.flash_attn_fwd(q, k, v, causal=causal)

                ms = best_ms(call, inputs)
                tiles = batch * heads * 512 // 128
                kind = "causal" if causal else "full  "
                print(
                    f"d{head_dim} s512 {kind} batch {batch}: {ms * 1e3:7.1f} us, {tiles} tiles "
                    f"({tiles / SMS:.2f} per SM), {ms * 1e3 / tiles * SMS:.2f} us per tile-round",
                    flush=True,
                )


if __name__ == "__main__":
    main()
