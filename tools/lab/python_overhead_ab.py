"""Host time of the Python layer alone, for two checkouts on one machine (no GPU needed).

    python tools/lab/python_overhead_ab.py OLD_CHECKOUT NEW_CHECKOUT [--calls 20000]

Each checkout's ``forge_flash`` runs a repeated decode-shaped call (q (1, 32, 128) bf16 over a
256-entry cache of 8 KV heads) through its CUDA adapter aimed at CPU tensors, over a binding
whose calls return at once: what is timed is the path from the public call to the binding, the
part of a decode step's host time that the Python layer owns. Interleaved rounds, median of
each. Device-value checks off, as in examples/decode_overhead.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import json, os, statistics, sys, time, types
    os.environ["FORGE_FLASH_CHECK_DEVICE_VALUES"] = "0"
    import torch
    import forge_flash as ff
    from forge_flash import discovery
    from forge_flash.backends.cuda import CudaBackend

    class Bound:
        def __call__(self, *args):
            return 0
        run = __call__

    binding = types.SimpleNamespace(
        cuda_archs=lambda: [80, 90], ptx_archs=lambda: [80],
        FwdCall=lambda *static: Bound(), VarlenFwdCall=lambda *static: Bound(),
        limits=lambda: {"max_head_dim": 256, "head_dim_multiple": 8, "head_dims": [128],
                        "alignment_bytes": 16, "stride_multiple": 8,
                        "dtypes": {"float16": 0, "bfloat16": 1}, "features": []},
    )

    class Cpu(CudaBackend):
        device_type = "cpu"
        def device_reason(self, index):
            return None

    backend = Cpu(types.SimpleNamespace(__version__="0"), binding)
    backend._stream_of = lambda index: 0
    discovery._active = backend
    q = torch.randn(1, 32, 128).bfloat16()
    k = torch.randn(1, 256, 8, 128).bfloat16()
    lengths = torch.full((1,), 256, dtype=torch.int32)
    calls = {
        "batched_decode_attention": lambda: ff.batched_decode_attention(q, k, k, lengths),
        "flash_attn_fwd (seqlen_q 1)": lambda: ff.flash_attn_fwd(q.unsqueeze(1), k, k),
        "multi_head_attention (seqlen_q 1)": lambda: ff.multi_head_attention(
            q.view(1, 1, 4096), k.flatten(2), k.flatten(2), 32, 8, 128),
    }
    n = int(sys.argv[1])
    result = {}
    for name, fn in calls.items():
        for _ in range(200):
            fn()
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        result[name] = statistics.median(samples) * 1e6
    print(json.dumps(result))
    """
)


def run(checkout: str, calls: int) -> dict[str, float]:
    env = {"PYTHONPATH": f"{checkout}/python", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(calls)], env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"{checkout}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--calls", type=int, default=20000)
    # Five: on the 2-core development machine a whole round of one side can run 1.4-1.8x slow
    # (session 89: three rounds read 1.39 and 1.79 on two rows where five, twice, read 0.97-1.01).
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json")
    args = parser.parse_args()
    rounds: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
    for _ in range(args.rounds):  # interleaved, so drifts in the machine's load hit both
        for label, checkout in (("old", args.old), ("new", args.new)):
            for name, us in run(checkout, args.calls).items():
                rounds[label].setdefault(name, []).append(us)
    header = f"{'host us per call (median of rounds)':<40} {'old':>8} {'new':>8} {'new/old':>8}"
    print(f"{header}   rounds' range old | new")
    table = {}
    for name in rounds["old"]:
        old, new = (statistics.median(rounds[x][name]) for x in ("old", "new"))
        spans = {x: (min(rounds[x][name]), max(rounds[x][name])) for x in ("old", "new")}
        table[name] = {"old_us": old, "new_us": new, "old_rounds_us": rounds["old"][name],
                       "new_rounds_us": rounds["new"][name]}  # fmt: skip
        ranges = " | ".join(f"{lo:.2f}-{hi:.2f}" for lo, hi in spans.values())
        print(f"{name:<40} {old:8.2f} {new:8.2f} {new / old:8.2f}   {ranges}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"old": args.old, "new": args.new, "rows": table}, handle, indent=2)


if __name__ == "__main__":
    main()
