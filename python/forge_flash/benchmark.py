"""``python -m forge_flash bench``: forge-flash beside torch's attention on the anchor shapes.

For each shape: our time and throughput next to torch SDPA's flash and cuDNN backends, FA4
(``flash_attn.cute``, where it is installed) and a naive per-head Python loop on the GPU (SDPA's
default and math backends on the CPU), with speed-up ratios (their time / ours). Prefill rows
report TFLOP/s (4 * b * h * sq * sk * d, halved for causal with sq == sk); decode rows report
microseconds and GB/s of K/V read (2 * b * sk * hk * d * element size). The summary also gives
forge_flash against the faster of cuDNN and FA4 on each row (the project's target metric).
``--full`` decodes one sequence (kind ``decode`` in the summary) and batches of equal-length
sequences, as an engine's decode step (``batched``: BATCHED_DECODE's rows).

``--paged P`` adds each prefill row again as chunked prefill over a paged cache of P keys a page
(kind ``paged``), the call engines with a block table make: ours through
``flash_attn_varlen_fwd(..., block_table=)``, FA4 through its varlen call's ``page_table``, both
at random block ids; SDPA's backends and the loop run the same attention unpaged, so the ratio
to them is what paging costs beside the best dense call. Our paged call is timed without the
host's read-back of ``cu_seqlens`` (``validation.device_value_checks_off``), as an engine runs it.

Timing: CUDA events around each call (wall clock on the CPU), warm-up first, the median of
many repeats, fresh random inputs rotated over enough copies that K/V do not stay in L2.
Back-to-back eager calls include the host's launch overhead wherever it exceeds the GPU time
(small decode calls); ``--graph`` replays the calls from a CUDA graph to time the GPU alone.
``--passes N`` measures every shape in N passes over the shapes and reports each row's median
time, with the target metric of every pass beside it, and last the target metric's geomean of
each pass alone: the passes' spread is how far one run's figure can drift (up to 5% a row on
unchanged kernels between runs on the H200, 2026-12-04; 1% in the prefill geomean, 12-06).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.metadata
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from ._version import __version__
from .api import flash_attn_fwd, flash_attn_varlen_fwd
from .discovery import active_backend
from .validation import device_value_checks_off

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_ROTATION_BYTES = 128 * 2**20  # twice the H100's 50 MB L2
# Calls per CUDA-graph replay in `bench --graph`, at least (time_graph's min_calls). A replay's
# own start on the GPU (between the event before it and its first kernel) is paid once per
# replay; with one call per replay, as the input sets of 128 MB and more had (decode over
# 32k-128k keys), it was in that call's figure, for every contender alike.
MIN_GRAPH_CALLS = 4

# `--full`'s batched decode rows, (sequences, keys each): a step over a full GPU's worth of
# sequences at 4k and 16k keys, and a batch of 16, whose 128 (sequence, KV head) pairs fill
# fewer CTAs than the H200 has SMs.
BATCHED_DECODE = ((16, 4096), (64, 4096), (64, 16384), (128, 4096))

# The anchor shapes' prefill sequence lengths per head_dim (16k tokens, hidden 2048).
ANCHOR_SEQLENS = {
    64: [512, 1024, 2048, 4096, 8192, 16384],
    96: [1024, 4096, 8192],
    128: [512, 1024, 2048, 4096, 8192, 16384],
    256: [1024, 4096, 8192],
}
#: The rivals of the target metric: forge_flash against the faster of these on each row.
TARGET_RIVALS = ("sdpa_cudnn", "fa4")


@dataclass(frozen=True)
class Shape:
    kind: str  # "prefill", "decode", or "paged" (prefill over a paged cache)
    batch: int
    heads: int
    heads_k: int
    seqlen_q: int
    seqlen_k: int
    head_dim: int
    causal: bool
    dtype: str  # a key of DTYPES
    page_size: int = 0  # keys per page of a "paged" shape's cache

    @property
    def flops(self) -> float:
        flops = 4.0 * self.batch * self.heads * self.seqlen_q * self.seqlen_k * self.head_dim
        return flops / 2 if self.causal and self.seqlen_q == self.seqlen_k else flops

    @property
    def kv_bytes(self) -> int:
        element = torch.empty((), dtype=DTYPES[self.dtype]).element_size()
        return 2 * self.batch * self.seqlen_k * self.heads_k * self.head_dim * element

    def label(self) -> str:
        if self.kind == "decode":
            return (
                f"decode  {self.dtype} b={self.batch} kv={self.seqlen_k} "
                f"h={self.heads}/{self.heads_k} d={self.head_dim}"
            )
        kind = f"paged p={self.page_size}" if self.kind == "paged" else "prefill"
        return (
            f"{kind} {self.dtype} b={self.batch} s={self.seqlen_q} h={self.heads} "
            f"d={self.head_dim}{' causal' if self.causal else ''}"
        )


@dataclass(frozen=True)
class Row:
    """One measurement, in the field layout of docs' anchor tables."""

    kind: str
    backend: str
    dtype: str
    b: int
    h: int
    hk: int
    sq: int
    sk: int
    d: int
    causal: bool
    ms: float | None
    tflops: float | None
    gbps: float | None
    page_size: int = 0


