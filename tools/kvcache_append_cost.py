"""GPU time that appending one token per sequence adds to a decode step of
``flash_attn_with_kvcache`` (issue 15's budget: at most 2 us), replayed from CUDA graphs:

    python tools/kvcache_append_cost.py [TAG] [--copies N]

For each shape (32 query heads over 8 KV heads of 128, bf16, 4096 cached keys; contiguous and
paged caches of 16-key pages; with and without rotary; batch 1, 8 and 64) it prints the step
without new keys (the attention alone over cache_seqlens + 1 keys), the step with k/v
appended as ``flash_attn_with_kvcache`` takes it (one ``ff_attn_fwd_append`` call where the
plugin takes the step as one: the append inside the decode kernel, or the append kernel and
the decode kernel behind it, launched by the C API) and their difference; the append kernel
(with the rotary of q and k) timed alone; the same step as the adapter's two calls (the append
kernel ``ff_append_kv``, then the attention, launched programmatically and plainly: what the
overlap of its launch with the append's tail is worth); and the step with the append on torch
ops (the plugin's append and one-call step both declined), with those ops timed alone. Needs
the kernel plugin: it says so and stops where the append kernel does not run.

``--copies N`` captures N consecutive decode steps in one graph (default 1): each step's share
of a replay, the steady state of a decode loop, without the replay's own start-up in every
figure (with one step per replay, that start-up's jitter is about +-2 us).

``--projection`` models the kernel an engine runs before each step: q, k and v are views of one
``(batch, 1, heads + 2 * kv_heads, head_dim)`` buffer, as a fused QKV projection leaves them, and
every step of both graphs (the attention alone and the step with the append) first writes that
buffer with one plain (not programmatic) torch kernel. Back to back, without it, each attention
call of the baseline is launched programmatically behind the previous one and starts as that
one's CTAs retire; a loop of an engine never has two attention calls in a row, and its append
kernel waits for the projection, not for the previous step's attention.

``--draws D`` measures each shape over D draws of the ragged lengths (seeds 0 to D-1) and
prints the median of what the append added: at batch 64 the longest sequence sets the step's
time, and where its CTA runs (beside which others, how late) moved the difference by several us
between draws. ``--batches`` picks the batch sizes; ``--step-only`` skips the other timings.

``--rounds R`` times the attention alone and the step with the append R times each, in turn,
and keeps each one's least time (default 1). At batch 64 the attention alone moved by up to
7 us between processes (H200, 2026-12-03), more than the budget: alternating rounds let both
figures see the same state of the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from contextlib import contextmanager
from unittest import mock

import torch

import forge_flash
from forge_flash.backends.cuda import CudaBackend
from forge_flash.benchmark import time_graph
from forge_flash.call import NewKeys
from forge_flash.kvcache_append import append_kv, append_step, apply_rotary, query_positions

HEADS, KV_HEADS, HEAD_DIM, CACHE_LEN, PAGE = 32, 8, 128, 4096, 16
BATCHES = (1, 8, 64)


def step_case(batch: int, paged: bool, device: torch.device, projection: bool = False) -> dict:
    """One shape's tensors; with ``projection``, q, k and v are views of one buffer ``qkv``
    that ``qkv_source`` overwrites before each step."""
    dtype = torch.bfloat16
    blocks = CACHE_LEN // PAGE
    if paged:
        shape = (batch * blocks, PAGE, KV_HEADS, HEAD_DIM)
        order = torch.randperm(batch * blocks, device=device).to(torch.int32)
        table = order.view(batch, blocks)
    else:
        shape, table = (batch, CACHE_LEN, KV_HEADS, HEAD_DIM), None
    angles = torch.rand(CACHE_LEN, HEAD_DIM // 2, device=device, dtype=torch.float64) * 6.28
    qkv = torch.randn(batch, 1, HEADS + 2 * KV_HEADS, HEAD_DIM, device=device, dtype=dtype)
    q, k, v = qkv.split([HEADS, KV_HEADS, KV_HEADS], dim=2)
    if not projection:
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    return {
        "q": q,
        "k": k,
        "v": v,
        "qkv": qkv if projection else None,
        "qkv_source": torch.randn_like(qkv) if projection else None,
        "k_cache": torch.randn(shape, device=device, dtype=dtype),
        "v_cache": torch.randn(shape, device=device, dtype=dtype),
        "table": table,
        # Ragged lengths that leave room for the new token.
        "seqlens": torch.randint(1, CACHE_LEN - 1, (batch,), device=device, dtype=torch.int32),
        "cos": angles.cos().to(dtype),
        "sin": angles.sin().to(dtype),
    }


def project(case: dict) -> None:
    """The projection kernel of a ``step_case(..., projection=True)``: one plain torch kernel
    writes q, k and v (views of ``qkv``); nothing without ``projection``."""
    if case["qkv"] is not None:
        case["qkv"].copy_(case["qkv_source"])


def _declined(*_args, **_kwargs) -> None:
    return None  # a backend entry point that does not take the call


@contextmanager
def _two_calls(*, programmatic: bool):
    """The step as the adapter's two calls: the plugin does not take it as one call, so the
    append kernel runs and then the attention, launched programmatically or not."""
    attention = forge_flash.api.cache_attention

    def launched(*args, **kwargs):
        kwargs["programmatic_launch"] = programmatic and kwargs.get("programmatic_launch", False)
        return attention(*args, **kwargs)

    with (
        mock.patch.object(CudaBackend, "attend_appending", _declined),
        mock.patch.object(forge_flash.api, "cache_attention", launched),
    ):
        yield


@contextmanager
def _torch_ops_append():
    """flash_attn_with_kvcache with the append on torch ops: the plugin takes neither the step as
    one call nor the append."""
    with (
        mock.patch.object(CudaBackend, "attend_appending", _declined),
        mock.patch.object(CudaBackend, "append_kv", _declined),
    ):
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tag", nargs="?", default="forge_flash")
    parser.add_argument("--copies", type=int, default=1, help="decode steps per graph replay")
    parser.add_argument("--rounds", type=int, default=1, help="timings of base and step, in turn")
    parser.add_argument(
        "--batches", type=int, nargs="+", default=list(BATCHES), help="batch sizes (1 8 64)"
    )
    parser.add_argument(
        "--draws", type=int, default=1, help="draws of the ragged lengths per shape (seeds 0..)"
    )
    parser.add_argument(
        "--step-only", action="store_true", help="time only the attention alone and the step"
    )
    parser.add_argument(
        "--projection", action="store_true",
        help="a plain kernel writes q, k and v (views of one buffer) before every step",
    )  # fmt: skip
    args = parser.parse_args()
    tag = args.tag
    if args.rounds < 1 or args.draws < 1:
        parser.error(f"--rounds and --draws must be at least 1, got {args.rounds}, {args.draws}")
    device = torch.device("cuda")
    if forge_flash.active_backend().name != "cuda":
        sys.exit("kvcache_append_cost: the kernel plugin is not in use here")
    layouts = [(paged, rotary) for paged in (False, True) for rotary in (False, True)]
    for paged, rotary in layouts:
        for batch in args.batches:
            added = []
            for draw in range(args.draws):
                torch.manual_seed(draw)  # each build of an A/B sees the same lengths
                line, step_added = measure_case(batch, paged, rotary, args, device)
                added.append(step_added)
                print(f"{tag} {line}", flush=True)
            if args.draws > 1:
                layout = f"paged{PAGE}" if paged else "contiguous"
                print(
                    f"{tag} {layout} b{batch} rotary={int(rotary)} over {args.draws} draws of "
                    f"lengths: added median {statistics.median(added):.1f} us "
                    f"({min(added):.1f} to {max(added):.1f})",
                    flush=True,
                )


def measure_case(
    batch: int, paged: bool, rotary: bool, args: argparse.Namespace, device: torch.device
) -> tuple[str, float]:
    """One shape's figures (the line to print) and the GPU time its append adds (us)."""
    copies = args.copies
    c = step_case(batch, paged, device, args.projection)
    grown = c["seqlens"] + 1
    tables = {"rotary_cos": c["cos"], "rotary_sin": c["sin"]} if rotary else {}
    cos, sin = (c["cos"], c["sin"]) if rotary else (None, None)

    def attention_only(_: int) -> object:
        project(c)
        return forge_flash.flash_attn_with_kvcache(
            c["q"], c["k_cache"], c["v_cache"], cache_seqlens=grown, block_table=c["table"],
            causal=True,
        )  # fmt: skip

    def with_append(_: int) -> object:
        project(c)
        return forge_flash.flash_attn_with_kvcache(
            c["q"], c["k_cache"], c["v_cache"], c["k"], c["v"], cache_seqlens=c["seqlens"],
            block_table=c["table"], causal=True, **tables,
        )  # fmt: skip

    def fused_alone(_: int) -> object:
        new = NewKeys(c["k"], c["v"], cos, sin, True, True)
        q, _, fused = append_step(
            c["q"], c["k_cache"], c["v_cache"], c["seqlens"], new, cache_batch_idx=None,
            block_table=c["table"],
        )  # fmt: skip
        if not fused:
            sys.exit("kvcache_append_cost: the fused append did not run")
        return q

    def torch_alone(_: int) -> object:
        append_kv(
            c["k_cache"], c["v_cache"], c["k"], c["v"], c["seqlens"], block_table=c["table"],
            rotary_cos=cos, rotary_sin=sin,
        )  # fmt: skip
        if cos is not None:
            positions = query_positions(c["seqlens"], 1, True)
            return apply_rotary(c["q"], cos, sin, positions, True)
        return None

    base = step = float("inf")
    for _ in range(args.rounds):
        base = min(base, time_graph(attention_only, device, copies=copies) * 1e6)
        step = min(step, time_graph(with_append, device, copies=copies) * 1e6)
    layout = f"paged{PAGE}" if paged else "contiguous"
    line = (
        f"{layout} b{batch} steps/replay={copies} rounds={args.rounds} "
        f"{'projection ' if args.projection else ''}rotary={int(rotary)}: "
        f"attention {base:.1f} us, with fused append {step:.1f} us, added {step - base:.1f} us"
    )
    if args.step_only:
        return line, step - base
    alone = time_graph(fused_alone, device, copies=copies) * 1e6
    two_calls = {}
    for programmatic in (True, False):
        with _two_calls(programmatic=programmatic):
            two_calls[programmatic] = time_graph(with_append, device, copies=copies)
    with _torch_ops_append():
        torch_step = time_graph(with_append, device, copies=copies) * 1e6
    torch_only = time_graph(torch_alone, device, copies=copies) * 1e6
    chained, plain = (two_calls[flag] * 1e6 - base for flag in (True, False))
    line += (
        f" (fused append alone {alone:.1f} us; as two calls added {chained:.1f} us, "
        f"without the programmatic launch {plain:.1f} us); torch ops: with append "
        f"{torch_step:.1f} us, added {torch_step - base:.1f} us (alone {torch_only:.1f} us)"
    )
    return line, step - base


if __name__ == "__main__":
    main()
