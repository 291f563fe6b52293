"""The variants' costs on a GPU (issue 14's speed targets), beside FA4 where it has them.

    python tools/lab/bench_variants.py [TAG] [--json PATH] [--parts window scores gemma ...]

TAG, a build's name, is printed first on each row, so that tools/lab/ab_wheels.sh can run the
rows of several builds in alternating rounds and tools/lab/ab_table.py line them up.

Rows (bf16, one process, CUDA-event medians of single calls). A row and its base take turns
(taking_turns: 7 rounds, each row's ratio the median of the rounds' ratios): timed one after
the other, a row measured later ran on a warmer GPU at a lower clock (the same plain call gave
0.86-0.96 ms in one process on an H100, session 68; tools/lab/variant_timings.py).
* sliding window 4096 over 32k causal tokens against full causal attention (target >= 4x);
* softcap 50, ALiBi and sinks against plain attention at head_dim 128, 8k causal and not
  (target: each at most 10% slower), and softcap 50 again with q and k 8x larger, whose scores
  pass the softcap (the softmax's tanh may take another way there: score_program.cuh);
* a Gemma-2-like call (head_dim 256, window 4096, softcap 50, causal, 8k) beside FA4's
  (``window_size``, ``softcap``) where flash_attn.cute imports;
* where FA4 imports, its own window and softcap rows beside its plain calls (what the same
  variants cost the peer: its ratios, printed as notes);
* one-query decode with a window of 4096 over a 128k cache against the full cache (it reads
  only the window's keys), as GPU time from CUDA-graph replays;
* ``softcap-dims``: softcap 50 beside plain attention at head_dim 64, 96 and 128, and a Gemma 2
  27B-like local layer (head_dim 128, window 4096, softcap 50) beside plain causal attention;
* a gpt-oss-like layer (head_dim 64, 64 query / 8 KV heads, 8k causal tokens): sinks over the
  whole sequence and sinks with a window of 128, beside plain causal attention.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

import forge_flash as ff
from forge_flash.benchmark import time_graph


def gpu_ms(fn, reps: int = 30) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        times.append(begin.elapsed_time(end))
    return statistics.median(times)


def taking_turns(calls: dict, rounds: int = 7, reps: int = 10) -> dict[str, tuple[float, float]]:
    """Each call's median time (ms) over ``rounds`` rounds in which the calls take turns (reps
    calls each, in the dict's order), and the median over rounds of the first call's time over
    its own (its ratio to the first: above 1, faster)."""
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            times[name].append(gpu_ms(fn, reps))
    first = next(iter(times.values()))
    return {
        name: (
            statistics.median(t),
            statistics.median(b / x for b, x in zip(first, t, strict=True)),
        )
        for name, t in times.items()
    }


def qkv(batch, seqlen_q, seqlen_k, heads, heads_k, dim):
    def make(s, h):
        return torch.randn(batch, s, h, dim, device="cuda", dtype=torch.bfloat16)

    return make(seqlen_q, heads), make(seqlen_k, heads_k), make(seqlen_k, heads_k)


def fa4():
    try:
        from flash_attn.cute import flash_attn_func
    except ImportError:
        return None
    return flash_attn_func


def format_row(tag: str, name: str, ms: float, ratio: float | None, note: str) -> str:
    """One printed row: the build's tag (if any), the row's name, its time, its speed-up over
    the row's base and a note."""
    shown = "" if ratio is None else f"  {ratio:5.2f}x vs base"
    return f"{tag + ' ' if tag else ''}{name:<58} {ms:9.3f} ms{shown}  {note}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tag", nargs="?", default="", help="a build's name, first on each row")
    parser.add_argument("--json")
    parts = ("window", "scores", "gemma", "decode", "gpt-oss", "softcap-dims")
    parser.add_argument(
        "--parts", nargs="+", choices=parts, default=parts, help="which rows (default: all)"
    )
    args = parser.parse_args()
    rows = []

    def row(name, ms, ratio=None, note=""):
        """One row, printed and kept for --json; ratio: the base's time over this row's."""
        rows.append({"row": name, "ms": ms, "speedup_vs_base": ratio, "note": note})
        print(format_row(args.tag, name, ms, ratio, note), flush=True)

    flash = fa4()

    def peer(name, qkv_set, base_options, options):
        """FA4's call with ``options`` beside its call with ``base_options`` (n/a rows where
        it refuses one)."""
        if flash is None:
            return
        try:
            timed = taking_turns(
                {
                    "base": lambda: flash(*qkv_set, **base_options),
                    "variant": lambda: flash(*qkv_set, **base_options, **options),
                }
            )
        except Exception as exc:  # a contender that cannot run this call is n/a
            row(f"  FA4: {name}", float("nan"), None, f"n/a: {type(exc).__name__}: {exc}"[:90])
            return
        (base, _), (ms, ratio) = timed["base"], timed["variant"]
        row(f"  FA4: {name}", ms, ratio, f"FA4's own base {base:.3f} ms")

    def turns_rows(prefix: str, calls: dict, notes: dict) -> None:
        """The rows of calls that took turns (taking_turns), the first the base."""
        for i, (name, (ms, ratio)) in enumerate(taking_turns(calls).items()):
            row(prefix + name, ms, ratio if i else None, notes.get(name, ""))

    def call(qkv_set, **options):
        return lambda: ff.flash_attn_fwd(*qkv_set, **options)

    if "window" in args.parts:
        long = qkv(1, 32768, 32768, 16, 16, 128)
        turns_rows("causal 32k", {", hd128 (base)": call(long, causal=True),
                                  ", window 4096": call(long, causal=True, window_size=(4096, 0))},
                   {", window 4096": "target >= 4x"})  # fmt: skip
        peer("causal 32k, window 4096", long, {"causal": True}, {"window_size": (4096, 0)})
        del long

    if "scores" in args.parts:
        slopes = torch.rand(16, device="cuda") * 0.1
        sinks = torch.randn(16, device="cuda")
        variants = {"softcap 50": {"softcap": 50.0}, "alibi": {"alibi_slopes": slopes},
                    "sinks": {"sinks": sinks}}  # fmt: skip
        medium = qkv(2, 8192, 8192, 16, 16, 128)
        # The same call with q and k 8x larger: scores (scale * q.k) of std 64, past softcap 50
        # in every warp's K/V tile (the random ones above, of std 1, lie far within it).
        large = (medium[0] * 8, medium[1] * 8, medium[2])
        for causal in (False, True):
            tag = "causal" if causal else "non-causal"
            calls = {"plain (base)": call(medium, causal=causal)}
            calls.update({name: call(medium, causal=causal, **options)
                          for name, options in variants.items()})  # fmt: skip
            calls["softcap 50, scores past it"] = call(large, causal=causal, softcap=50.0)
            notes = {name: "target >= 0.91x" for name in variants}
            notes["softcap 50, scores past it"] = "q, k x8"
            turns_rows(f"hd128 8k {tag} ", calls, notes)
            peer(f"hd128 8k {tag} softcap 50", medium, {"causal": causal}, {"softcap": 50.0})
        del medium

    if "gemma" in args.parts:
        wide = qkv(2, 8192, 8192, 8, 8, 256)
        gemma = {"causal": True, "window_size": (4096, 0), "softcap": 50.0}
        ours = gpu_ms(call(wide, **gemma))
        row("Gemma-2-like hd256 8k causal window 4096 softcap 50", ours)
        if flash is not None:
            try:
                timed = taking_turns({"ours": call(wide, **gemma),
                                      "FA4": lambda wide=wide: flash(*wide, **gemma)})  # fmt: skip
                ms, speed = timed["FA4"][0], 1 / timed["FA4"][1]  # taking turns with ours
                row("  same call on FA4", ms, None, f"forge-flash / FA4 speed {speed:.2f}")
            except Exception as exc:  # a contender that cannot run this call is n/a
                row(
                    "  same call on FA4",
                    float("nan"),
                    None,
                    f"n/a: {type(exc).__name__}: {exc}"[:90],
                )
        del wide

    if "softcap-dims" in args.parts:
        # Softcap 50 beside plain attention at the head dims of the Hopper softcap-only instance
        # and its candidates (64, 96, 128; hidden 2048), and Gemma 2 27B's local layers (head_dim
        # 128, 32 / 16 heads, window 4096 with softcap 50) beside plain causal attention.
        for dim in (64, 96, 128):
            same = qkv(2, 8192, 8192, 2048 // dim, 2048 // dim, dim)
            for causal in (False, True):
                tag = "causal" if causal else "non-causal"
                turns_rows(f"hd{dim} 8k {tag} ", {
                    "plain (base)": call(same, causal=causal),
                    "softcap 50": call(same, causal=causal, softcap=50.0),
                }, {})  # fmt: skip
            del same
        local = qkv(2, 8192, 8192, 32, 16, 128)
        gemma27 = {"causal": True, "window_size": (4096, 0), "softcap": 50.0}
        turns_rows("Gemma-2-27B-like hd128 8k causal ", {
            "plain (base)": call(local, causal=True),
            "window 4096 softcap 50": call(local, **gemma27),
        }, {})  # fmt: skip
        peer("Gemma-2-27B-like hd128 8k window 4096 softcap 50", local, {"causal": True},
             {"window_size": (4096, 0), "softcap": 50.0})  # fmt: skip
        del local

    if "gpt-oss" in args.parts:
        layer = qkv(2, 8192, 8192, 64, 8, 64)
        sinks = torch.randn(64, device="cuda")
        turns_rows("gpt-oss-like hd64 8k causal ", {
            "plain (base)": call(layer, causal=True),
            "sinks": call(layer, causal=True, sinks=sinks),
            "sinks, window 128": call(layer, causal=True, sinks=sinks, window_size=(128, 0)),
        }, {})  # fmt: skip
        del layer

    if "decode" in args.parts:
        # Decode steps take tens of microseconds, so events around one Python call would time the
        # host: these are GPU times of calls replayed from a CUDA graph.
        q = torch.randn(1, 32, 128, device="cuda", dtype=torch.bfloat16)
        cache = torch.randn(1, 131072, 8, 128, device="cuda", dtype=torch.bfloat16)
        lengths = torch.full((1,), 131072, dtype=torch.int32, device="cuda")

        def decode_ms(**options) -> float:
            def step(i: int) -> torch.Tensor:
                return ff.batched_decode_attention(q, cache, cache, lengths, **options)

            return time_graph(step, torch.device("cuda"), copies=8) * 1e3

        full = decode_ms()
        row("decode 1 query over 128k keys (base; GPU time)", full)
        windowed = decode_ms(window_size=(4096, 0))
        note = "reads ~1/32 of the keys"
        row("decode 1 query, window 4096 over 128k", windowed, full / windowed, note)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                       "rows": rows}, handle, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
