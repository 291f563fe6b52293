"""Where the Hopper kernel's work tiles and CTAs spend their cycles, from its timeline stamps.

Needs a plugin built with the stamps (never the wheels'):

    FORGE_FLASH_TRACE=ON FORGE_FLASH_CUDA_ARCHS=90a-real pip install ./python/plugin
    python tools/lab/trace_rows.py 128:512:n,128:512:c,64:512:n,64:512:c:16

A row is head_dim:seqlen:(n)on-causal, (c)ausal or w<left> (causal with window_size=(left, 0):
128:32768:w4096 is bench_variants.py's window row) at the benchmark's prefill shape (16k tokens,
one sequence from 16k up; 2048 // head_dim heads, bf16), with :P after it the same call as
chunked prefill over a paged cache of P keys a page (`bench --paged`'s call:
flash_attn_varlen_fwd with a block table, which runs the paged twin's persistent instance within
1024 keys), or with :v the same sequences packed over dense K/V (flash_attn_varlen_fwd without a
table: the paged rows' control, the packed twin); a window applies to those too. For each row one
steady-state call runs with FORGE_FLASH_TRACE_BUFFER naming a device buffer; the kernel writes
the SM's clock64 at events of every CTA's first 32 work tiles (csrc/kernels/trace.cuh names them),
and this prints the medians, over every CTA's work tiles after its first, of the phases between
them, in SM cycles, for consumer warpgroup 0. Only the persistent launch (keys up to 1024) walks
several work tiles per CTA; longer rows (a CTA a work tile) print no phases. On 2026-12-04
(docs/benchmarks.md) it showed the epilogue and the next work tile's CtaWork, not the loads,
between two short work tiles. Every row then prints the CTAs' own timeline (cta_timeline): their
first work tile's events from the CTA's start, and the gap between CTAs that ran one after another
on an SM: what a plain launch pays per work tile around its K/V loop.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import re
import statistics
from collections.abc import Sequence
from pathlib import Path

TRACE_HEADER = Path(__file__).resolve().parents[2] / "csrc" / "kernels" / "trace.cuh"


def header_numbers(text: str) -> dict[str, int]:
    """The stamp buffer's layout as trace.cuh writes it, the one place it is written: its
    `constexpr int kName = N;`, the TraceSlot enum's `kName = N` and the TraceConsumerEvent
    enum's members, numbered in order."""
    numbers = {name: int(n) for name, n in re.findall(r"constexpr int (k\w+) = (\d+);", text)}
    numbers.update({name: int(n) for name, n in re.findall(r"\b(kTrace\w+) = (\d+),", text)})
    events = re.search(r"enum TraceConsumerEvent : int \{([^}]*)\}", text)
    if events is None:
        raise ValueError(f"no TraceConsumerEvent enum in {TRACE_HEADER}")
    numbers.update({name.strip(): i for i, name in enumerate(events.group(1).split(","))})
    return numbers


_N = header_numbers(TRACE_HEADER.read_text())
CTAS, TILES, SLOTS = _N["kTraceCtas"], _N["kTraceTiles"], _N["kTraceSlots"]
Q_ISSUED, CONSUMER = _N["kTraceQIssued"], _N["kTraceConsumer"]
BODY_TOP, BEFORE_Q_WAIT = _N["kTraceBodyTop"], _N["kTraceBeforeQWait"]
Q_LANDED, K0_LANDED, TURN = _N["kTraceQLanded"], _N["kTraceK0Landed"], _N["kTraceTurn"]
S0, LAST_PV, EPILOGUE = _N["kTraceS0"], _N["kTraceLastPV"], _N["kTraceEpilogue"]
SM, START_CLOCK, END_CLOCK = _N["kTraceSm"], _N["kTraceStartClock"], _N["kTraceEndClock"]
START_TIME, END_TIME = _N["kTraceStartTime"], _N["kTraceEndTime"]

