"""``python -m forge_flash bench``: forge-flash beside torch's attention on the anchor shapes.

For each shape: our time and throughput next to torch SDPA's flash and cuDNN backends and a
naive per-head Python loop on the GPU (SDPA's default and math backends on the CPU), with
speed-up ratios (their time / ours). Prefill rows report TFLOP/s (4 * b * h * sq * sk * d,
halved for causal with sq == sk); decode rows report microseconds and GB/s of K/V read
(2 * b * sk * hk * d * element size).

Timing: CUDA events around each call (wall clock on the CPU), warm-up first, the median of
many repeats, fresh random inputs rotated over enough copies that K/V do not stay in L2.
Back-to-back eager calls include the host's launch overhead wherever it exceeds the GPU time
(small decode calls); ``--graph`` replays the calls from a CUDA graph to time the GPU alone.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ._version import __version__
from .api import flash_attn_fwd
from .discovery import active_backend

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_ROTATION_BYTES = 128 * 2**20  # twice the H100's 50 MB L2


@dataclass(frozen=True)
class Shape:
    kind: str  # "prefill" or "decode"
    batch: int
    heads: int
    heads_k: int
    seqlen_q: int
    seqlen_k: int
    head_dim: int
    causal: bool
    dtype: str  # a key of DTYPES

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
        return (
            f"prefill {self.dtype} b={self.batch} s={self.seqlen_q} h={self.heads} "
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


def prefill_shapes(
    seqlens: list[int],
    head_dims: list[int],
    dtypes: list[str],
    *,
    tokens: int = 16384,
    hidden: int = 2048,
) -> list[Shape]:
    """batch * seqlen = tokens, heads * head_dim = hidden, causal and not."""
    return [
        Shape("prefill", max(1, tokens // s), hidden // d, hidden // d, s, s, d, causal, dtype)
        for dtype in dtypes
        for d in head_dims
        for s in seqlens
        for causal in (False, True)
    ]


def decode_shapes(kv_lens: list[int], dtypes: list[str]) -> list[Shape]:
    """One query, 32 query heads over 8 KV heads of 128."""
    return [Shape("decode", 1, 32, 8, 1, n, 128, False, dtype) for dtype in dtypes for n in kv_lens]


def select_shapes(args: argparse.Namespace, device: torch.device) -> list[Shape]:
    gpu = device.type == "cuda"
    dtypes = list(DTYPES) if args.dtype == "both" else [args.dtype]
    head_dims = [args.hdim] if args.hdim else [64, 128]
    if args.full:
        seqlens = [512, 1024, 2048, 4096, 8192, 16384]
        kv_lens = [4096, 8192, 16384, 32768, 65536, 131072]
        tokens, hidden = 16384, 2048
    elif gpu:
        seqlens, kv_lens, tokens, hidden = [1024, 4096], [4096, 32768], 16384, 2048
        if not args.hdim:
            head_dims = [128]
        if args.dtype == "both":
            dtypes = ["bf16"]
    else:
        # The CPU does roughly 1000x less: scaled-down shapes keep the run to seconds.
        seqlens, kv_lens, tokens, hidden = [256, 1024], [4096, 16384], 1024, 1024
        if not args.hdim:
            head_dims = [64]
        if args.dtype == "both":
            dtypes = ["bf16"]
    shapes = []
    if not args.decode_only:
        shapes += prefill_shapes(seqlens, head_dims, dtypes, tokens=tokens, hidden=hidden)
    if not args.prefill_only:
        shapes += decode_shapes(kv_lens, dtypes)
    return shapes


# -- the contenders ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Contender:
    """A call to time, and the context it runs in (entered once, outside the timed calls)."""

    run: Callable[[int], object]
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext


@dataclass
class Inputs:
    """Rotating copies of q/k/v in both layouts: ours (b, s, h, d) and SDPA's (b, h, s, d)."""

    ours: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
    sdpa: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


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
    return Inputs(ours, sdpa)


def _ours(shape: Shape, inputs: Inputs) -> Contender:
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


def contenders(shape: Shape, inputs: Inputs, device: torch.device) -> dict[str, Contender | None]:
    from torch.nn.attention import SDPBackend

    found: dict[str, Contender | None] = {"forge_flash": _ours(shape, inputs)}
    if device.type == "cuda":
        found["sdpa_flash"] = _sdpa(shape, inputs, SDPBackend.FLASH_ATTENTION)
        found["sdpa_cudnn"] = _sdpa(shape, inputs, SDPBackend.CUDNN_ATTENTION)
    else:
        found["sdpa"] = _sdpa(shape, inputs, None)
        found["sdpa_math"] = _sdpa(shape, inputs, SDPBackend.MATH)
    found["naive_loop"] = _naive_loop(shape, inputs)
    return found


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


