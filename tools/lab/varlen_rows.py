"""Varlen prefill beside the same sequences padded and beside equal lengths, and GQA beside MHA:
issue 13's "varlen and GQA keep their speed", measured in one process:

    python tools/lab/varlen_rows.py TAG            # bf16, head_dim 64 and 128, causal and not
    python tools/lab/varlen_rows.py TAG --fp16     # float16 rows too
    python tools/lab/varlen_rows.py TAG --head-dims 96,192,256   # other head dims, no GQA rows
    python tools/lab/varlen_rows.py TAG --short-draws 5:4096,21:8192  # more draws within 1024

A varlen row packs one fixed draw of mixed lengths (`mixed_lengths`: 64 to 4096 tokens, 16k in
all, as an engine's prefill batch; and a draw of 64 to 1024, where the keys of every sequence
fit the persistent kernel's short-K/V launch; `--short-draws` adds more of those, SEED:TOKENS
each, such as batches of fewer (sequence, head) pairs than the GPU has SMs, where
tools/lab/varlen_schedule_model.py finds the ways of dealing work tiles differ most) into one
`flash_attn_varlen_fwd` call, 2048 // head_dim heads, timed (`ours`) without the call's
read-back of cu_seqlens (as under FORGE_FLASH_CHECK_DEVICE_VALUES=0), which synchronises the
host with the GPU on every call.
Beside it, in TFLOP/s of the useful work (each sequence's own attention; causal halved):
- `synced`: the same call with its default checks, read-back included (what a caller who keeps
  them pays; the calls cannot queue up behind each other);
- `padded`: the same sequences as one dense call padded to the longest, the work an engine
  without varlen does (its padding is extra work, so this is the time varlen saves);
- `dense`: a dense call of as many sequences of the mean length, the same tokens in equal
  lengths: the speed varlen should keep (`ratio` = ours / dense);
- `fa4`: FA4's `flash_attn_varlen_func` on the same packed call, where flash_attn.cute imports.
A GQA row is a dense call whose query heads share KV heads (Llama-3-8B's 32 over 8 at head_dim
128; gpt-oss's 64 over 8 at 64) beside the same call with one KV head per query head (`mha`).

Timing: tools/lab/prefill_rows_ab.py's best_ms (CUDA events around back-to-back calls over 4
input copies, best of 3); with `--graph` the varlen rows' `ours` comes from graph_ms instead
(the same calls replayed from a CUDA graph: the GPU's time without the host's part of each
call; the row's name ends in "graph"). The last column: the largest error of the varlen
output's first sequence against float32 SDPA math (two heads), a guard against timing a wrong
kernel.
"""

from __future__ import annotations

import argparse
import random

import torch
from prefill_rows_ab import best_ms, graph_ms  # tools/lab, beside it

import forge_flash
from forge_flash.benchmark import DTYPES
from forge_flash.validation import device_value_checks_off

TOTAL_TOKENS = 16384


def mixed_lengths(
    total: int = TOTAL_TOKENS, low: int = 64, high: int = 4096, seed: int = 13
) -> list[int]:
    """A fixed draw of sequence lengths, log-uniform in [low, high], summing to ``total`` (the
    last one trimmed): the same draw on every machine and run."""
    draw = random.Random(seed)
    lengths: list[int] = []
    while sum(lengths) < total:
        lengths.append(round(low * (high / low) ** draw.random()))
    lengths[-1] -= sum(lengths) - total
    if lengths[-1] < low and len(lengths) > 1:  # a trimmed remnant joins the one before it
        remnant = lengths.pop()
        lengths[-1] += remnant
    return lengths


def attention_flops(lengths: list[int], heads: int, head_dim: int, causal: bool) -> float:
    """The useful work of sequences attending each to itself: 4 L^2 h d each, halved causal."""
    flops = sum(4.0 * n * n * heads * head_dim for n in lengths)
    return flops / 2 if causal else flops


def cu_seqlens(lengths: list[int], device: str) -> torch.Tensor:
    offsets = [0]
    for n in lengths:
        offsets.append(offsets[-1] + n)
    return torch.tensor(offsets, dtype=torch.int32, device=device)


def fa4_varlen():
    try:
        from flash_attn.cute import flash_attn_varlen_func
    except ImportError:
        return None
    return flash_attn_varlen_func


def input_copies(q_shape: tuple, kv_shape: tuple, dtype: torch.dtype) -> list:
    """Four copies of (q, k, v), so that K/V do not all sit in L2 between calls."""

    def make(shape: tuple) -> torch.Tensor:
        return torch.randn(shape, device="cuda", dtype=dtype)

    return [[make(q_shape), make(kv_shape), make(kv_shape)] for _ in range(4)]


def dense_ms(
    batch: int, seqlen: int, heads: int, heads_k: int, head_dim: int, dtype, causal
) -> float:
    copies = input_copies(
        (batch, seqlen, heads, head_dim), (batch, seqlen, heads_k, head_dim), dtype
    )
    return best_ms(lambda q, k, v: forge_flash.flash_attn_fwd(q, k, v, causal=causal), copies)


def format_row(
    tag: str, kind: str, shape: str, ours: float, beside: str, ratio: float, err: float | None
) -> str:
    """One printed row: tools/lab/ab_table.py reads the text between the tag and `ours` as the
    row's key and the TFLOP/s after it as its value."""
    guard = "" if err is None else f" err {err:.1e}"
    return f"{tag:5s} {kind:6s} {shape} ours {ours:6.1f} {beside} ratio {ratio:5.3f}{guard}"


