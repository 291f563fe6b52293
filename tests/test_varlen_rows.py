"""tools/lab/varlen_rows.py's host side: the fixed draw of lengths, the useful work of a packed
call, the cumulative offsets, and its rows as tools/lab/ab_table.py reads them."""

from __future__ import annotations

import sys
from pathlib import Path

LAB = Path(__file__).resolve().parents[1] / "tools" / "lab"
sys.path.insert(0, str(LAB))  # varlen_rows imports prefill_rows_ab from beside it
try:
    import ab_table
    import varlen_rows
finally:
    sys.path.remove(str(LAB))


def test_the_draw_is_fixed_and_fills_the_tokens():
    lengths = varlen_rows.mixed_lengths()
    assert lengths == varlen_rows.mixed_lengths()  # the same draw every run
    assert sum(lengths) == varlen_rows.TOTAL_TOKENS
    assert len(lengths) > 4 and len(set(lengths)) > 4  # mixed, not one length
    assert all(64 <= n <= 4096 + 64 for n in lengths)
    for seed in range(50):  # the trim never leaves a sequence below the floor
        drawn = varlen_rows.mixed_lengths(total=3000, low=64, high=1024, seed=seed)
        assert sum(drawn) == 3000 and min(drawn) >= 64


def test_useful_work_counts_each_sequence_alone():
    # brute force: a query-key pair per (query, key) of the same sequence, 4 FLOPs per pair per
    # head_dim element and head (2 for Q K^T, 2 for P V); causal: half, the benchmark's convention
    lengths, heads, head_dim = [3, 5, 1], 2, 8
    pairs = sum(1 for n in lengths for _ in range(n) for _ in range(n))
    assert (
        varlen_rows.attention_flops(lengths, heads, head_dim, False) == 4 * pairs * heads * head_dim
    )
    assert (
        varlen_rows.attention_flops(lengths, heads, head_dim, True) == 2 * pairs * heads * head_dim
    )


def test_cu_seqlens_are_the_running_offsets():
    assert varlen_rows.cu_seqlens([3, 5, 1], "cpu").tolist() == [0, 3, 8, 9]


def test_rows_are_read_by_ab_table():
    shape = "bf16 d128 full   22 seqs 68-2398"
    line = varlen_rows.format_row(
        "M", "varlen", shape, 512.34, "padded  300.0 dense  560.0", 0.915, 1e-3
    )
    # the key is the shape with its runs of spaces folded
    key = "varlen bf16 d128 full 22 seqs 68-2398"
    assert ab_table.parse_row(line) == ab_table.Row("M", key, 512.3, True)
    gqa = varlen_rows.format_row(
        "K", "gqa", "bf16 d64  causal 64/8 heads", 600.0, "mha  610.0", 0.98, None
    )
    assert ab_table.parse_row(gqa) == ab_table.Row(
        "K", "gqa bf16 d64 causal 64/8 heads", 600.0, True
    )
