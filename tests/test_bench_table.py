"""tools/lab/bench_table.py (docs/benchmarks.md's tables from `bench --json`): one table row per
shape, decode rows of one sequence and of a batch apart."""

from __future__ import annotations

import importlib.util
from pathlib import Path

LAB = Path(__file__).resolve().parents[1] / "tools" / "lab"
spec = importlib.util.spec_from_file_location("bench_table", LAB / "bench_table.py")
bench_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_table)


def _row(backend: str, ms: float, batch: int) -> dict:
    return {"kind": "decode", "backend": backend, "dtype": "bf16", "b": batch, "h": 32, "hk": 8,
            "sq": 1, "sk": 4096, "d": 128, "causal": False, "ms": ms, "tflops": 0.1,
            "gbps": 2.0 * batch * 4096 * 8 * 128 * 2 / (ms * 1e6)}  # fmt: skip


def test_decode_rows_of_one_sequence_and_of_a_batch_stay_apart():
    rows = [
        _row("forge_flash", 0.010, 1), _row("sdpa_cudnn", 0.012, 1),
        _row("forge_flash", 0.100, 64), _row("sdpa_cudnn", 0.080, 64),
    ]  # fmt: skip
    lines = bench_table.render(rows).splitlines()
    body = [line for line in lines if line.startswith("| bf16")]
    assert body == [
        "| bf16 b1 kv 4096 | no | 10.0 (1678) | 12.0 (1398) | 1.20x |",
        "| bf16 b64 kv 4096 | no | 100.0 (10737) | 80.0 (13422) | 0.80x |",
    ]