# (name, slot it ends at, slot it starts at, True where the start is the previous work tile's)
PHASES = [
    ("next CtaWork (epilogue -> body)", BODY_TOP, CONSUMER + EPILOGUE, True),
    ("body -> Q wait", BEFORE_Q_WAIT, BODY_TOP, False),
    ("Q wait", CONSUMER + Q_LANDED, BEFORE_Q_WAIT, False),
    ("K[0] wait", CONSUMER + K0_LANDED, CONSUMER + Q_LANDED, False),
    ("turn", CONSUMER + TURN, CONSUMER + K0_LANDED, False),
    ("S[0] after the turn", CONSUMER + S0, CONSUMER + TURN, False),
    ("the loop (S[0] -> last P V)", CONSUMER + LAST_PV, CONSUMER + S0, False),
    ("epilogue", CONSUMER + EPILOGUE, CONSUMER + LAST_PV, False),
    ("tile period", CONSUMER + EPILOGUE, CONSUMER + EPILOGUE, True),
    ("Q issued -> landed", CONSUMER + Q_LANDED, Q_ISSUED, False),
]


Stamps = Sequence[Sequence[Sequence[int]]]  # [CTA][work tile][slot]


def phases(stamps: Stamps) -> dict[str, list[int]]:
    """The phases of every CTA's work tiles after its first, from stamps indexed [CTA][work
    tile][slot] (0: not stamped); a tile gives a phase only where both its stamps exist."""
    out: dict[str, list[int]] = {name: [] for name, *_ in PHASES}
    for cta in stamps:
        for tile in range(1, len(cta)):
            now, before = cta[tile], cta[tile - 1]
            for name, end, start, previous in PHASES:
                first = before[start] if previous else now[start]
                if now[end] and first:
                    out[name].append(int(now[end]) - int(first))
    return out


def summary(stamps: Stamps) -> list[str]:
    """One line per phase: its median and mean in cycles, and how many work tiles gave it."""
    return [
        f"  {name:32s} median {statistics.median(v):8.0f}  mean {statistics.fmean(v):8.0f}"
        f"  ({len(v)} tiles)"
        for name, v in phases(stamps).items()
        if v
    ]


# A CTA's first work tile's events, in cycles from the CTA's start (name, slot).
CTA_EVENTS = [
    ("Q issued (producer)", Q_ISSUED),
    ("Q landed (consumer 0)", CONSUMER + Q_LANDED),
    ("K[0] landed (consumer 0)", CONSUMER + K0_LANDED),
    ("S[0] landed (consumer 0)", CONSUMER + S0),
    ("S[0] landed (consumer 1)", CONSUMER + 6 + S0),
    ("last P V retired (consumer 0)", CONSUMER + LAST_PV),
    ("last P V retired (consumer 1)", CONSUMER + 6 + LAST_PV),
    ("epilogue done (consumer 0)", CONSUMER + EPILOGUE),
    ("epilogue done (consumer 1)", CONSUMER + 6 + EPILOGUE),
    ("stores issued (CTA end)", END_CLOCK),
]


def cta_timeline(stamps: Stamps) -> list[str]:
    """Where a CTA's time goes around its work, from the CTA stamps (trace.cuh): the events of
    its first work tile in cycles from its start, and, lining up the CTAs that ran one after
    another on each SM by %globaltimer, the gap between one's stores issued and the next one's
    start: what a plain launch (a CTA a work tile) pays per work tile to retire a CTA and start
    the next, besides the start-up inside the CTA before S[0]."""
    ctas = [cta[0] for cta in stamps if cta[0][START_TIME] and cta[0][END_TIME]]
    if not ctas:
        return []
    by_sm: dict[int, list[Sequence[int]]] = {}
    for cta in ctas:
        by_sm.setdefault(int(cta[SM]), []).append(cta)
    gaps, spans = [], []
    for row in by_sm.values():
        row.sort(key=lambda cta: cta[START_TIME])
        gaps += [int(b[START_TIME]) - int(a[END_TIME]) for a, b in itertools.pairwise(row)]
        spans += [int(cta[END_TIME]) - int(cta[START_TIME]) for cta in row]
    mhz = statistics.median(
        1e3 * (int(c[END_CLOCK]) - int(c[START_CLOCK])) / (int(c[END_TIME]) - int(c[START_TIME]))
        for c in ctas
        if c[END_TIME] > c[START_TIME]
    )
    lines = [f"  CTAs: {len(ctas)} on {len(by_sm)} SMs, clock ~{mhz:.0f} MHz"]
    for name, slot in CTA_EVENTS:
        cycles = [int(c[slot]) - int(c[START_CLOCK]) for c in ctas if c[slot]]
        if cycles:
            lines.append(f"  start -> {name:30s} median {statistics.median(cycles):8.0f} cycles")
    lines.append(
        f"  CTA span (start -> stores issued)      median {statistics.median(spans):8.0f} ns"
    )
    if gaps:
        idle = sum(gaps) / (sum(gaps) + sum(spans))
        lines.append(
            f"  gap to the SM's next CTA               median {statistics.median(gaps):8.0f} ns"
            f"  mean {statistics.fmean(gaps):6.0f} ns  ({len(gaps)} gaps: {100 * idle:.1f}% of the"
            " SMs' time)"
        )
    return lines


