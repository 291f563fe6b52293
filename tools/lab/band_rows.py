"""Where a sliding window's calls lose against plain attention: the same work through different
instances, in TFLOP/s of the pairs each row really sees, in interleaved rounds.

    python tools/lab/band_rows.py TAG             # forge-flash rows (FA4's too where it imports)
    python tools/lab/band_rows.py TAG --rounds 9

Rows (head_dim 128, 16 heads, bf16, one sequence of 32k queries):

* ``causal``: full causal attention (the plain TMA-only instance);
* ``causal as band``: the same call with ``window_size=(32768, 0)``, which the BandSinks instance
  serves: the same tiles and work, so the gap is what that instance costs per K/V tile;
* ``window 4096`` (and ``+ sinks``): the benchmark's window row;
* ``24 tiles``: 4224 keys without a mask, as many K/V tiles of 176 keys per query block as the
  window's band: the gap to ``window 4096`` is the band's two masked tiles and its instance;
* ``8k non-causal``: two sequences of 8k, long rows: the gap to ``24 tiles`` is what a CTA's
  start and end cost when it walks only 24 K/V tiles;
* head_dim 64 with 8 KV heads (gpt-oss-like): causal, and a window of 128 with sinks.

Each round times 10 calls of every row (CUDA events, median), the rows one after the other; a
row's figure is the median over rounds, with the spread of the rounds beside it. The FLOPs are
4 * pairs * heads * head_dim, pairs counted exactly (the band's and the diagonal's edges).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch

import forge_flash as ff


def pairs(seqlen_q: int, seqlen_k: int, left: int, right: int) -> int:
    """Query-key pairs a call sees: query i sees key j iff i + offset - left <= j <= i + offset
    + right (offset = seqlen_k - seqlen_q; -1: unbounded on that side)."""
    offset = seqlen_k - seqlen_q
    rows = torch.arange(seqlen_q, dtype=torch.int64)
    lo = (rows + offset - left).clamp(min=0) if left >= 0 else torch.zeros_like(rows)
    hi = (
        (rows + offset + right).clamp(max=seqlen_k - 1)
        if right >= 0
        else torch.full_like(rows, seqlen_k - 1)
    )
    return int((hi - lo + 1).clamp(min=0).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tag", help="the build's name, printed on each row")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    def make(batch: int, seqlen: int, heads: int = 16, dim: int = 128) -> torch.Tensor:
        return torch.randn(batch, seqlen, heads, dim, device="cuda", dtype=torch.bfloat16)

    q, k, v = make(1, 32768), make(1, 32768), make(1, 32768)
    k24, v24 = make(1, 4224), make(1, 4224)
    q8, k8, v8 = make(2, 8192), make(2, 8192), make(2, 8192)
    gq, gk, gv = make(2, 8192, 64, 64), make(2, 8192, 8, 64), make(2, 8192, 8, 64)
    sinks16, sinks64 = torch.randn(16, device="cuda"), torch.randn(64, device="cuda")
    causal_pairs, band_pairs = pairs(32768, 32768, -1, 0), pairs(32768, 32768, 4096, 0)
    # name: (call, FLOPs)
    rows: dict[str, tuple[Callable[[], object], float]] = {
        "causal": (lambda: ff.flash_attn_fwd(q, k, v, causal=True), causal_pairs * 16 * 512),
        "causal as band": (
            lambda: ff.flash_attn_fwd(q, k, v, causal=True, window_size=(32768, 0)),
            causal_pairs * 16 * 512,
        ),
        "window 4096": (
            lambda: ff.flash_attn_fwd(q, k, v, causal=True, window_size=(4096, 0)),
            band_pairs * 16 * 512,
        ),
        "window 4096 + sinks": (
            lambda: ff.flash_attn_fwd(q, k, v, causal=True, window_size=(4096, 0), sinks=sinks16),
            band_pairs * 16 * 512,
        ),
        "24 tiles": (lambda: ff.flash_attn_fwd(q, k24, v24), 32768 * 4224 * 16 * 512),
        "8k non-causal": (lambda: ff.flash_attn_fwd(q8, k8, v8), 2 * 8192 * 8192 * 16 * 512),
        "d64 gqa causal": (
            lambda: ff.flash_attn_fwd(gq, gk, gv, causal=True),
            2 * pairs(8192, 8192, -1, 0) * 64 * 256,
        ),
        "d64 gqa window 128 + sinks": (
            lambda: ff.flash_attn_fwd(gq, gk, gv, causal=True, window_size=(128, 0), sinks=sinks64),
            2 * pairs(8192, 8192, 128, 0) * 64 * 256,
        ),
    }
    try:
        from flash_attn.cute import flash_attn_func as fa4
    except ImportError:
        fa4 = None
    if fa4 is not None:
        rows["FA4 causal"] = (lambda: fa4(q, k, v, causal=True), causal_pairs * 16 * 512)
        rows["FA4 window 4096"] = (
            lambda: fa4(q, k, v, causal=True, window_size=(4096, 0)),
            band_pairs * 16 * 512,
        )
        rows["FA4 24 tiles"] = (lambda: fa4(q, k24, v24), 32768 * 4224 * 16 * 512)
    for call, _ in rows.values():
        for _ in range(3):
            call()
    torch.cuda.synchronize()
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.rounds):
        for name, (call, _) in rows.items():
            events = [
                (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                for _ in range(10)
            ]
            for begin, end in events:
                begin.record()
                call()
                end.record()
            torch.cuda.synchronize()
            times[name].append(statistics.median(b.elapsed_time(e) for b, e in events))
    for name, (_, flops) in rows.items():
        ms = statistics.median(times[name])
        print(
            f"{args.tag:5s} {name:28s} {ms:8.3f} ms {flops / ms / 1e9:6.0f} TFLOP/s"
            f"  rounds {min(times[name]):.3f}-{max(times[name]):.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