def varlen_row(
    tag: str,
    dtype_name: str,
    head_dim: int,
    causal: bool,
    high: int = 4096,
    draw: str = "",
    graph: bool = False,
) -> str:
    """One varlen row: the default draw of lengths up to ``high``, or ``draw`` = SEED:TOKENS;
    with ``graph``, `ours` timed from a CUDA graph (graph_ms: the GPU's time alone)."""
    dtype, heads = DTYPES[dtype_name], 2048 // head_dim
    if draw:
        seed, tokens = (int(x) for x in draw.split(":"))
        lengths = mixed_lengths(total=tokens, high=high, seed=seed)
    else:
        lengths = mixed_lengths(high=high)
    total, longest, count = sum(lengths), max(lengths), len(lengths)
    mean = total // count
    cu = cu_seqlens(lengths, "cuda")
    copies = input_copies((total, heads, head_dim), (total, heads, head_dim), dtype)

    def ours_call(q, k, v):
        return forge_flash.flash_attn_varlen_fwd(q, k, v, cu, cu, longest, longest, causal=causal)

    useful = attention_flops(lengths, heads, head_dim, causal)
    synced = useful / best_ms(ours_call, copies) / 1e9
    with device_value_checks_off():
        ours = useful / (graph_ms if graph else best_ms)(ours_call, copies) / 1e9
    padded = useful / dense_ms(count, longest, heads, heads, head_dim, dtype, causal) / 1e9
    dense_flops = attention_flops([mean] * count, heads, head_dim, causal)
    dense = dense_flops / dense_ms(count, mean, heads, heads, head_dim, dtype, causal) / 1e9
    beside = f"synced {synced:6.1f} padded {padded:6.1f} dense {dense:6.1f}"
    fa4 = fa4_varlen()
    if fa4 is not None:
        limits = {"max_seqlen_q": longest, "max_seqlen_k": longest, "causal": causal}
        try:
            fa4_ms = best_ms(
                lambda q, k, v: fa4(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, **limits), copies
            )
            beside += f" fa4 {useful / fa4_ms / 1e9:6.1f}"
        except Exception as exc:  # a contender that cannot run this call is n/a
            beside += f" fa4 n/a ({type(exc).__name__})"
    # The guard: the first sequence against float32 math, two heads.
    q, k, v = copies[0]
    first = lengths[0]
    few = [t[:first, :2].transpose(0, 1).float() for t in (q, k, v)]
    want = torch.nn.functional.scaled_dot_product_attention(*few, is_causal=causal)
    err = (ours_call(q, k, v)[:first, :2].float() - want.transpose(0, 1)).abs().max().item()
    kind = "causal" if causal else "full  "
    shape = f"{dtype_name} d{head_dim:<3d} {kind} {count} seqs {min(lengths)}-{longest}"
    if draw:
        shape += f" draw {draw}"
    if graph:
        shape += " graph"
    return format_row(tag, "varlen", shape, ours, beside, ours / dense, err)


def gqa_row(tag: str, dtype_name: str, head_dim: int, heads: int, heads_k: int, causal) -> str:
    dtype, batch, seqlen = DTYPES[dtype_name], 4, TOTAL_TOKENS // 4
    flops = attention_flops([seqlen] * batch, heads, head_dim, causal)
    gqa = flops / dense_ms(batch, seqlen, heads, heads_k, head_dim, dtype, causal) / 1e9
    mha = flops / dense_ms(batch, seqlen, heads, heads, head_dim, dtype, causal) / 1e9
    kind = "causal" if causal else "full  "
    shape = f"{dtype_name} d{head_dim:<3d} {kind} {heads}/{heads_k} heads"
    return format_row(tag, "gqa", shape, gqa, f"mha {mha:6.1f}", gqa / mha, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tag", help="the build's name, printed on each row")
    parser.add_argument("--fp16", action="store_true", help="float16 rows too (after bfloat16)")
    parser.add_argument(
        "--head-dims",
        default="64,128",
        help="the varlen rows' head dims, comma-separated; the GQA rows' (64, 128) where listed",
    )
    parser.add_argument(
        "--short-draws",
        default="",
        help="more draws of lengths within 1024, SEED:TOKENS, comma-separated (e.g. 5:4096)",
    )
    parser.add_argument(
        "--short-only",
        action="store_true",
        help="only the draws within 1024 tokens (the persistent launch's)",
    )
    parser.add_argument(
        "--graph",
        action="store_true",
        help="time the varlen rows' `ours` from a CUDA graph: the GPU's time, not the host's",
    )
    args = parser.parse_args()
    head_dims = [int(d) for d in args.head_dims.split(",")]
    draws = [(4096, "")] * (not args.short_only) + [(1024, "")]
    draws += [(1024, d) for d in args.short_draws.split(",") if d]
    for dtype in ["bf16"] + (["fp16"] if args.fp16 else []):
        for high, draw in draws:
            for head_dim in head_dims:
                for causal in (False, True):
                    print(
                        varlen_row(args.tag, dtype, head_dim, causal, high, draw, args.graph),
                        flush=True,
                    )
        for head_dim, heads, heads_k in ((128, 32, 8), (64, 64, 8)):
            if head_dim not in head_dims:
                continue
            for causal in (False, True):
                print(gqa_row(args.tag, dtype, head_dim, heads, heads_k, causal), flush=True)


if __name__ == "__main__":
    main()
