"""How far torch's CPU SDPA strays from the float64 reference when given float16/bfloat16
inputs directly, against computing in float32: the evidence behind the naive path's choice of
dtype per torch version (``forge_flash.backends.naive._sdpa_dtype``).

    python tools/lab/cpu_sdpa_precision.py

200 random shapes per dtype (1-19 query rows, 1-63 keys, head_dim 8-256, scales 1/sqrt(d),
0.5 and 2). Prints the worst error in units of the tests' float16 output tolerance
(``OUT_TOLERANCE``; bfloat16's own is 8x wider in absolute terms).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from helpers.reference import reference_attention
from helpers.tolerance import OUT_TOLERANCE


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    atol, rtol = OUT_TOLERANCE[torch.float16]
    print(f"torch {torch.__version__}")
    for dtype in (torch.float16, torch.bfloat16):
        worst = {"inputs as they are": 0.0, "in float32": 0.0}
        for trial in range(200):
            seqlen_q = int(torch.randint(1, 20, (1,), generator=gen))
            seqlen_k = int(torch.randint(1, 64, (1,), generator=gen))
            head_dim = (8, 16, 64, 128, 256)[trial % 5]
            scale = (None, 2.0, 0.5)[trial % 3]
            q, k, v = (
                torch.randn(2, n, 2, head_dim, generator=gen).to(dtype)
                for n in (seqlen_q, seqlen_k, seqlen_k)
            )
            expected, _ = reference_attention(q, k, v, scale=scale)
            qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
            results = {
                "inputs as they are": F.scaled_dot_product_attention(qt, kt, vt, scale=scale),
                "in float32": F.scaled_dot_product_attention(
                    qt.float(), kt.float(), vt.float(), scale=scale
                ).to(dtype),
            }
            for name, out in results.items():
                error = (out.transpose(1, 2).double() - expected).abs()
                units = (error / (atol + rtol * expected.abs())).max().item()
                worst[name] = max(worst[name], units)
        print(f"{dtype}: worst error / float16 tolerance: " + ", ".join(
            f"{name} {value:.3g}" for name, value in worst.items()
        ))  # fmt: skip


if __name__ == "__main__":
    main()
