"""One call of each contender on the benchmark rows that fall short of a target, for Nsight
Compute, which then reports what bounds each kernel (speed of light, occupancy, warp stalls):

    ncu --clock-control none --profile-from-start off \\
        --section SpeedOfLight --section Occupancy --section WarpStateStats \\
        python tools/lab/profile_rows.py

Rows (benchmark shapes, bf16): decode over 4k keys (32/8 heads of 128), and prefill at head_dim
128 over 16k tokens, not causal; with ``--short``, the short and causal prefill rows furthest
below cuDNN instead (16k tokens in sequences of 512 and 2048, causal, head_dim 64 and 128);
with ``--variants``, forge_flash alone on issue 14's score-variant rows (head_dim 128, 8k tokens,
not causal, or causal with ``--causal``: plain, softcap 50, ALiBi, sinks), to see what each
variant adds; with
``--long-decode``, one-query decode over 32k and 128k keys (where K/V streaming decides); with
``--prefill HD:SEQ[:c],...``, the benchmark's prefill rows named (16k tokens, bf16; ``:c``
causal), e.g. ``--prefill 96:8192`` for the head_dim 96 row where FA4 leads.
Contenders: forge_flash, torch SDPA's flash and cuDNN backends and FA4 where it imports, set up as
``python -m forge_flash bench`` sets them up. Warm-up calls run outside the profiled range
(cudaProfilerStart/Stop), so each profiled kernel is a steady-state call on inputs that are not
in L2. Nsight Compute's source-level sections (SourceCounters, ``--import-source``) need a
plugin compiled with line info: ``FORGE_FLASH_LINEINFO=ON pip install ./python/plugin``.
"""

from __future__ import annotations

import argparse

import torch

import forge_flash as ff
from forge_flash.benchmark import Shape, contenders, make_inputs, prefill_shapes

ROWS = [
    Shape("decode", 1, 32, 8, 1, 4096, 128, False, "bf16"),
    Shape("prefill", 1, 16, 16, 16384, 16384, 128, False, "bf16"),
]
LONG_DECODE_ROWS = [
    Shape("decode", 1, 32, 8, 1, 131072, 128, False, "bf16"),
    Shape("decode", 1, 32, 8, 1, 32768, 128, False, "bf16"),
]
SHORT_ROWS = [
    Shape("prefill", 32, 32, 32, 512, 512, 64, True, "bf16"),
    Shape("prefill", 32, 16, 16, 512, 512, 128, True, "bf16"),
    Shape("prefill", 8, 16, 16, 2048, 2048, 128, True, "bf16"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="the short and causal prefill rows")
    parser.add_argument("--variants", action="store_true", help="issue 14's score-variant rows")
    parser.add_argument("--causal", action="store_true", help="--variants: the causal rows")
    parser.add_argument(
        "--long-decode", action="store_true", help="one-query decode over 32k and 128k keys"
    )
    parser.add_argument(
        "--prefill", type=prefill_rows, help="prefill rows HD:SEQ[:c],... (16k tokens, bf16)"
    )
    args = parser.parse_args()
    device = torch.device("cuda")
    if args.variants:
        profile_variants(args.causal)
        return
    rows = args.prefill or (
        SHORT_ROWS if args.short else LONG_DECODE_ROWS if args.long_decode else ROWS
    )
    for shape in rows:
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


def prefill_rows(spec: str) -> list[Shape]:
    """``HD:SEQ[:c],...``: the benchmark's prefill shape of each (``prefill_shapes``), bf16."""
    rows = []
    for item in spec.split(","):
        parts = item.split(":")
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] != "c"):
            raise argparse.ArgumentTypeError(f"a row is HD:SEQ or HD:SEQ:c; got {item!r}")
        causal = len(parts) == 3
        shapes = prefill_shapes([int(parts[1])], [int(parts[0])], ["bf16"])
        rows += [shape for shape in shapes if shape.causal == causal]
    return rows


def profile_variants(causal: bool) -> None:
    def make(heads: int) -> torch.Tensor:
        return torch.randn(2, 8192, heads, 128, device="cuda", dtype=torch.bfloat16)

    q, k, v = make(16), make(16), make(16)
    options = {
        "plain": {},
        "softcap 50": {"softcap": 50.0},
        "alibi": {"alibi_slopes": torch.rand(16, device="cuda") * 0.1},
        "sinks": {"sinks": torch.randn(16, device="cuda")},
    }
    for name, kwargs in options.items():
        for _ in range(3):
            ff.flash_attn_fwd(q, k, v, causal=causal, **kwargs)
        torch.cuda.synchronize()
        torch.cuda.profiler.start()
        ff.flash_attn_fwd(q, k, v, causal=causal, **kwargs)
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()
        mask = "causal" if causal else "non-causal"
        print(f"profiled forge_flash {name}: hd128 8k {mask}", flush=True)


if __name__ == "__main__":
    main()
