"""One call of each contender on the benchmark rows that fall short of a target, for Nsight
Compute, which then reports what bounds each kernel (speed of light, occupancy, warp stalls):

    ncu --clock-control none --profile-from-start off \\
        --section SpeedOfLight --section Occupancy --section WarpStateStats \\
        python tools/lab/profile_rows.py

Rows (benchmark shapes, bf16): decode over 4k keys (32/8 heads of 128), and prefill at head_dim
128 over 16k tokens, not causal; with ``--short``, the short and causal prefill rows furthest
below cuDNN instead (16k tokens in sequences of 512 and 2048, causal, head_dim 64 and 128).
Contenders: forge_flash and torch SDPA's flash and cuDNN backends, set up exactly as
``python -m forge_flash bench`` sets them up. Warm-up calls run outside the profiled range
(cudaProfilerStart/Stop), so each profiled kernel is a steady-state call on inputs that are not
in L2.
"""

from __future__ import annotations

import argparse

import torch

from forge_flash.benchmark import Shape, contenders, make_inputs

ROWS = [
    Shape("decode", 1, 32, 8, 1, 4096, 128, False, "bf16"),
    Shape("prefill", 1, 16, 16, 16384, 16384, 128, False, "bf16"),
]
SHORT_ROWS = [
    Shape("prefill", 32, 32, 32, 512, 512, 64, True, "bf16"),
    Shape("prefill", 32, 16, 16, 512, 512, 128, True, "bf16"),
    Shape("prefill", 8, 16, 16, 2048, 2048, 128, True, "bf16"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="the short and causal prefill rows")
    args = parser.parse_args()
    device = torch.device("cuda")
    for shape in SHORT_ROWS if args.short else ROWS:
        inputs = make_inputs(shape, device)
        for name, contender in contenders(shape, inputs, device).items():
            if contender is None or name == "naive_loop":
                continue
            with contender.context():
                for i in range(3):
                    contender.run(i)
                torch.cuda.synchronize()
                torch.cuda.profiler.start()
                contender.run(3)
                torch.cuda.synchronize()
                torch.cuda.profiler.stop()
            print(f"profiled {name}: {shape.label()}", flush=True)


if __name__ == "__main__":
    main()