def trace_row(spec: str) -> list[str]:
    import torch

    import forge_flash
    from forge_flash.benchmark import paged_inputs, prefill_shapes
    from forge_flash.validation import device_value_checks_off

    head_dim, seqlen, kind, *page = spec.split(":")
    packed = page == ["v"]  # the same sequences packed, dense K/V: the paged rows' control
    # w<left>: causal with a sliding window of <left> keys, window_size=(left, 0)
    window = (int(kind[1:]), 0) if kind.startswith("w") else (-1, -1)
    causal = kind == "c" or window[0] >= 0
    page_size = int(page[0]) if page and not packed else 0
    shape = prefill_shapes([int(seqlen)], [int(head_dim)], ["bf16"])[0]
    size = (shape.batch, shape.seqlen_q, shape.heads, shape.head_dim)
    copies = [tuple(torch.randn(size, device="cuda", dtype=torch.bfloat16) for _ in range(3))
              for _ in range(4)]  # fmt: skip
    if page_size:
        paged = paged_inputs(dataclasses.replace(shape, kind="paged", page_size=page_size), copies)
        copies = paged.copies

        def call(q, k, v):
            with device_value_checks_off():  # the checks would read cu_seqlens back
                paged.attend(shape, q, k, v, causal=causal, window_size=window)
    elif packed:
        steps = torch.arange(shape.batch + 1, device="cuda", dtype=torch.int32)
        cu_q, cu_k = steps * shape.seqlen_q, steps * shape.seqlen_k
        copies = [tuple(t.flatten(0, 1) for t in qkv) for qkv in copies]

        def call(q, k, v):
            with device_value_checks_off():  # as the paged rows run
                forge_flash.flash_attn_varlen_fwd(
                    q, k, v, cu_q, cu_k, shape.seqlen_q, shape.seqlen_k, causal=causal,
                    window_size=window,
                )  # fmt: skip
    else:

        def call(q, k, v):
            forge_flash.flash_attn_fwd(q, k, v, causal=causal, window_size=window)

    for i in range(6):  # steady state, on inputs that are not all in L2
        call(*copies[i % 4])
    buffer = torch.zeros(CTAS * TILES * SLOTS, dtype=torch.int64, device="cuda")
    torch.cuda.synchronize()
    os.environ["FORGE_FLASH_TRACE_BUFFER"] = str(buffer.data_ptr())
    try:
        call(*copies[1])
        torch.cuda.synchronize()
    finally:
        del os.environ["FORGE_FLASH_TRACE_BUFFER"]
    stamps = buffer.view(CTAS, TILES, SLOTS).cpu().tolist()
    stamped = [cta for cta in stamps if cta[0][CONSUMER + Q_LANDED] != 0]
    mask = "causal" if causal else "non-causal"
    mask += f", window {window[0]}" if window[0] >= 0 else ""
    pages = f" pages of {page_size}" if page_size else " packed (varlen)" if packed else ""
    head = f"== d{head_dim} s{seqlen} {mask}{pages}: {len(stamped)} CTAs"
    if not len(stamped):
        head += " stamped (not a FORGE_FLASH_TRACE build)"
    return [head, *summary(stamped), *cta_timeline(stamps)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", help="head_dim:seqlen:n|c|w<left>[:page_size|v],...")
    args = parser.parse_args()
    for spec in args.rows.split(","):
        print("\n".join(trace_row(spec)), flush=True)


if __name__ == "__main__":
    main()
