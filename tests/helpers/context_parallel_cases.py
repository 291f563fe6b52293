"""Context-parallel attention checked inside a real process group: one spawned process per
rank (gloo on the CPU, NCCL on GPUs) runs every case in turn and writes which passed to a JSON
file per rank; the tests read the files. One spawn per world size keeps the suite fast.

Accuracy cases compare each rank's rows with the float64 reference over the whole sequence
(helpers.reference); error cases check that every rank raises, none hangs, and the group is
still usable afterwards.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import traceback
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from forge_flash.distributed import context_parallel_attention, shard_sequence, unshard_sequence

from .reference import reference_attention


@dataclass(frozen=True)
class Case:
    name: str
    batch: int = 2
    chunk: int = 3  # tokens per zigzag chunk; the sequence is 2 * world * chunk long
    heads: int = 4
    heads_k: int = 2
    head_dim: int = 16
    dtype: str = "float32"
    causal: bool = False
    layout: str = "zigzag"
    gather: bool = False  # also all_gather the shards and unshard them
    scale: float | None = None


def cpu_cases() -> list[Case]:
    cases = [
        Case(f"{layout}-{'causal' if causal else 'full'}", causal=causal, layout=layout)
        for layout in ("zigzag", "contiguous")
        for causal in (False, True)
    ]
    cases += [
        Case("odd-head-dim-13-mqa", heads=3, heads_k=1, head_dim=13, causal=True),
        Case("head-dim-24-bf16", head_dim=24, dtype="bfloat16", causal=True, layout="contiguous"),
        Case("unshard", batch=1, chunk=2, causal=True, gather=True),
        Case("scale-0.3-contiguous", causal=True, layout="contiguous", scale=0.3),
    ]
    return cases


def gpu_cases() -> list[Case]:
    big = dict(batch=2, chunk=200, heads=8, heads_k=2)
    cases = [
        Case(
            f"bf16-d128-{layout}-{'causal' if causal else 'full'}",
            head_dim=128,
            dtype="bfloat16",
            causal=causal,
            layout=layout,
            **big,
        )
        for layout in ("zigzag", "contiguous")
        for causal in (False, True)
    ]
    cases += [
        Case("fp16-d64-causal", head_dim=64, dtype="float16", causal=True, **big),
        Case("bf16-d72-causal", head_dim=72, dtype="bfloat16", causal=True, **big),
        Case("fp16-d20-naive-path", head_dim=20, dtype="float16", causal=True, chunk=33),
        Case("unshard", head_dim=64, dtype="bfloat16", causal=True, gather=True, **big),
    ]
    return cases


ERROR_CASES = (
    "rejected-on-one-rank",
    "unequal-shards",
    "odd-zigzag-shard",
    "bad-layout",
    "checked-once-per-signature",
)
GPU_CHECKS = ("kernel-backend",)


@dataclass(frozen=True)
class Ring:
    """Where a case runs: a process group, this process's rank in it, its size, the device."""

    group: object
    rank: int
    world: int
    device: torch.device


def spawn(backend: str, nprocs: int, worlds: tuple[int, ...], tmp: Path) -> dict:
    """Start ``nprocs`` processes once and run every case in a group of each size in
    ``worlds``: the whole world, or a group of its last ranks (so group ranks differ from
    global ones). Returns {world: {case: {group rank: None if it passed, else why}}}."""
    mp.spawn(_rank_main, args=(nprocs, worlds, backend, str(tmp)), nprocs=nprocs, join=True)
    results: dict = {}
    for path in tmp.glob("world*-rank*.json"):
        world, rank = (int(part) for part in path.stem.replace("world", "").split("-rank"))
        for name, outcome in json.loads(path.read_text()).items():
            results.setdefault(world, {}).setdefault(name, {})[rank] = outcome
    return results


