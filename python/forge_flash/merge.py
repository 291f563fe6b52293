"""Merging partial attention states: ``merge_attention_states``.

Attention of the same queries over disjoint key sets K_1, K_2, ... gives partial results
(out_i, lse_i); the attention over their union is, row by row,

    lse = log(sum_i exp(lse_i)),    out = sum_i exp(lse_i - lse) * out_i.

This is how split-KV decode, context parallelism (``forge_flash.distributed``) and cascade
(shared-prefix) attention put their pieces together. Cascade attention: a batch of requests
that share a long prompt prefix attends to the prefix once per request without copying it per
request (e.g. ``flash_attn_fwd`` with the queries of all requests folded into one batch row
against the single prefix K/V), and to each request's own suffix separately (its own KV
cache); both calls return their LSE, and one merge gives each request's attention over prefix
plus suffix. Causal masking belongs to the calls: the suffix call masks its own keys, the
prefix is wholly visible to every suffix query.

Semantics, on every backend:

* the sum runs in float32 (float64 when a part or ``out`` is float64), in part order, so the
  result is deterministic;
* a part whose LSE is -inf (it saw no key) weighs exactly 0 and its out is never read; a row
  where every part is -inf gets out 0 and LSE -inf;
* NaN propagates: a NaN LSE, or a NaN in the out of a part that is weighed, gives a NaN row;
* ``out`` and ``out_lse`` may be one of the parts (an in-place merge); nothing else the caller
  passed is written. The kernel path never allocates outside torch's caching allocator nor
  synchronises, so it can be captured in a CUDA graph.

Under ``torch.compile`` the merge is one custom op, ``torch.ops.forge_flash.merge_states``
(``forge_flash.ops`` says why; this module evaluates its annotations for the op's schema).
"""

import typing
from collections.abc import Sequence

import torch

from . import ops
from .backends.naive import NAIVE
from .discovery import active_backend

_OUT_LAYOUT = "(batch, seqlen, num_heads, head_dim)"
_LSE_LAYOUT = "(batch, num_heads, seqlen)"


