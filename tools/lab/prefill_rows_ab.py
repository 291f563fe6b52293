"""Prefill rows of forge-flash beside cuDNN in one process, for quick A/B rounds of kernel builds.

Each build runs this in its own venv, the builds alternating (M A M A ...), so that drift between
rounds shows up as disagreement between a build's two rounds:

    python tools/lab/prefill_rows_ab.py TAG            # head_dim 64, 128 at 512-2048 tokens
    python tools/lab/prefill_rows_ab.py TAG 64:512,64:1024 --fp16
    python tools/lab/prefill_rows_ab.py TAG 64:512 --more-batches 2   # the last round's cost
    python tools/lab/prefill_rows_ab.py TAG 128:1024,128:2048 --batch 1 --heads 8   # one sequence
    python tools/lab/prefill_rows_ab.py TAG 128:512 --batch 1 --heads 8 --graph     # GPU time
    python tools/lab/prefill_rows_ab.py TAG 128:1024 --batch 1 --heads 8 --keys 32768  # a chunk
    python tools/lab/prefill_rows_ab.py TAG 128:768 --batch 1 --heads 8 --graph --softcap 50
    python tools/lab/prefill_rows_ab.py TAG 128:768 --batch 1 --heads 8 --graph --page-size 16

A row is the benchmark's prefill shape and FLOP count (`forge_flash.benchmark.prefill_shapes`:
16k tokens as batch x seqlen, 2048 // head_dim heads, causal and not). Timing: CUDA events
around 30 back-to-back calls cycling through 4 input copies (so that K/V are not all
L2-resident), best of 3: throughput of a stream of calls, where `bench` takes the median of
single calls. Last column:
the largest error of our output against float32 SDPA math on two sequences and heads, a guard
against timing a wrong kernel. `bench` (rotated inputs, all contenders) stays the reference for
published tables; this script is for relative figures of two builds.

`--softcap`, `--window`, `--alibi` and `--sinks` time our call with those variants (issue 14's
options; random ALiBi slopes and sink logits per head), and `--page-size P` times it as chunked
prefill over a paged cache (flash_attn_varlen_fwd with a block table of random block ids); the
cuDNN column stays plain attention over contiguous K/V (cuDNN has none of these), and the error
column then compares against forge-flash's naive path on the dense call.

The script takes the installed pure wheel's `forge_flash.benchmark` and `validation`: an A/B
against an older build pairs that build's plugin wheel with today's pure wheel (session 60).

`--more-batches N` also runs each row with 1..N more sequences. A row's query blocks of 128 rows
(`blocks` per SM on the printed row) run in rounds of one per SM: 16k tokens of head_dim 64 at
512 tokens are 4096 blocks, 31.03 per SM on 132 SMs, so four SMs run a 32nd round alone, and one
more sequence (32.00 per SM) costs no more rounds. Where our TFLOP/s rise with the batch and
cuDNN's stay level, that partial last round is what the row loses.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import forge_flash
from forge_flash import api, discovery, dispatch
from forge_flash.benchmark import DTYPES, Shape, paged_inputs, prefill_shapes, time_graph
from forge_flash.validation import device_value_checks_off


def best_ms(fn, inputs: list, iters: int = 30, rounds: int = 3) -> float:
    for args in inputs[:2]:
        fn(*args)
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for i in range(iters):
            fn(*inputs[i % len(inputs)])
        end.record()
        torch.cuda.synchronize()
        best = min(best, start.elapsed_time(end) / iters)
    return best


def graph_ms(fn, inputs: list, iters: int = 30) -> float:
    """best_ms's calls replayed from one CUDA graph (forge_flash.benchmark.time_graph, `bench
    --graph`'s timer: median of 20 replays): the GPU's time alone, without the host's part of
    each call (validation, planning, the launches). Eager rounds of varlen calls of 2k tokens
    (about 0.1 ms each) differed by up to 1.67x within one build (H100, 2026-12-05), for reasons
    not known; replays tell whether the GPU's part differs. The calls must not synchronise with
    the host (forge-flash: device-value checks off)."""
    seconds = time_graph(
        lambda i: fn(*inputs[i]),
        torch.device("cuda"),
        copies=len(inputs),
        min_calls=iters,
    )
    return seconds * 1e3


def variant_options(args: argparse.Namespace, shape: Shape) -> dict:
    """forge_flash.flash_attn_fwd's variant keywords the command line asked for, for this shape."""
    options: dict = {}
    if args.softcap:
        options["softcap"] = args.softcap
    if args.window:
        options["window_size"] = (args.window, 0 if shape.causal else args.window)
    if args.alibi:
        options["alibi_slopes"] = torch.rand(shape.heads, device="cuda") * 0.1
    if args.sinks:
        options["sinks"] = torch.randn(shape.heads, device="cuda")
    return options


def paged_calls(
    shape: Shape, copies: list, page_size: int, causal: bool, options: dict, num_splits: int = 0
):
    """Our call of each copy's Q/K/V as chunked prefill over a paged cache: Q packed, K and V in
    pages of ``page_size`` keys at random block ids (`bench --paged`'s inputs,
    forge_flash.benchmark.paged_inputs), through flash_attn_varlen_fwd with a block table (the
    call engines make; issue 15). ``num_splits`` > 0: the kernels' split count forced
    (split_varlen_call). Returns the call and its inputs, one per copy."""
    paged = paged_inputs(dataclasses.replace(shape, kind="paged", page_size=page_size), copies)
    if num_splits:
        if options:
            raise ValueError(f"num_splits times plain paged calls only; got {list(options)}")
        forced = split_varlen_call(num_splits)
        return lambda q, k, v: forced(q, k, v, paged, shape, causal), paged.copies

    def call(q, k_cache, v_cache):
        return paged.attend(shape, q, k_cache, v_cache, causal=causal, **options)

    return call, paged.copies


def split_varlen_call(num_splits: int):
    """flash_attn_varlen_fwd's own path (forge_flash.api's check and bind) with the call's split
    count set to ``num_splits`` (AttentionCall.num_splits, which the kernels' plan then keeps:
    1 runs unsplit, n > 1 split in n). The public varlen call has no ``num_splits`` (neither has
    FlashAttention's); this is how a sweep times a paged grid both ways on one build, to place
    split_plan.h's fill threshold (hopper_prefill_unsplit). Lab use of private names: it breaks
    when those change, never silently (the call then raises)."""

    def check(tensors: tuple, static: tuple, window, backend):
        call = api._check_varlen(tensors, static, window, backend)
        return dataclasses.replace(call, num_splits=num_splits)

    def call(q, k_cache, v_cache, paged, shape: Shape, causal: bool):
        tensors = (
            q, k_cache, v_cache, None, paged.cu_seqlens_q, paged.cu_seqlens_k, None,
            paged.table, None, None,
        )  # fmt: skip
        static = ("varlen", shape.seqlen_q, shape.seqlen_k, None, causal, 0.0, False)
        return dispatch.attend(tensors, static, (-1, -1), check, api._bind_varlen, keep=False)

    return call


def row(
    tag: str,
    shape: Shape,
    graph: bool = False,
    options: dict | None = None,
    page_size: int = 0,
    num_splits: int = 0,
) -> str:
    """One row; with ``graph`` both timings from CUDA graphs (graph_ms: the GPU's time alone, for
    calls of tens of microseconds, whose eager rounds differ by up to a fifth). ``options``:
    variant keywords for our call (variant_options); cuDNN's stays plain. ``page_size``: our
    call over a paged cache (paged_calls)."""
    options = options or {}
    dtype, causal = DTYPES[shape.dtype], shape.causal
    q_size = (shape.batch, shape.seqlen_q, shape.heads, shape.head_dim)
    kv_size = (shape.batch, shape.seqlen_k, shape.heads_k, shape.head_dim)
    sizes = (q_size, kv_size, kv_size)
    copies = [[torch.randn(size, device="cuda", dtype=dtype) for size in sizes] for _ in range(4)]
    timer = graph_ms if graph else best_ms

    def call(q, k, v):
        return forge_flash.flash_attn_fwd(q, k, v, causal=causal, **options)

    ours_call, ours_inputs = (
        paged_calls(shape, copies, page_size, causal, options, num_splits)
        if page_size
        else (call, copies)
    )
    with device_value_checks_off():  # a paged call's would read cu_seqlens back
        ours = timer(ours_call, ours_inputs)
    transposed = [[t.transpose(1, 2) for t in c] for c in copies]
    sdpa = torch.nn.functional.scaled_dot_product_attention
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        cudnn = timer(lambda q, k, v: sdpa(q, k, v, is_causal=causal), transposed)
    q, k, v = copies[0]
    got = ours_call(*ours_inputs[0]).view(q.shape)[:2, :, :2].float()
    if options or page_size:  # against the naive path's dense call on the same values
        with discovery.forced_backend("naive"):
            ref = call(q, k, v)[:2, :, :2]
    else:
        few = [t[:2, :, :2].transpose(1, 2).float() for t in (q, k, v)]
        ref = sdpa(*few, is_causal=causal).transpose(1, 2)
    err = (got - ref.float()).abs().max().item()
    named = {"window_size": "window", "alibi_slopes": "alibi"}
    variants = "".join(f" {named.get(key, key)}" for key in options)
    variants += f" pages of {page_size}" if page_size else ""
    kind = ("causal" if causal else "full  ") + variants + (" graph" if graph else "")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    blocks = shape.batch * shape.heads * -(-shape.seqlen_q // 128) / sms
    keys = f" k{shape.seqlen_k}" if shape.seqlen_k != shape.seqlen_q else ""
    return (
        f"{tag:5s} {str(dtype)[6:]:8s} d{shape.head_dim:<3d} s{shape.seqlen_q:<5d}{keys} "
        f"b{shape.batch:<3d} blocks {blocks:5.2f}/SM {kind} ours "
        f"{shape.flops / ours / 1e9:6.1f} cudnn {shape.flops / cudnn / 1e9:6.1f} "
        f"ratio {cudnn / ours:5.3f} err {err:.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tag", help="the build's name, printed on each row")
    default_rows = "64:512,64:1024,64:2048,128:512,128:1024,128:2048"
    parser.add_argument("rows", nargs="?", default=default_rows, help="head_dim:seqlen,...")
    parser.add_argument("--fp16", action="store_true", help="float16 rows too (after bfloat16)")
    parser.add_argument("--more-batches", type=int, default=0, metavar="N",
                        help="each row again with 1..N more sequences")  # fmt: skip
    parser.add_argument(
        "--batch", type=int, default=0, help="sequences per row (default 16k tokens)"
    )
    parser.add_argument(
        "--heads", type=int, default=0, help="heads per row (default 2048 // head_dim)"
    )
    parser.add_argument(
        "--graph", action="store_true", help="time from CUDA graphs: the GPU's time, not the host's"
    )
    parser.add_argument(
        "--keys",
        type=int,
        default=0,
        help="keys per sequence (default seqlen): queries against a longer K/V, as a chunk of a "
        "prompt against its cache; non-causal rows only (SDPA's causal mask is top-left there)",
    )
    parser.add_argument("--softcap", type=float, default=0.0, help="our call with this softcap")
    parser.add_argument(
        "--window", type=int, default=0, help="our call with a window of this many keys a side"
    )
    parser.add_argument("--alibi", action="store_true", help="our call with random ALiBi slopes")
    parser.add_argument("--sinks", action="store_true", help="our call with random sink logits")
    parser.add_argument(
        "--page-size", type=int, default=0, help="our call over a paged cache of this page size"
    )
    parser.add_argument(
        "--num-splits",
        type=int,
        default=0,
        help="with --page-size: the kernels' split count forced (1: unsplit), to time a paged "
        "grid split and unsplit on one build (not printed on the row: name it in the tag, so "
        "that ab_table.py lines the two up)",
    )
    args = parser.parse_args()
    if args.num_splits and not args.page_size:
        parser.error("--num-splits needs --page-size")
    if args.num_splits and (args.softcap or args.window or args.alibi or args.sinks):
        parser.error("--num-splits times plain paged calls only (no variant options)")
    dtypes = ["bf16"] + (["fp16"] if args.fp16 else [])
    for dtype in dtypes:
        for spec in args.rows.split(","):
            head_dim, seqlen = (int(x) for x in spec.split(":"))
            for shape in prefill_shapes([seqlen], [head_dim], [dtype]):
                if args.batch:
                    shape = dataclasses.replace(shape, batch=args.batch)
                if args.heads:
                    shape = dataclasses.replace(shape, heads=args.heads, heads_k=args.heads)
                if args.keys:
                    if shape.causal:
                        continue
                    shape = dataclasses.replace(shape, seqlen_k=args.keys)
                for more in range(args.more_batches + 1):
                    grown = dataclasses.replace(shape, batch=shape.batch + more)
                    options = variant_options(args, grown)
                    print(
                        row(args.tag, grown, args.graph, options, args.page_size, args.num_splits),
                        flush=True,
                    )


if __name__ == "__main__":
    main()
