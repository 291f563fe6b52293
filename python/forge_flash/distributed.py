"""Context parallelism: attention over one long sequence sharded across the ranks of a
``torch.distributed`` process group (ring attention), forward only.

Every rank holds an equal shard of the sequence's tokens (the batch dimension is shared) and
gets back its own rows of the attention over the whole sequence. The K/V shards travel around
the ring: at step t a rank attends with its queries to the K/V shard of rank ``rank - t``
while sending the shard it holds to ``rank + 1`` and receiving the next from ``rank - 1``, so
each transfer runs under a block's attention; the partial results merge into a float32 running
state (``merge_attention_states``) and are rounded to the input dtype once, at the end.

Layouts (``shard_sequence`` / ``unshard_sequence`` convert):

* ``"contiguous"``: rank r holds chunk r of ``world`` equal chunks. Causal work is unbalanced:
  the last rank attends to every shard, the first to its own only.
* ``"zigzag"`` (default): the sequence is cut into ``2 * world`` chunks and rank r holds chunk
  r followed by chunk ``2 * world - 1 - r``; under a causal mask every rank then does the same
  work (its own shard causally, then half a shard's worth of full blocks per step).

Causal masking follows each block's global positions: a K/V chunk that lies wholly before a
query chunk is attended in full, the query chunk's own chunk causally (equal lengths, so
bottom-right and top-left agree), a later one not at all. The result equals single-device
attention over the whole sequence, bottom-right causal semantics included.

Transport: ``torch.distributed`` point-to-point operations (``batch_isend_irecv``), NCCL on
GPUs (it runs them on its own stream, overlapped with the attention on the current stream),
gloo on the CPU; any group torchrun creates, one process per GPU, on one host or many. With
NCCL, call ``torch.cuda.set_device(local_rank)`` first, as NCCL requires.

``torch.distributed`` is imported only when these functions run, so ``import forge_flash``
stays light.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .api import flash_attn_fwd
from .merge import merge_attention_states
from .validation import check_flag, check_fwd, check_int, resolve_scale

LAYOUTS = ("zigzag", "contiguous")
# The P2P transport each torch.distributed backend needs the tensors on.
_BACKEND_DEVICE = {"nccl": "cuda", "gloo": "cpu"}
# Call signatures already checked on every rank of their group (see _check_call).
_CHECKED: dict[tuple, float] = {}
_CHECKED_ENTRIES = 1024


def context_parallel_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    group: Any = None,
    causal: bool = False,
    softmax_scale: float | None = None,
    layout: str = "zigzag",
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """This rank's rows of the attention over a sequence sharded across ``group``.

    Args:
        q: (batch, seqlen_shard, num_heads, head_dim): this rank's query tokens, in ``layout``.
        k, v: (batch, seqlen_shard, num_heads_k, head_dim): the same tokens' keys and values.
        group: the ``torch.distributed`` process group (default: the world).
        causal: causal mask over the whole sequence's positions.
        softmax_scale: default ``head_dim ** -0.5``.
        layout: ``"zigzag"`` or ``"contiguous"`` (module docstring); zigzag needs an even
            ``seqlen_shard``.
        return_lse: also return the float32 LSE of these rows, (batch, num_heads, seqlen_shard).

    Every rank must call with the same shapes, dtype and options. This is checked (one small
    collective) the first time a rank sees a call signature; a rank whose arguments are
    rejected makes every rank raise the same error instead of hanging. Inputs follow the rules
    of ``flash_attn_fwd`` (dtype, device, GQA, head_dim).
    """
    import torch.distributed as dist

    rank, world = dist.get_rank(group), dist.get_world_size(group)
    scale = _check_call(
        dist, q, k, v, group, rank, world, causal, softmax_scale, layout, return_lse
    )
    with torch.no_grad():
        if q.numel() == 0:
            out = torch.zeros_like(q, memory_format=torch.contiguous_format)
            lse = torch.full((q.shape[0], q.shape[2], q.shape[1]), float("-inf"), device=q.device)
        else:
            exchange = _RingExchange(dist, group, rank, world)
            out, lse = _ring_attention(q, k, v, rank, world, causal, scale, layout, exchange)
    return (out, lse) if return_lse else out


def shard_sequence(
    x: torch.Tensor, layout: str, rank: int, world: int, dim: int = 1
) -> torch.Tensor:
    """Rank ``rank``'s shard of ``x`` along ``dim`` (a view for ``"contiguous"``, a copy for
    ``"zigzag"``). ``x.shape[dim]`` must divide into ``world`` (contiguous) or
    ``2 * world`` (zigzag) equal chunks."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    _check_layout(layout)
    world = check_int("world", world, 1)
    rank = check_int("rank", rank, 0)
    if rank >= world:
        raise ValueError(f"rank must be below world ({world}); got {rank}")
    dim = _check_dim(dim, x)
    chunk = x.shape[dim] // _check_chunks("x", x.shape[dim], dim, layout, world)
    if layout == "contiguous":
        return x.narrow(dim, rank * chunk, chunk)
    mirror = 2 * world - 1 - rank
    return torch.cat(
        [x.narrow(dim, rank * chunk, chunk), x.narrow(dim, mirror * chunk, chunk)], dim
    )