def time_graph(fn: Callable[[int], object], device: torch.device, *, copies: int) -> float:
    """Median seconds per call of ``copies`` calls (one per input set) captured in one CUDA
    graph and replayed: GPU time without the host's launch overhead."""
    for i in range(copies):  # warm up outside the capture: plans, allocator, caches
        fn(i)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(copies):
            fn(i)
    graph.replay()
    events = [
        (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        for _ in range(20)
    ]
    for begin, end in events:
        begin.record()
        graph.replay()
        end.record()
    torch.cuda.synchronize(device)
    return statistics.median(b.elapsed_time(e) / 1e3 for b, e in events) / copies


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
    for name, contender in contenders(shape, inputs, device).items():
        if name in skip:
            continue
        seconds = None
        if contender is not None and not (name == "naive_loop" and shape.flops > naive_flops_cap):
            with contender.context():
                if graph and device.type == "cuda" and name != "naive_loop":
                    try:
                        seconds = time_graph(contender.run, device, copies=len(inputs.ours))
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
                None if seconds is None else shape.kv_bytes / seconds / 1e9,
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


def format_shape(shape: Shape, rows: list[Row]) -> str:
    ours = rows[0]
    parts = [f"{ours.backend} {_figure(ours)}"]
    for row in rows[1:]:
        text = f"{row.backend} {_figure(row)}"
        if row.ms is not None and ours.ms:
            text += f" ({row.ms / ours.ms:.2f}x)"
        parts.append(text)
    return f"{shape.label():<44} " + " | ".join(parts)


def summary(rows: list[Row]) -> str:
    """Speed-up of forge_flash over each contender: geometric mean, min and max per kind."""
    ours = {_key(r): r for r in rows if r.backend == "forge_flash"}
    lines = [
        f"{'speed-up of forge_flash over':<30} {'kind':<8} {'geomean':>8} {'min':>8} {'max':>8}"
    ]
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        base = ours.get(_key(row))
        if row.backend == "forge_flash" or row.ms is None or base is None or not base.ms:
            continue
        groups.setdefault((row.backend, row.kind), []).append(row.ms / base.ms)
    for (backend, kind), ratios in sorted(groups.items()):
        geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        lines.append(
            f"{backend:<30} {kind:<8} {geomean:>7.2f}x {min(ratios):>7.2f}x {max(ratios):>7.2f}x"
        )
    return "\n".join(lines)


def _key(row: Row) -> tuple:
    return (row.kind, row.dtype, row.b, row.h, row.hk, row.sq, row.sk, row.d, row.causal)


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
    else:
        env["threads"] = torch.get_num_threads()
    return env


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m forge_flash bench", description=__doc__.splitlines()[0]
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a few shapes (the default)")
    size.add_argument("--full", action="store_true", help="every anchor shape (minutes on a GPU)")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--prefill", dest="prefill_only", action="store_true", help="prefill only")
    kind.add_argument("--decode", dest="decode_only", action="store_true", help="decode only")
    parser.add_argument("--dtype", choices=[*DTYPES, "both"], default="both")
    parser.add_argument("--hdim", type=int, choices=[64, 128], help="prefill head_dim only")
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
        "--skip",
        action="append",
        default=[],
        choices=["sdpa_flash", "sdpa_cudnn", "sdpa", "sdpa_math", "naive_loop"],
        help="leave this contender out (repeatable), e.g. for quick A/B runs",
    )
    return parser


def run(args: argparse.Namespace) -> list[Row]:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    budget_s = (1.0 if args.full else 0.25) if gpu else 0.2
    naive_flops_cap = (1e13 if args.full else 2e12) if gpu else 1e10
    env = environment(device)
    print("benchmark: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    print("ratios: the contender's time / forge_flash's (above 1: forge_flash is faster)")
    torch.manual_seed(int(time.time()))  # fresh inputs every run
    rows: list[Row] = []
    for shape in select_shapes(args, device):
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
    print()
    print(summary(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "rows": [asdict(r) for r in rows]}, f, indent=1)
        print(f"wrote {args.json}")
    return rows


def main(argv: list[str] | None = None) -> int:
    run(build_parser().parse_args(argv))
    return 0
