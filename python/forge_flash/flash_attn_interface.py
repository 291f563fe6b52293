"""FlashAttention-2's Python API on forge-flash: ``from forge_flash import flash_attn_interface``.

The seven functions of ``flash_attn.flash_attn_interface`` with the same parameter names,
defaults, shapes, return values and semantics, so engine code written against
FlashAttention-2 runs unchanged with::

    from forge_flash import flash_attn_interface as flash_attn

What differs: forge-flash computes the forward pass only.

* ``dropout_p > 0`` raises ``NotImplementedError`` (dropout is a training feature);
  ``dropout_p=0.0``, what inference passes, works.
* No backward: the outputs carry no autograd graph. ``deterministic`` is accepted and changes
  nothing (it selects FlashAttention-2's backward; every forward here is deterministic).
* ``return_attn_probs=True`` returns ``(out, softmax_lse, S_dmask)`` where ``S_dmask`` is an
  empty tensor, shape (0,), of q's dtype: exactly what FlashAttention-2 returns whenever
  ``dropout_p == 0`` (it fills that tensor only under dropout, for its own tests).
* Bad arguments raise forge-flash's errors, which name the argument, what it got and what is
  needed; here each is also a ``RuntimeError`` (``ArgumentError``, ``ArgumentTypeError``), the
  class FlashAttention-2's checks raise, so handlers written for either catch it.
* An extension: every function also takes a keyword-only ``sinks``, float32 (nheads,), a
  logit per query head that joins every row's softmax denominator once (gpt-oss's attention
  sinks; ``forge_flash.flash_attn_fwd`` defines it). FlashAttention-2 has no such argument, so
  code written for it never passes one.

Conventions are FlashAttention-2's and forge-flash's alike: causal and window masks aligned
bottom-right, query i sees key j iff ``i + sk - sq - left <= j <= i + sk - sq + right``;
ALiBi adds ``-slope * |i + sk - sq - j|``; GQA when k/v have fewer heads; the LSE is float32,
(batch, nheads, seqlen_q) or (nheads, total_q) for the varlen functions. With ALiBi and
``causal=True`` FlashAttention-2's kernel adds the bias in a row-shifted form: outputs agree,
its ``softmax_lse`` differs from this one (the logsumexp of the scores as defined above) by a
constant per row.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable
from typing import TypeVar

import torch

from . import api, kvcache
from .validation import check_flag

__all__ = [  # FlashAttention-2's seven functions; the error classes are attributes too
    "flash_attn_func",
    "flash_attn_kvpacked_func",
    "flash_attn_qkvpacked_func",
    "flash_attn_varlen_func",
    "flash_attn_varlen_kvpacked_func",
    "flash_attn_varlen_qkvpacked_func",
    "flash_attn_with_kvcache",
]

Result = torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]
Function = TypeVar("Function", bound=Callable)


class ArgumentError(ValueError, RuntimeError):
    """A bad argument value: a ``ValueError`` as forge-flash raises everywhere, and a
    ``RuntimeError`` as FlashAttention-2 raises (its checks are ``TORCH_CHECK``s)."""


class ArgumentTypeError(TypeError, RuntimeError):
    """A bad argument type: a ``TypeError``, and a ``RuntimeError`` as in FlashAttention-2."""


def _flash_attn_errors(function: Function) -> Function:
    """``function`` with its ValueErrors and TypeErrors raised again as the classes above, same
    message, so that code written against FlashAttention-2 (``except RuntimeError``, or its
    tests' ``pytest.raises(RuntimeError, match="block_table")``) catches them too."""

    @functools.wraps(function)
    def checked(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (ValueError, TypeError) as error:
            if isinstance(error, RuntimeError):  # already one (raised by an inner function)
                raise
            kind = ArgumentTypeError if isinstance(error, TypeError) else ArgumentError
            raise kind(str(error)) from error

    return checked  # type: ignore[return-value]


@_flash_attn_errors
def flash_attn_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    *,
    sinks: torch.Tensor | None = None,
) -> Result:
    """Attention over equal-length sequences.

    q (batch, seqlen_q, nheads, headdim), k/v (batch, seqlen_k, nheads_k, headdim), nheads a
    multiple of nheads_k. Returns out (batch, seqlen_q, nheads, headdim), or
    ``(out, softmax_lse (batch, nheads, seqlen_q), S_dmask (empty))`` with
    ``return_attn_probs``. See the module docstring for the options.
    """
    _check_training_options(dropout_p, deterministic, return_attn_probs)
    result = api.flash_attn_fwd(
        q, k, v, softmax_scale=softmax_scale, causal=causal, return_lse=return_attn_probs,
        **_active_options(window_size, softcap, alibi_slopes, sinks),
    )  # fmt: skip
    return _fa2_result(result, q, return_attn_probs)


@_flash_attn_errors
def flash_attn_qkvpacked_func(
    qkv: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    *,
    sinks: torch.Tensor | None = None,
) -> Result:
    """``flash_attn_func`` on qkv (batch, seqlen, 3, nheads, headdim), split without copying."""
    q, k, v = _unpack("qkv", qkv, 5, 3, "(batch, seqlen, 3, nheads, headdim)")
    return flash_attn_func(
        q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
        deterministic, return_attn_probs, sinks=sinks,
    )  # fmt: skip


@_flash_attn_errors
def flash_attn_kvpacked_func(
    q: torch.Tensor,
    kv: torch.Tensor,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    *,
    sinks: torch.Tensor | None = None,
) -> Result:
    """``flash_attn_func`` with kv (batch, seqlen_k, 2, nheads_k, headdim), split without
    copying."""
    k, v = _unpack("kv", kv, 5, 2, "(batch, seqlen_k, 2, nheads_k, headdim)")
    return flash_attn_func(
        q, k, v, dropout_p, softmax_scale, causal, window_size, softcap, alibi_slopes,
        deterministic, return_attn_probs, sinks=sinks,
    )  # fmt: skip


@_flash_attn_errors
def flash_attn_varlen_func(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    block_table: torch.Tensor | None = None,
    *,
    sinks: torch.Tensor | None = None,
) -> Result:
    """Attention over sequences packed along one dimension.

    q (total_q, nheads, headdim), k/v (total_k, nheads_k, headdim); int32 ``cu_seqlens_q``/
    ``cu_seqlens_k`` (batch + 1,). With ``block_table`` (int32 (batch, max_blocks)), k/v are
    paged caches (num_blocks, page_size, nheads_k, headdim) and sequence b has
    ``cu_seqlens_k[b + 1] - cu_seqlens_k[b]`` keys. Returns out (total_q, nheads, headdim), or
    ``(out, softmax_lse (nheads, total_q), S_dmask (empty))`` with ``return_attn_probs``.
    """
    _check_training_options(dropout_p, deterministic, return_attn_probs)
    options = _active_options(window_size, softcap, alibi_slopes, sinks)
    if block_table is not None:
        options["block_table"] = block_table
    result = api.flash_attn_varlen_fwd(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
        softmax_scale=softmax_scale, causal=causal, return_lse=return_attn_probs, **options,
    )  # fmt: skip
    return _fa2_result(result, q, return_attn_probs)


@_flash_attn_errors
def flash_attn_varlen_qkvpacked_func(
    qkv: torch.Tensor,
    cu_seqlens: torch.Tensor,
    max_seqlen: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    *,
    sinks: torch.Tensor | None = None,
) -> Result:
    """``flash_attn_varlen_func`` on qkv (total, 3, nheads, headdim): queries and keys share
    ``cu_seqlens`` and ``max_seqlen``."""
    q, k, v = _unpack("qkv", qkv, 4, 3, "(total, 3, nheads, headdim)")
    return flash_attn_varlen_func(
        q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout_p, softmax_scale,
        causal, window_size, softcap, alibi_slopes, deterministic, return_attn_probs,
        sinks=sinks,
    )  # fmt: skip


@_flash_attn_errors
def flash_attn_varlen_kvpacked_func(
    q: torch.Tensor,
    kv: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    dropout_p: float = 0.0,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = (-1, -1),
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    deterministic: bool = False,
    return_attn_probs: bool = False,
    *,
    sinks: torch.Tensor | None = None,
) -> Result:
    """``flash_attn_varlen_func`` with kv (total_k, 2, nheads_k, headdim), split without
    copying."""
    k, v = _unpack("kv", kv, 4, 2, "(total_k, 2, nheads_k, headdim)")
    return flash_attn_varlen_func(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p,
        softmax_scale, causal, window_size, softcap, alibi_slopes, deterministic,
        return_attn_probs, sinks=sinks,
    )  # fmt: skip


def _check_training_options(dropout_p: object, deterministic: object, attn_probs: object) -> None:
    """The training-only arguments: dropout is refused, ``deterministic`` changes nothing."""
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real):
        raise TypeError(
            f"dropout_p must be a float; got {dropout_p!r} ({type(dropout_p).__name__})"
        )
    if not (math.isfinite(float(dropout_p)) and 0.0 <= dropout_p < 1.0):
        raise ValueError(f"dropout_p must lie in [0, 1); got {dropout_p}")
    if dropout_p > 0.0:
        raise NotImplementedError(
            f"dropout_p = {dropout_p}: dropout is not implemented (forge-flash computes the "
            "forward pass only, for inference); pass dropout_p=0.0"
        )
    check_flag("deterministic", deterministic)
    check_flag("return_attn_probs", attn_probs)