def unshard_sequence(shards: Sequence[torch.Tensor], layout: str, dim: int = 1) -> torch.Tensor:
    """The whole sequence from every rank's shard, given in rank order (e.g. from
    ``torch.distributed.all_gather``): the inverse of ``shard_sequence``."""
    if isinstance(shards, torch.Tensor | str) or not isinstance(shards, Sequence):
        raise TypeError(
            f"shards must be a sequence of tensors, one per rank in order; got "
            f"{type(shards).__name__}"
        )
    if not shards:
        raise ValueError("shards must hold one tensor per rank; got none")
    _check_layout(layout)
    for i, x in enumerate(shards):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"shards[{i}] must be a torch.Tensor; got {type(x).__name__}")
        if x.shape != shards[0].shape:
            raise ValueError(
                f"shards[{i}] must have the shape of shards[0] {tuple(shards[0].shape)}; "
                f"got {tuple(x.shape)}"
            )
    dim = _check_dim(dim, shards[0])
    if layout == "contiguous":
        return torch.cat(list(shards), dim)
    length = shards[0].shape[dim]
    if length % 2:
        raise ValueError(f"shards[0].shape[{dim}] must be even for the zigzag layout; got {length}")
    world = len(shards)
    chunks: list[torch.Tensor | None] = [None] * (2 * world)
    for rank, x in enumerate(shards):
        chunks[rank], chunks[2 * world - 1 - rank] = x.split(length // 2, dim)
    return torch.cat(chunks, dim)


# -- the ring ---------------------------------------------------------------------------------


def _block(rank: int, src: int, seqlen: int, causal: bool, layout: str):
    """Which of this rank's query rows attend to which rows of rank ``src``'s K/V shard, and
    whether causally: (query rows, key rows, causal), or None when no query sees a key.

    Chunks are of equal length, so a K/V chunk is wholly before a query chunk (full), the
    same chunk (causal), or after it (nothing). Zigzag: rank r holds chunks (r, 2W-1-r); with
    src < r both query chunks see src's first chunk in full and not its second; with src > r
    only the second query chunk sees anything, and it sees both of src's chunks in full.
    """
    every = slice(None)
    if not causal:
        return every, every, False
    if src == rank:
        return every, every, True
    if layout == "contiguous":
        return (every, every, False) if src < rank else None
    half = seqlen // 2
    if src < rank:
        return every, slice(0, half), False
    return slice(half, None), every, False


def _ring_attention(q, k, v, rank, world, causal, scale, layout, exchange):
    """Checked inputs -> (out in q's dtype, float32 lse) of this rank's rows. ``exchange``
    moves K/V around the ring (tools/bench_context_parallel.py swaps in one that does not,
    to time the attention alone)."""
    seqlen = q.shape[1]
    kv = torch.stack((k, v))  # one message per step; contiguous, as NCCL needs
    out = lse = None
    for step in range(world):
        pending = exchange.start(kv) if step + 1 < world else None
        block = _block(rank, (rank - step) % world, seqlen, causal, layout)
        if block is not None:
            rows, keys, block_causal = block
            part, part_lse = flash_attn_fwd(
                q[:, rows], kv[0][:, keys], kv[1][:, keys],
                softmax_scale=scale, causal=block_causal, return_lse=True,
            )  # fmt: skip
            if out is None:  # step 0, the rank's own shard, covers every row
                out, lse = part.float(), part_lse
            else:
                merge_attention_states(
                    [out[:, rows], part], [lse[:, :, rows], part_lse],
                    out=out[:, rows], out_lse=lse[:, :, rows],
                )  # fmt: skip
        if pending is not None:
            kv = pending.wait()
    return out.to(q.dtype), lse


class _RingExchange:
    """Sends a K/V shard to the next rank of the ring and receives the previous rank's."""

    def __init__(self, dist, group, rank: int, world: int) -> None:
        self._dist = dist
        self._group = group
        self._send_to = self._global_rank((rank + 1) % world)
        self._recv_from = self._global_rank((rank - 1) % world)

    def _global_rank(self, group_rank: int) -> int:
        if self._group is None:
            return group_rank
        return self._dist.get_global_rank(self._group, group_rank)

    def start(self, kv: torch.Tensor) -> _Transfer:
        received = torch.empty_like(kv)
        dist = self._dist
        works = dist.batch_isend_irecv(
            [
                dist.P2POp(dist.isend, kv, self._send_to, self._group),
                dist.P2POp(dist.irecv, received, self._recv_from, self._group),
            ]
        )
        return _Transfer(works, received, kv)


class _Transfer:
    __slots__ = ("_received", "_sent", "_works")

    def __init__(self, works, received: torch.Tensor, sent: torch.Tensor) -> None:
        self._works, self._received, self._sent = works, received, sent

    def wait(self) -> torch.Tensor:
        """The received shard. With NCCL this orders the current stream after the transfer
        (the host does not block); the sent buffer is kept alive until then."""
        for work in self._works:
            work.wait()
        self._sent = None
        return self._received


# -- checks -----------------------------------------------------------------------------------


def _check_call(dist, q, k, v, group, rank, world, causal, softmax_scale, layout, return_lse):
    """The resolved softmax scale, once every rank's arguments are known to be valid and to
    agree. The first call of a signature checks locally and then compares every rank's
    description of its call (one all_gather_object); later calls of it only look it up."""
    key = _signature(group, world, q, k, v, causal, softmax_scale, layout, return_lse)
    scale = _CHECKED.get(key) if key is not None else None
    if scale is not None:
        return scale
    error: Exception | None = None
    description = None
    try:
        scale, description = _check_local(dist, q, k, v, group, causal, softmax_scale, layout)
        check_flag("return_lse", return_lse)
    except (TypeError, ValueError) as exc:
        error = exc
    report = None if error is None else (type(error).__name__, str(error))
    gathered: list = [None] * world
    dist.all_gather_object(gathered, (report, description), group=group)
    if error is not None:
        raise error
    for other, (other_report, _) in enumerate(gathered):
        if other_report is not None:
            kind = TypeError if other_report[0] == "TypeError" else ValueError
            raise kind(f"{other_report[1]} (on rank {other} of the group)")
    for other, (_, other_description) in enumerate(gathered):
        if other_description != description:
            raise ValueError(
                "q, k, v: every rank must hold an equal shard of one sequence and pass the same "
                f"options; rank {rank} has {description}, rank {other} has {other_description}"
            )
    if key is not None:
        if len(_CHECKED) >= _CHECKED_ENTRIES:
            _CHECKED.clear()
        _CHECKED[key] = scale
    return scale


def _check_local(dist, q, k, v, group, causal, softmax_scale, layout):
    dims = check_fwd(q, k, v, None)
    scale = resolve_scale("softmax_scale", softmax_scale, dims.head_dim)
    check_flag("causal", causal)
    _check_layout(layout)
    if dims.seqlen_k != dims.seqlen_q:
        raise ValueError(
            f"k must hold the keys of q's tokens (seqlen {dims.seqlen_q}); got seqlen "
            f"{dims.seqlen_k}"
        )
    if layout == "zigzag" and dims.seqlen_q % 2:
        raise ValueError(
            f"q.shape[1] must be even for the zigzag layout (two chunks per rank); got "
            f"{dims.seqlen_q}"
        )
    backend = str(dist.get_backend(group))
    needed = _BACKEND_DEVICE.get(backend)
    if needed is not None and q.device.type != needed:
        raise ValueError(
            f"q must be on a {needed} device for a {backend} process group; got {q.device}"
        )
    description = (tuple(q.shape), tuple(k.shape), str(q.dtype), causal, scale, layout)
    return scale, description


def _signature(group, world, q, k, v, causal, softmax_scale, layout, return_lse):
    tensors = (q, k, v)
    if not all(isinstance(x, torch.Tensor) for x in tensors):
        return None
    layouts = tuple((x.shape, x.stride(), x.dtype, x.device) for x in tensors)
    options = (causal, softmax_scale, layout, return_lse)
    try:
        hash(options)
    except TypeError:
        return None
    return (id(group), world, layouts, *(type(o) for o in options), options)


def _check_layout(layout: object) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}; got {layout!r}")


def _check_dim(dim: object, x: torch.Tensor) -> int:
    dim = check_int("dim", dim, -x.dim())
    if dim >= x.dim():
        raise ValueError(f"dim must index a dimension of a {x.dim()}-d tensor; got {dim}")
    return dim % x.dim()


def _check_chunks(name: str, length: int, dim: int, layout: str, world: int) -> int:
    chunks = world if layout == "contiguous" else 2 * world
    if length % chunks:
        raise ValueError(
            f"{name}.shape[{dim}] must divide into {chunks} equal chunks for the {layout} "
            f"layout over {world} ranks; got {length}"
        )
    return chunks
