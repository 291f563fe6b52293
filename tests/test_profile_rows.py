"""tools/lab/profile_rows.py's ``--prefill`` rows: each names the benchmark's own prefill shape
(16k tokens, 2048 // head_dim heads), so a profile and a `bench` row describe the same call."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "lab" / "profile_rows.py"
spec = importlib.util.spec_from_file_location("profile_rows", SCRIPT)
profile_rows = importlib.util.module_from_spec(spec)
spec.loader.exec_module(profile_rows)


def test_prefill_rows_are_the_benchmark_shapes_named() -> None:
    rows = profile_rows.prefill_rows("96:8192,128:512:c")
    assert [(r.head_dim, r.seqlen_q, r.seqlen_k, r.causal) for r in rows] == [
        (96, 8192, 8192, False),
        (128, 512, 512, True),
    ]
    # 16k tokens as batch x seqlen, 2048 // head_dim heads (21 of 96), bf16.
    assert [(r.batch, r.heads, r.heads_k, r.dtype) for r in rows] == [
        (2, 21, 21, "bf16"),
        (32, 16, 16, "bf16"),
    ]


@pytest.mark.parametrize("spec", ["96", "96:8192:x", "96:8192:c:c"])
def test_prefill_rows_refuse_what_is_not_hd_seq_or_hd_seq_c(spec: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="HD:SEQ"):
        profile_rows.prefill_rows(spec)