def _rank_main(rank: int, nprocs: int, worlds: tuple[int, ...], backend: str, tmp: str) -> None:
    if backend == "nccl":
        os.environ["NCCL_NVLS_ENABLE"] = "0"  # NVLink multicast stays off on these machines
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group(
        backend, init_method=f"file://{tmp}/store", rank=rank, world_size=nprocs,
        timeout=datetime.timedelta(seconds=120),
    )  # fmt: skip
    cases = cpu_cases() if backend != "nccl" else gpu_cases()
    for world in worlds:
        members = list(range(nprocs - world, nprocs))
        group = None if world == nprocs else dist.new_group(members)  # every process calls it
        if rank not in members:
            continue
        ring = Ring(group, dist.get_rank(group), world, device)
        results: dict[str, str | None] = {}
        for name in ERROR_CASES if backend != "nccl" else ERROR_CASES + GPU_CHECKS:
            results[name] = _outcome(_ERROR_CHECKS[name], ring)
        for case in cases:
            results[case.name] = _outcome(_check_accuracy, case, ring)
        Path(tmp, f"world{world}-rank{ring.rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def _outcome(check, *args) -> str | None:
    try:
        check(*args)
    except Exception:  # recorded for the test to report, with the traceback
        return traceback.format_exc()
    return None


def _inputs(case: Case, world: int, device: torch.device):
    """The whole sequence's q, k, v (the same on every rank: one seeded generator)."""
    gen = torch.Generator().manual_seed(zlib.crc32(case.name.encode()))
    seqlen = 2 * world * case.chunk
    dtype = getattr(torch, case.dtype)
    shapes = [(case.batch, seqlen, case.heads, case.head_dim)]
    shapes += [(case.batch, seqlen, case.heads_k, case.head_dim)] * 2
    return [torch.randn(s, generator=gen).to(device=device, dtype=dtype) for s in shapes]


def _check_accuracy(case: Case, ring: Ring) -> None:
    q, k, v = _inputs(case, ring.world, ring.device)
    shard = functools.partial(shard_sequence, layout=case.layout, rank=ring.rank, world=ring.world)
    shards = [shard(x) for x in (q, k, v)]
    options = dict(
        group=ring.group, causal=case.causal, layout=case.layout, softmax_scale=case.scale
    )
    # Every collective first, the same on every rank, so that a failed check on one rank
    # cannot leave the others waiting in a later case.
    out, lse = context_parallel_attention(*shards, **options, return_lse=True)
    only_out = context_parallel_attention(*shards, **options)
    gathered = [torch.empty_like(out) for _ in range(ring.world)]
    if case.gather:
        dist.all_gather(gathered, out.contiguous(), group=ring.group)

    assert out.dtype == q.dtype and out.shape == shards[0].shape, (out.dtype, out.shape)
    expected, expected_lse = reference_attention(q, k, v, causal=case.causal, scale=case.scale)
    _assert_close(out, shard(expected), q, k, v, case, shard)
    _assert_lse_close(lse, shard(expected_lse, dim=2))
    assert isinstance(only_out, torch.Tensor) and torch.equal(only_out, out), "return_lse=False"
    if case.gather:
        _assert_close(unshard_sequence(gathered, case.layout), expected, q, k, v, case, None)


def _assert_close(got, expected, q, k, v, case, shard) -> None:
    """The per-dtype tolerance of the CPU suite, on either device. Not the GPU kernel tests'
    2x-PyTorch bar: each ring step's partial comes back from the kernels in the input dtype
    (bf16: 2^-9 relative) and the merge adds those roundings, which one-pass attention never
    makes (H200, 2026-11-30: 6.1e-3 against PyTorch's 2.0e-3, inside bf16's 8e-3 + 1.6e-2 rel)."""
    from .tolerance import assert_close_to_reference

    assert_close_to_reference(got, expected.cpu(), got.dtype)


def _assert_lse_close(got, expected) -> None:
    from .tolerance import assert_lse_close

    assert_lse_close(got, expected.cpu())


# -- error cases: every rank must raise, none may hang ---------------------------------------


def _expect(error: type, start: str, call) -> None:
    try:
        call()
    except error as exc:
        assert str(exc).startswith(start), f"message {str(exc)!r} does not start with {start!r}"
        return
    raise AssertionError(f"no {error.__name__} raised")


def _small(ring: Ring, seqlen_shard: int = 4, dtype=torch.float32):
    q = torch.randn(1, seqlen_shard, 2, 8, device=ring.device, dtype=dtype)
    return q, torch.randn_like(q), torch.randn_like(q)


def _rejected_on_one_rank(ring: Ring) -> None:
    # The last rank passes float64 (not an attention dtype): every rank gets its TypeError.
    q, k, v = _small(ring, dtype=torch.float64 if ring.rank == ring.world - 1 else torch.float32)
    _expect(TypeError, "q must be", lambda: context_parallel_attention(q, k, v, group=ring.group))


def _unequal_shards(ring: Ring) -> None:
    q, k, v = _small(ring, seqlen_shard=2 if ring.rank == 0 else 4)
    _expect(
        ValueError, "q, k, v: every rank",
        lambda: context_parallel_attention(q, k, v, group=ring.group),
    )  # fmt: skip


def _odd_zigzag_shard(ring: Ring) -> None:
    q, k, v = _small(ring, seqlen_shard=3)
    _expect(
        ValueError, "q.shape[1] must be even",
        lambda: context_parallel_attention(q, k, v, group=ring.group),
    )  # fmt: skip
    # The contiguous layout takes any shard length: the group still works after the error.
    out = context_parallel_attention(q, k, v, group=ring.group, layout="contiguous", causal=True)
    assert out.shape == q.shape and torch.isfinite(out).all()


def _bad_layout(ring: Ring) -> None:
    q, k, v = _small(ring)
    _expect(
        ValueError, "layout must be",
        lambda: context_parallel_attention(q, k, v, group=ring.group, layout="x"),
    )  # fmt: skip


def _checked_once_per_signature(ring: Ring) -> None:
    q, k, v = _small(ring, seqlen_shard=6)
    real = dist.all_gather_object
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    dist.all_gather_object = counting
    try:
        first = context_parallel_attention(q, k, v, group=ring.group, causal=True)
        second = context_parallel_attention(q, k, v, group=ring.group, causal=True)
        # Another signature: checked again.
        context_parallel_attention(q, k, v, group=ring.group, causal=False)
    finally:
        dist.all_gather_object = real
    assert len(calls) == 2, f"{len(calls)} cross-rank checks for 2 signatures"
    assert torch.equal(first, second)


def _kernel_backend(ring: Ring) -> None:
    import forge_flash

    backend = forge_flash.active_backend().name
    assert backend == "cuda", f"the block attention ran on the {backend} backend, not the kernels"


_ERROR_CHECKS = {
    "kernel-backend": _kernel_backend,
    "rejected-on-one-rank": _rejected_on_one_rank,
    "unequal-shards": _unequal_shards,
    "odd-zigzag-shard": _odd_zigzag_shard,
    "bad-layout": _bad_layout,
    "checked-once-per-signature": _checked_once_per_signature,
}