def prefill_shapes(
    seqlens: list[int],
    head_dims: list[int],
    dtypes: list[str],
    *,
    tokens: int = 16384,
    hidden: int = 2048,
) -> list[Shape]:
    """batch * seqlen = tokens, heads = hidden // head_dim (96: 21 heads), causal and not."""
    return [
        Shape("prefill", max(1, tokens // s), hidden // d, hidden // d, s, s, d, causal, dtype)
        for dtype in dtypes
        for d in head_dims
        for s in seqlens
        for causal in (False, True)
    ]


def decode_shapes(kv_lens: list[int], dtypes: list[str], batch: int = 1) -> list[Shape]:
    """One query per sequence, 32 query heads over 8 KV heads of 128, ``batch`` sequences."""
    return [
        Shape("decode", batch, 32, 8, 1, n, 128, False, dtype) for dtype in dtypes for n in kv_lens
    ]


def select_shapes(args: argparse.Namespace, device: torch.device) -> list[Shape]:
    dtypes = list(DTYPES) if args.dtype == "both" else [args.dtype]
    if args.full:  # every anchor shape, on any device
        head_dims = [args.hdim] if args.hdim else list(ANCHOR_SEQLENS)
        prefill = [
            shape
            for dtype in dtypes
            for d in head_dims
            for shape in prefill_shapes(ANCHOR_SEQLENS[d], [d], [dtype])
        ]
        decode = decode_shapes([4096, 8192, 16384, 32768, 65536, 131072], dtypes)
        decode += [s for b, n in BATCHED_DECODE for s in decode_shapes([n], dtypes, b)]
    else:
        if args.dtype == "both":
            dtypes = ["bf16"]
        if device.type == "cuda":
            head_dims = [args.hdim or 128]
            prefill = prefill_shapes([1024, 4096], head_dims, dtypes)
            decode = decode_shapes([4096, 32768], dtypes)
        else:
            # The CPU does roughly 1000x less: scaled-down shapes keep the run to seconds.
            head_dims = [args.hdim or 64]
            prefill = prefill_shapes([256, 1024], head_dims, dtypes, tokens=1024, hidden=1024)
            decode = decode_shapes([4096, 16384], dtypes)
    paged = [replace(s, kind="paged", page_size=args.paged) for s in prefill] if args.paged else []
    return ([] if args.decode_only else prefill + paged) + ([] if args.prefill_only else decode)


# -- the contenders ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    """A call to time, and the context it runs in (entered once, outside the timed calls)."""

    run: Callable[[int], object]
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


@dataclass
class PagedInputs:
    """A paged shape's copies as chunked prefill over a paged cache: q packed (b * s, h, d), K
    and V in (blocks, page, hk, d) caches whose pages sit at the block ids of one random table
    (b, pages per sequence), int32; the sequences' query and key offsets, and key counts."""

    copies: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    table: torch.Tensor
    cu_seqlens_q: torch.Tensor
    cu_seqlens_k: torch.Tensor
    seqused_k: torch.Tensor

    def attend(
        self,
        shape: Shape,
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        *,
        causal: bool,
        **options: object,
    ) -> object:
        """Our call over one copy, as an engine makes it (chunked prefill: flash_attn_varlen_fwd
        with the block table); ``options``: its other keywords (variants, return_lse)."""
        return flash_attn_varlen_fwd(
            q, k_cache, v_cache, self.cu_seqlens_q, self.cu_seqlens_k, shape.seqlen_q,
            shape.seqlen_k, causal=causal, block_table=self.table, **options,
        )  # fmt: skip


@dataclass
class Inputs:
    """Rotating copies of q/k/v in both layouts: ours (b, s, h, d) and SDPA's (b, h, s, d); for
    a paged shape also the same values over a paged cache."""

    ours: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    sdpa: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    paged: PagedInputs | None = None


def paged_inputs(
    shape: Shape, ours: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
) -> PagedInputs:
    """``ours`` over a paged cache of shape.page_size keys a page (the last page zero-padded)."""
    batch, page = shape.batch, shape.page_size
    per_seq = -(-shape.seqlen_k // page)
    device = ours[0][0].device
    table = torch.randperm(batch * per_seq, device=device).to(torch.int32).view(batch, per_seq)

    def cache_of(x: torch.Tensor) -> torch.Tensor:
        padded = x.new_zeros(batch, per_seq * page, *x.shape[2:])
        padded[:, : shape.seqlen_k] = x
        cache = torch.empty_like(padded).view(batch * per_seq, page, *x.shape[2:])
        cache[table.flatten().long()] = padded.view(batch * per_seq, page, *x.shape[2:])
        return cache

    steps = torch.arange(batch + 1, device=device, dtype=torch.int32)
    return PagedInputs(
        copies=[(q.flatten(0, 1), cache_of(k), cache_of(v)) for q, k, v in ours],
        table=table,
        cu_seqlens_q=steps * shape.seqlen_q,
        cu_seqlens_k=steps * shape.seqlen_k,
        seqused_k=torch.full((batch,), shape.seqlen_k, device=device, dtype=torch.int32),
    )


def make_inputs(shape: Shape, device: torch.device) -> Inputs:
    dtype = DTYPES[shape.dtype]
    element = torch.empty((), dtype=dtype).element_size()
    set_bytes = (
        element
        * shape.batch
        * shape.head_dim
        * (shape.seqlen_q * shape.heads + 2 * shape.seqlen_k * shape.heads_k)
    )
    copies = 1 if device.type == "cpu" else max(1, min(8, math.ceil(_ROTATION_BYTES / set_bytes)))
    ours, sdpa = [], []
    for _ in range(copies):
        q = torch.randn(shape.batch, shape.seqlen_q, shape.heads, shape.head_dim, device=device)
        k = torch.randn(shape.batch, shape.seqlen_k, shape.heads_k, shape.head_dim, device=device)
        v = torch.randn(shape.batch, shape.seqlen_k, shape.heads_k, shape.head_dim, device=device)
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        ours.append((q, k, v))
        sdpa.append(tuple(t.transpose(1, 2).contiguous() for t in (q, k, v)))
    return Inputs(ours, sdpa, paged_inputs(shape, ours) if shape.kind == "paged" else None)


def _ours(shape: Shape, inputs: Inputs) -> Contender:
    paged = inputs.paged
    if paged is not None:

        def run_paged(i: int) -> object:
            return paged.attend(shape, *paged.copies[i % len(paged.copies)], causal=shape.causal)

        return Contender(run_paged, device_value_checks_off)

    def run(i: int) -> object:
        q, k, v = inputs.ours[i % len(inputs.ours)]
        return flash_attn_fwd(q, k, v, causal=shape.causal)

    return Contender(run)


def _sdpa(shape: Shape, inputs: Inputs, backend: object | None) -> Contender | None:
    """torch SDPA pinned to one backend (None: torch's own choice); None if it cannot run."""
    from torch.nn.attention import sdpa_kernel

    group = shape.heads // shape.heads_k
    causal = shape.causal and shape.seqlen_q == shape.seqlen_k  # top-left == bottom-right here

    def make(expand: bool) -> Callable[[int], object]:
        sets = inputs.sdpa
        if expand and group > 1:
            sets = [
                (q, k.repeat_interleave(group, 1), v.repeat_interleave(group, 1))
                for q, k, v in sets
            ]
        extra = {"enable_gqa": True} if group > 1 and not expand else {}

        def run(i: int) -> object:
            q, k, v = sets[i % len(sets)]
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, **extra)

        return run

    def pinned() -> contextlib.AbstractContextManager:
        return sdpa_kernel(backend) if backend is not None else contextlib.nullcontext()

    # GQA natively where this torch and backend allow it, else with K/V expanded beforehand.
    for expand in (False, True):
        try:
            run = make(expand)
            with pinned():
                run(0)
            return Contender(run, pinned)
        except (RuntimeError, TypeError, NotImplementedError):
            continue
    return None


@functools.cache
def fa4_function(name: str = "flash_attn_func") -> Callable | None:
    """FA4's ``flash_attn.cute.<name>`` (``flash_attn_func``, or ``flash_attn_varlen_func`` for
    paged shapes) where flash-attn-4 is installed, else None.

    A benchmark contender only: forge-flash itself never imports it.
    """
    try:
        from flash_attn import cute
    except ImportError:  # not installed, or an install that cannot load here
        return None
    return getattr(cute, name, None)


def _fa4(shape: Shape, inputs: Inputs, attention: Callable) -> Contender | None:
    """FA4 on our layout (b, s, h, d, GQA natively), or for a paged shape its varlen call over
    the paged cache (``attention`` is then flash_attn_varlen_func); None if it cannot run this
    shape.

    Its first call of a configuration JIT-compiles for seconds: that call happens here,
    untimed, so the timers see only compiled calls.
    """
    paged = inputs.paged

    def run(i: int) -> object:
        if paged is not None:  # flash_attn_varlen_func over the paged cache
            q, k_cache, v_cache = paged.copies[i % len(paged.copies)]
            result = attention(
                q, k_cache, v_cache, cu_seqlens_q=paged.cu_seqlens_q, max_seqlen_q=shape.seqlen_q,
                seqused_k=paged.seqused_k, page_table=paged.table, causal=shape.causal,
            )  # fmt: skip
        else:
            q, k, v = inputs.ours[i % len(inputs.ours)]
            result = attention(q, k, v, causal=shape.causal)
        return result[0] if isinstance(result, tuple) else result  # (out, lse) or out

    try:
        run(0)
    except Exception as exc:  # a third-party library: any failure means "cannot run this"
        print(f"  fa4: cannot run {shape.label().strip()} ({type(exc).__name__}: {exc})")
        return None
    return Contender(run)


def _naive_loop(shape: Shape, inputs: Inputs) -> Contender:
    """The per-head Python loop model code runs without an attention kernel."""
    group = shape.heads // shape.heads_k
    scale = shape.head_dim**-0.5
    compute = torch.float32 if inputs.sdpa[0][0].device.type == "cpu" else None
    mask = None
    if shape.causal:
        offset = shape.seqlen_k - shape.seqlen_q
        q_dev = inputs.sdpa[0][0].device
        rows = torch.arange(shape.seqlen_q, device=q_dev).view(-1, 1)
        mask = torch.arange(shape.seqlen_k, device=q_dev) > rows + offset

    def run(i: int) -> object:
        q, k, v = inputs.sdpa[i % len(inputs.sdpa)]
        if compute is not None:
            q, k, v = q.to(compute), k.to(compute), v.to(compute)
        out = torch.empty_like(q)
        for b in range(shape.batch):
            for h in range(shape.heads):
                scores = (q[b, h] @ k[b, h // group].T) * scale
                if mask is not None:
                    scores = scores.masked_fill(mask, float("-inf"))
                out[b, h] = torch.softmax(scores, dim=-1) @ v[b, h // group]
        return out

    return Contender(run)


def contenders(
    shape: Shape, inputs: Inputs, device: torch.device, skip: frozenset[str] = frozenset()
) -> dict[str, Contender | None]:
    """The contenders for this shape and device, ours first; None where one cannot run.

    Those named in ``skip`` are never set up (setting up FA4 compiles it).
    """
    from torch.nn.attention import SDPBackend

    makers: dict[str, Callable[[], Contender | None]] = {}
    makers["forge_flash"] = lambda: _ours(shape, inputs)
    if device.type == "cuda":
        makers["sdpa_flash"] = lambda: _sdpa(shape, inputs, SDPBackend.FLASH_ATTENTION)
        makers["sdpa_cudnn"] = lambda: _sdpa(shape, inputs, SDPBackend.CUDNN_ATTENTION)
        attention = fa4_function(
            "flash_attn_varlen_func" if shape.kind == "paged" else "flash_attn_func"
        )
        if attention is not None:
            makers["fa4"] = lambda: _fa4(shape, inputs, attention)
    else:
        makers["sdpa"] = lambda: _sdpa(shape, inputs, None)
        makers["sdpa_math"] = lambda: _sdpa(shape, inputs, SDPBackend.MATH)
    makers["naive_loop"] = lambda: _naive_loop(shape, inputs)
    return {name: make() for name, make in makers.items() if name not in skip}


# -- timing -------------------------------------------------------------------------------------


def time_call(
    fn: Callable[[int], object], device: torch.device, *, budget_s: float, max_reps: int = 200
) -> float:
    """Median seconds per call: warm-up, then repeats filling about ``budget_s``."""
    cuda = device.type == "cuda"
    start = time.perf_counter()
    fn(0)
    if cuda:
        torch.cuda.synchronize(device)
    first = time.perf_counter() - start
    warmups = 2 if first < budget_s / 10 else 0
    for i in range(warmups):
        fn(i + 1)
    reps = max(3, min(max_reps, int(budget_s / max(first, 1e-6))))
    samples = []
    if cuda:
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            for _ in range(reps)
        ]
        for i, (begin, end) in enumerate(events):
            begin.record()
            fn(i)
            end.record()
        torch.cuda.synchronize(device)
        samples = [begin.elapsed_time(end) / 1e3 for begin, end in events]
    else:
        for i in range(reps):
            begin = time.perf_counter()
            fn(i)
            samples.append(time.perf_counter() - begin)
    return statistics.median(samples)


def capture_calls(
    fn: Callable[[int], object], device: torch.device, *, copies: int, min_calls: int = 1
) -> tuple[torch.cuda.CUDAGraph, int]:
    """One CUDA graph of ``copies`` calls (fn(0) .. fn(copies - 1), one per input set), or of
    ``min_calls`` cycling through them where that is more, replayed once; and its call count.
    Each set is called once first, outside the capture (plans, allocator, caches)."""
    calls = max(copies, min_calls)
    for i in range(copies):
        fn(i)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            fn(i % copies)
    graph.replay()
    return graph, calls


def time_graph(
    fn: Callable[[int], object], device: torch.device, *, copies: int, min_calls: int = 1
) -> float:
    """Median seconds per call of the calls captured in one CUDA graph and replayed
    (capture_calls): GPU time without the host's launch overhead. Replaying at least
    ``min_calls`` makes a replay's start-up a smaller part of a call's figure. `bench` asks for
    MIN_GRAPH_CALLS: its sets are few only where each is at least _ROTATION_BYTES
    (make_inputs), more than the L2 holds, so a call over the same set again reads it from
    memory again."""
    graph, calls = capture_calls(fn, device, copies=copies, min_calls=min_calls)
    events = [
        (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        for _ in range(20)
    ]
    for begin, end in events:
        begin.record()
        graph.replay()
        end.record()
    torch.cuda.synchronize(device)
    return statistics.median(b.elapsed_time(e) / 1e3 for b, e in events) / calls


def measure(
    shape: Shape,
    device: torch.device,
    *,
    budget_s: float,
    naive_flops_cap: float,
    graph: bool = False,
    skip: frozenset[str] = frozenset(),
) -> list[Row]:
    inputs = make_inputs(shape, device)
    rows = []
    for name, contender in contenders(shape, inputs, device, skip).items():
        seconds = None
        if contender is not None and not (name == "naive_loop" and shape.flops > naive_flops_cap):
            with contender.context():
                if graph and device.type == "cuda" and name != "naive_loop":
                    try:
                        copies, least = len(inputs.ours), MIN_GRAPH_CALLS
                        seconds = time_graph(contender.run, device, copies=copies, min_calls=least)
                    except RuntimeError as exc:  # a backend that cannot be captured: n/a
                        print(f"  {name}: not capturable in a CUDA graph ({exc})")
                else:
                    seconds = time_call(
                        contender.run, device, budget_s=budget_s if name != "naive_loop" else 0
                    )
        rows.append(
            Row(
                shape.kind, name, shape.dtype, shape.batch, shape.heads, shape.heads_k,
                shape.seqlen_q, shape.seqlen_k, shape.head_dim, shape.causal,
                None if seconds is None else seconds * 1e3,
                None if seconds is None else shape.flops / seconds / 1e12,
                None if seconds is None else shape.kv_bytes / seconds / 1e9, shape.page_size,
            )
        )  # fmt: skip
    del inputs
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


# -- reporting ------------------------------------------------------------------------------------


def _figure(row: Row) -> str:
    if row.ms is None:
        return "n/a"
    if row.kind == "decode":
        return f"{row.ms * 1e3:.1f} us {row.gbps:.3g} GB/s"
    return f"{row.tflops:.3g} TFLOP/s"


def target_ratio(rows: list[Row]) -> float | None:
    """forge_flash's speed over the faster of TARGET_RIVALS on one shape's rows (above 1:
    forge_flash is faster), or None when ours or every rival lacks a time."""
    ours = next((r.ms for r in rows if r.backend == "forge_flash"), None)
    rivals = [r.ms for r in rows if r.backend in TARGET_RIVALS and r.ms is not None]
    if not ours or not rivals:
        return None
    return min(rivals) / ours


_TARGET_LABEL = f"max({', '.join(TARGET_RIVALS)})"


def format_shape(shape: Shape, rows: list[Row]) -> str:
    ours = rows[0]
    parts = [f"{ours.backend} {_figure(ours)}"]
    for row in rows[1:]:
        text = f"{row.backend} {_figure(row)}"
        if row.ms is not None and ours.ms:
            text += f" ({row.ms / ours.ms:.2f}x)"
        parts.append(text)
    ratio = target_ratio(rows)
    if ratio is not None:
        parts.append(f"forge_flash / {_TARGET_LABEL} {ratio:.2f}")
    return f"{shape.label():<44} " + " | ".join(parts)


def median_rows(passes: list[list[Row]]) -> list[Row]:
    """Each row's median time over passes of the same shapes and contenders (in the same order),
    its throughput rescaled to that time; None where no pass timed it."""
    merged = []
    for rows in zip(*passes, strict=True):
        timed = [r for r in rows if r.ms is not None]
        if not timed:
            merged.append(rows[0])
            continue
        ms = statistics.median(r.ms for r in timed)
        one = timed[0]
        merged.append(
            replace(
                one,
                ms=ms,
                tflops=None if one.tflops is None else one.tflops * one.ms / ms,
                gbps=None if one.gbps is None else one.gbps * one.ms / ms,
            )
        )
    return merged


def _by_shape(rows: list[Row]) -> dict[tuple, list[Row]]:
    shapes: dict[tuple, list[Row]] = {}
    for row in rows:
        shapes.setdefault(_key(row), []).append(row)
    return shapes


def summary_kind(row: Row) -> str:
    """The summary's group of a row: its kind, with decode over more than one sequence apart
    (``batched``), so that a batch's figures do not move the one-sequence decode geomean."""
    return "batched" if row.kind == "decode" and row.b > 1 else row.kind


def summary(rows: list[Row]) -> str:
    """Speed-up of forge_flash over each contender, and over the faster of TARGET_RIVALS on
    each row: geometric mean, min and max per kind of shape and dtype (the targets are per
    dtype: a geomean over both would let one hide the other)."""
    lines = [
        f"{'speed-up of forge_flash over':<30} {'kind':<8} {'dtype':<5} "
        f"{'geomean':>8} {'min':>8} {'max':>8}"
    ]
    groups: dict[tuple[str, str, str], list[float]] = {}
    for shape_rows in _by_shape(rows).values():
        ours = next((r for r in shape_rows if r.backend == "forge_flash"), None)
        if ours is None or not ours.ms:
            continue
        for row in shape_rows:
            if row.backend != "forge_flash" and row.ms is not None:
                group = (row.backend, summary_kind(row), row.dtype)
                groups.setdefault(group, []).append(row.ms / ours.ms)
    for (kind, dtype), ratios in _target_groups(rows).items():
        groups[(_TARGET_LABEL, kind, dtype)] = ratios
    for (backend, kind, dtype), ratios in sorted(groups.items()):
        lines.append(
            f"{backend:<30} {kind:<8} {dtype:<5} "
            f"{_geomean(ratios):>7.2f}x {min(ratios):>7.2f}x {max(ratios):>7.2f}x"
        )
    return "\n".join(lines)


def pass_summary(passes: list[list[Row]]) -> str:
    """The target metric's geomean in each pass alone, per kind and dtype: how far one pass's
    figure moves from the next (a median's rows hide it; on the H200 one pass of unchanged kernels
    moved the prefill geomean by 1%, session 76)."""
    per_pass = [_target_groups(rows) for rows in passes]
    lines = [f"forge_flash / {_TARGET_LABEL}, geomean of each pass alone"]
    for kind, dtype in sorted(set().union(*per_pass)):
        figures = [g.get((kind, dtype)) for g in per_pass]
        text = " / ".join("n/a" if f is None else f"{_geomean(f):.3f}" for f in figures)
        lines.append(f"{'':<30} {kind:<8} {dtype:<5} {text}")
    return "\n".join(lines)


def _target_groups(rows: list[Row]) -> dict[tuple[str, str], list[float]]:
    """Each shape's target ratio (target_ratio), grouped by the summary's kind and dtype."""
    groups: dict[tuple[str, str], list[float]] = {}
    for shape_rows in _by_shape(rows).values():
        ratio = target_ratio(shape_rows)
        if ratio is not None:
            groups.setdefault((summary_kind(shape_rows[0]), shape_rows[0].dtype), []).append(ratio)
    return groups


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _key(row: Row) -> tuple:
    return (
        row.kind,
        row.dtype,
        row.b,
        row.h,
        row.hk,
        row.sq,
        row.sk,
        row.d,
        row.causal,
        row.page_size,
    )


def environment(device: torch.device) -> dict:
    env = {
        "forge_flash": __version__,
        "backend": active_backend().name,
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cudnn"] = torch.backends.cudnn.version()
        if fa4_function() is not None:
            env["fa4"] = _distribution_version("flash-attn-4")
    else:
        env["threads"] = torch.get_num_threads()
    return env


def _distribution_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def build_parser(prog: str = "python -m forge_flash bench") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a few shapes (the default)")
    size.add_argument("--full", action="store_true", help="every anchor shape (minutes on a GPU)")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--prefill", dest="prefill_only", action="store_true", help="prefill only")
    kind.add_argument("--decode", dest="decode_only", action="store_true", help="decode only")
    parser.add_argument("--dtype", choices=[*DTYPES, "both"], default="both")
    parser.add_argument(
        "--hdim", type=int, choices=list(ANCHOR_SEQLENS), help="prefill of this head_dim only"
    )
    parser.add_argument(
        "--paged",
        type=int,
        default=0,
        metavar="PAGE",
        help="each prefill row again over a paged cache of PAGE keys a page (chunked prefill)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write every row to PATH as JSON")
    parser.add_argument(
        "--graph",
        action="store_true",
        help="time calls replayed from a CUDA graph (GPU time, no host launch overhead)",
    )
    parser.add_argument(
        "--device", choices=["cuda", "cpu"], help="default: cuda when torch sees a GPU"
    )
    parser.add_argument(
        "--passes",
        type=int,
        default=1,
        metavar="N",
        help="measure every shape N times, in N passes over the shapes; report median times",
    )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["sdpa_flash", "sdpa_cudnn", "fa4", "sdpa", "sdpa_math", "naive_loop"],
        help="leave this contender out (repeatable), e.g. for quick A/B runs",
    )
    return parser


def usage_problem(args: argparse.Namespace) -> str | None:
    """Why these options cannot run on this machine, in one line; None when they can."""
    if args.passes < 1:
        return f"--passes takes a count of at least 1, got {args.passes}"
    if args.paged < 0:
        return f"--paged takes a page size of at least 1 key, got {args.paged}"
    if args.graph and args.device == "cpu":
        return "--graph replays CUDA graphs: it needs the GPU, not --device cpu"
    if (args.device == "cuda" or args.graph) and not torch.cuda.is_available():
        build = (
            "a CPU-only build"
            if torch.version.cuda is None
            else f"built for CUDA {torch.version.cuda}"
        )
        option = "--device cuda" if args.device == "cuda" else "--graph"
        return f"{option} needs a CUDA GPU, and torch {torch.__version__} ({build}) sees none"
    return None


def run(args: argparse.Namespace) -> list[Row]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    budget_s = (1.0 if args.full else 0.25) if gpu else 0.2
    naive_flops_cap = (1e13 if args.full else 2e12) if gpu else 1e10
    env = environment(device)
    print("benchmark: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    print("ratios: the contender's time / forge_flash's (above 1: forge_flash is faster)")
    torch.manual_seed(int(time.time()))  # fresh inputs every run
    shapes = select_shapes(args, device)
    passes: list[list[Row]] = []
    for number in range(1, args.passes + 1):
        if args.passes > 1:
            print(f"pass {number} of {args.passes}")
        rows: list[Row] = []
        for shape in shapes:
            shape_rows = measure(
                shape,
                device,
                budget_s=budget_s,
                naive_flops_cap=naive_flops_cap,
                graph=args.graph,
                skip=frozenset(args.skip),
            )
            print(format_shape(shape, shape_rows), flush=True)
            rows += shape_rows
        passes.append(rows)
    rows = median_rows(passes) if args.passes > 1 else passes[0]
    if args.passes > 1:
        print(f"\nmedian of {args.passes} passes (each pass's forge_flash / {_TARGET_LABEL} last)")
        per_pass = [list(_by_shape(p).values()) for p in passes]
        for i, (shape, shape_rows) in enumerate(zip(shapes, _by_shape(rows).values(), strict=True)):
            ratios = [target_ratio(p[i]) for p in per_pass]
            spread = " / ".join("n/a" if r is None else f"{r:.2f}" for r in ratios)
            print(f"{format_shape(shape, shape_rows)} | passes {spread}")
    print()
    print(summary(rows))
    if args.passes > 1:
        print(pass_summary(passes))
    if args.json:
        data = {"env": env, "rows": [asdict(r) for r in rows]}
        if args.passes > 1:
            data["passes"] = [[asdict(r) for r in p] for p in passes]
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
        print(f"wrote {args.json}")
    return rows


def main(argv: list[str] | None = None, prog: str = "python -m forge_flash bench") -> int:
    """Run the benchmark; exit status 2, with one line on stderr, for options this machine
    cannot run (argparse exits with 2 for malformed ones)."""
    args = build_parser(prog).parse_args(argv)
    problem = usage_problem(args)
    if problem is not None:
        print(f"{prog}: error: {problem}", file=sys.stderr)
        return 2
    run(args)
    return 0
