"""tools/lab/band_rows.py counts the query-key pairs a windowed call sees (its TFLOP/s are work
done, not tiles walked): checked against the mask itself, built key by key."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "lab" / "band_rows.py"
spec = importlib.util.spec_from_file_location("band_rows", SCRIPT)
band_rows = importlib.util.module_from_spec(spec)
spec.loader.exec_module(band_rows)


def visible(seqlen_q: int, seqlen_k: int, left: int, right: int) -> int:
    offset = seqlen_k - seqlen_q
    count = 0
    for i in range(seqlen_q):
        for j in range(seqlen_k):
            if (left < 0 or j >= i + offset - left) and (right < 0 or j <= i + offset + right):
                count += 1
    return count


@pytest.mark.parametrize(
    "seqlen_q, seqlen_k, left, right",
    [
        (37, 37, -1, 0),  # causal
        (37, 37, 5, 0),  # a window, causal
        (20, 50, 7, 3),  # more keys than queries, both edges
        (50, 20, 4, -1),  # more queries: the first rows see nothing
        (16, 16, -1, -1),  # no window
        (9, 30, 100, 100),  # wider than the sequence
    ],
)
def test_pairs_match_the_mask(seqlen_q, seqlen_k, left, right):
    assert band_rows.pairs(seqlen_q, seqlen_k, left, right) == visible(
        seqlen_q, seqlen_k, left, right
    )


def test_pairs_of_the_benchmark_window():
    # 32k causal queries, window 4096: each row sees min(i, 4096) + 1 keys.
    expected = sum(min(i, 4096) + 1 for i in range(32768))
    assert band_rows.pairs(32768, 32768, 4096, 0) == expected
