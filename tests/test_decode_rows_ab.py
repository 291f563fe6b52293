"""tools/lab/decode_rows_ab.py's host side: the float32 reference its rows' error column uses (a
step of several query tokens sees the cache bottom-right aligned). The timed rows need a GPU (the
tool's own runs); tests/test_ab_table.py reads their lines."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

LAB = Path(__file__).resolve().parents[1] / "tools" / "lab"


spec = importlib.util.spec_from_file_location("decode_rows_ab", LAB / "decode_rows_ab.py")
decode_rows_ab = importlib.util.module_from_spec(spec)
spec.loader.exec_module(decode_rows_ab)


def _loop_attention(q, k, v):
    """float64, one (sequence, head, query) at a time: query i of n sees keys 0 .. L - n + i."""
    batch, n, heads, dim = q.shape
    keys, heads_k = k.shape[1], k.shape[2]
    out = torch.zeros(batch, n, heads, dim, dtype=torch.float64)
    for b in range(batch):
        for h in range(heads):
            kv = h // (heads // heads_k)
            for i in range(n):
                seen = keys - n + i + 1
                scores = [
                    sum(q[b, i, h, c].item() * k[b, j, kv, c].item() for c in range(dim))
                    / math.sqrt(dim)
                    for j in range(seen)
                ]
                top = max(scores)
                weights = [math.exp(s - top) for s in scores]
                total = sum(weights)
                for c in range(dim):
                    out[b, i, h, c] = sum(w * v[b, j, kv, c].item() for j, w in enumerate(weights))
                    out[b, i, h, c] /= total
    return out


@pytest.mark.parametrize("queries", [1, 3])
def test_reference_is_gqa_attention_aligned_bottom_right(queries):
    gen = torch.Generator().manual_seed(queries)
    q = torch.randn(2, queries, 4, 8, generator=gen)
    k = torch.randn(2, 6, 2, 8, generator=gen)
    v = torch.randn(2, 6, 2, 8, generator=gen)
    got = decode_rows_ab.reference(q, k, v).double()
    torch.testing.assert_close(got, _loop_attention(q, k, v), rtol=1e-5, atol=1e-5)