def _active_options(
    window_size: object, softcap: object, alibi_slopes: object, sinks: object
) -> dict[str, object]:
    """The variant options that are switched on; off values are left to the entry point's
    defaults (which mean the same: no window, no softcap, no ALiBi, no sinks)."""
    options: dict[str, object] = {}
    if not (isinstance(window_size, (tuple, list)) and tuple(window_size) == (-1, -1)):
        options["window_size"] = window_size
    if isinstance(softcap, bool) or not (isinstance(softcap, numbers.Real) and softcap == 0.0):
        options["softcap"] = softcap
    if alibi_slopes is not None:
        options["alibi_slopes"] = alibi_slopes
    if sinks is not None:
        options["sinks"] = sinks
    return options


def _unpack(
    name: str, packed: object, ndim: int, parts: int, layout: str
) -> tuple[torch.Tensor, ...]:
    """Views of the ``parts`` tensors stacked in dimension ``ndim - 3`` (no copy)."""
    if not isinstance(packed, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}; got {type(packed).__name__}")
    if packed.dim() != ndim or packed.shape[ndim - 3] != parts:
        raise ValueError(f"{name} must have shape {layout}; got {tuple(packed.shape)}")
    return packed.unbind(ndim - 3)


def _fa2_result(
    result: torch.Tensor | tuple[torch.Tensor, torch.Tensor], q: torch.Tensor, attn_probs: bool
) -> Result:
    """``out``, or FlashAttention-2's ``(out, softmax_lse, S_dmask)``: without dropout its
    S_dmask is an empty tensor of q's dtype."""
    if not attn_probs:
        return result
    out, lse = result
    return out, lse, torch.empty((0,), dtype=q.dtype, device=q.device)


flash_attn_with_kvcache = _flash_attn_errors(kvcache.flash_attn_with_kvcache)