def merge_attention_states(
    outs: Sequence[torch.Tensor] | torch.Tensor,
    lses: Sequence[torch.Tensor] | torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    out_lse: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge partial attention results of the same queries over disjoint key sets.

    Args:
        outs: the partial outputs, each (batch, seqlen, num_heads, head_dim) of any floating
            dtype (float32 keeps a running merge precise), all on one device; a sequence, or
            one tensor stacked along a new first dimension (read as views, not copied).
        lses: their float32 LSEs, each (batch, num_heads, seqlen), as ``flash_attn_fwd``
            returns them; a sequence, or one stacked tensor.
        out: optional tensor of the output's shape (any floating dtype) to write into; it may
            be one of ``outs``.
        out_lse: optional float32 tensor of the LSE's shape to write into; it may be one of
            ``lses``.

    Returns:
        ``(out, lse)``: the merged output (by default of the promoted dtype of ``outs``) and
        its float32 LSE.
    """
    if torch.compiler.is_compiling():  # one opaque op for Dynamo; out= receives a copy
        merged, merged_lse = torch.ops.forge_flash.merge_states(_listed(outs), _listed(lses))
        return ops.into_out(merged, merged_lse, out, True, out_lse)
    parts, part_lses, out, out_lse = _checked(outs, lses, out, out_lse)
    # The kernels where the active backend takes these parts, else the naive path.
    if not active_backend().merge_states(parts, part_lses, out, out_lse):
        NAIVE.merge_states(parts, part_lses, out, out_lse)
    return out, out_lse


def _checked(
    outs: object, lses: object, out: torch.Tensor | None, out_lse: torch.Tensor | None
) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """The parts and their LSEs as lists, checked, and the tensors to write the merge into
    (``out``/``out_lse``, checked, or new ones)."""
    parts = _check_parts("outs", outs, 4, _OUT_LAYOUT)
    part_lses = _check_parts("lses", lses, 3, _LSE_LAYOUT)
    first = parts[0]
    batch, seqlen, num_heads, _ = first.shape
    for i, x in enumerate(parts):
        _check_float(f"outs[{i}]", x)
        _check_placed(f"outs[{i}]", x, tuple(first.shape), first, "outs[0]")
    if len(part_lses) != len(parts):
        raise ValueError(
            f"lses must hold one LSE per partial output ({len(parts)}); got {len(part_lses)}"
        )
    lse_shape = (batch, num_heads, seqlen)
    for i, x in enumerate(part_lses):
        _check_float32(f"lses[{i}]", x)
        _check_placed(f"lses[{i}]", x, lse_shape, first, "outs[0]")
    if out is None:
        dtype = first.dtype
        for x in parts[1:]:
            dtype = torch.promote_types(dtype, x.dtype)
        out = torch.empty(first.shape, dtype=dtype, device=first.device)
    else:
        _check_tensor("out", out, 4, _OUT_LAYOUT)
        _check_float("out", out)
        _check_placed("out", out, tuple(first.shape), first, "outs[0]")
    if out_lse is None:
        out_lse = torch.empty(lse_shape, dtype=torch.float32, device=first.device)
    else:
        _check_tensor("out_lse", out_lse, 3, _LSE_LAYOUT)
        _check_float32("out_lse", out_lse)
        _check_placed("out_lse", out_lse, lse_shape, first, "outs[0]")
    return parts, part_lses, out, out_lse


# typing.List, not list[...]: torch 2.4's schema inference knows only typing's spelling.
_TensorList = typing.List[torch.Tensor]  # noqa: UP006


@ops.custom_op("forge_flash::merge_states")
def _merge_states_op(outs: _TensorList, lses: _TensorList) -> tuple[torch.Tensor, torch.Tensor]:
    return merge_attention_states(outs, lses)


@_merge_states_op.register_fake
def _(outs, lses):
    _, _, out, out_lse = _checked(outs, lses, None, None)  # the eager checks and allocation
    return out, out_lse


def _listed(parts: object) -> object:
    """Parts as the op takes them: a list (a stacked tensor's views); anything else is left
    for the eager checks to refuse."""
    return list(parts.unbind(0)) if isinstance(parts, torch.Tensor) else parts


# -- argument checks --------------------------------------------------------------------------


def _check_parts(name: str, parts: object, ndim: int, layout: str) -> list[torch.Tensor]:
    """The parts as a list of tensors: a sequence as given, a stacked tensor as its views."""
    if isinstance(parts, torch.Tensor):
        if parts.dim() != ndim + 1:
            raise ValueError(
                f"{name} as one tensor must have {ndim + 1} dimensions (parts, *{layout}); "
                f"got shape {tuple(parts.shape)}"
            )
        items = list(parts.unbind(0))
    elif isinstance(parts, Sequence) and not isinstance(parts, str | bytes):
        items = list(parts)
    else:
        raise TypeError(
            f"{name} must be a sequence of tensors or one stacked tensor; got "
            f"{type(parts).__name__}"
        )
    if not items:
        raise ValueError(f"{name} must hold at least one partial result; got none")
    for i, x in enumerate(items):
        _check_tensor(f"{name}[{i}]", x, ndim, layout)
    return items


def _check_tensor(name: str, x: object, ndim: int, layout: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}; got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions {layout}; got shape {tuple(x.shape)}")


def _check_float(name: str, x: torch.Tensor) -> None:
    if not x.dtype.is_floating_point:
        raise TypeError(f"{name} must have a floating-point dtype; got {x.dtype}")


def _check_float32(name: str, x: torch.Tensor) -> None:
    if x.dtype != torch.float32:
        raise TypeError(
            f"{name} must be float32 (an LSE as the entry points return it); got {x.dtype}"
        )


def _check_placed(
    name: str, x: torch.Tensor, shape: tuple[int, ...], ref: torch.Tensor, ref_name: str
) -> None:
    if tuple(x.shape) != shape:
        raise ValueError(f"{name} must have shape {shape} (from {ref_name}); got {tuple(x.shape)}")
    if x.device != ref.device:
        raise ValueError(
            f"{name} must be on the device of {ref_name} ({ref.device}); got {x.device}"
        )
