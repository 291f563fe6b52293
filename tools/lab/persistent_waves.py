"""Whether the persistent Hopper kernel loses its last round of work tiles to idle SMs.

    python tools/lab/persistent_waves.py

The benchmark's prefill rows hold 16k tokens, so head_dim 64 at 512 tokens makes 4096 work tiles
of 128 query rows: 31.03 per SM on the H200's 132 SMs, whose last round leaves most SMs idle.
Batch 33 makes 4224 tiles, exactly 32 per SM (the per-SM figures use the GPU's own SM count).
If that last round costs a whole round, batch 33 takes as long as batch 32 ("us per tile-round"
falls); if not, its time grows with its work (x 33/32). Same for head_dim 128 (2048 and 2112
tiles). bf16, prefill_rows_ab.py's timing (30 calls cycling through 4 input sets), best of 5
rounds; each row twice, alternating.
"""

from __future__ import annotations

import torch
from prefill_rows_ab import best_ms  # this directory's A/B timing: best of rounds

import forge_flash


def main() -> None:
    sms = torch.cuda.get_device_properties(0).multi_processor_count
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

                ms = best_ms(call, inputs, rounds=5)
                tiles = batch * heads * 512 // 128
                kind = "causal" if causal else "full  "
                print(
                    f"d{head_dim} s512 {kind} batch {batch}: {ms * 1e3:7.1f} us, {tiles} tiles "
                    f"({tiles / sms:.2f} per SM), {ms * 1e3 / tiles * sms:.2f} us per tile-round",
                    flush=True,
                )


if __name__ == "__main__":
    main()
