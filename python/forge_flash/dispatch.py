"""The one step between the entry points and the backends.

For every call: which backend runs it (``route``: the kernels when the active backend takes
the call, else the naive path, with the reason), and the sequence every entry point follows
(``attend``):

    signature -> a prepared call of that signature? run it from the data pointers
              -> else: validate (the call description) -> bind the tensors -> route
                 -> prepare the backend's launch, run it -> remember it for the signature

A call that falls back to the naive path says why on the ``forge_flash`` logger (debug level),
once per distinct reason; ``explain`` gives the same answer for a described call.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import NamedTuple

import torch

from . import call_cache
from .backends.base import Backend, PreparedRun
from .backends.naive import NAIVE
from .backends.padded import pad_head_dim
from .call import AttentionCall, AttentionTensors
from .discovery import active_backend, discovered_backend
from .validation import check_device_values, device_values_checked

log = logging.getLogger("forge_flash")
_logged_reasons: set[str] = set()

#: Turns the (checked) argument tensors of an entry point into the call's tensors, allocating
#: the outputs, and gives the value the entry point returns: ``bind(tensors, call, views,
#: new_out)``. Views and allocations only: a repeated call runs it with no validation before
#: it, and with ``views=False``: a prepared launch reads nothing but data pointers, so the
#: entry point may hand over its own tensors (the same memory) instead of the layout's views,
#: which cost a microsecond or more each. ``new_out(q)`` allocates the output: like q, with
#: contiguous strides. The call's tensors come as ``AttentionTensors``' fields in order, in a
#: plain tuple (see ``AttentionTensors``): the prepared launch takes them as they are.
NewOut = Callable[[torch.Tensor], torch.Tensor]
Bind = Callable[[tuple, AttentionCall, bool, NewOut], tuple[tuple, object]]

#: ``new_out`` in general. Where q's strides are the contiguous ones (a prepared call knows
#: that from its signature), plain ``torch.empty_like`` allocates the same tensor: 0.13 us
#: sooner on a decode step (CPU), the memory_format argument being what costs.
_EMPTY_CONTIGUOUS = functools.partial(torch.empty_like, memory_format=torch.contiguous_format)


def _contiguous_strides(x: torch.Tensor) -> bool:
    """Whether ``x``'s strides are exactly the contiguous ones, size-1 dimensions included
    (``is_contiguous`` does not look at those)."""
    step = 1
    for size, stride in zip(reversed(x.shape), reversed(x.stride()), strict=True):
        if stride != step:
            return False
        step *= max(size, 1)
    return True


#: Where the key counts are among ``AttentionTensors``' fields (the device values a repeated
#: call checks again).
_SEQUSED_K = AttentionTensors.__slots__.index("seqused_k")


class Route(NamedTuple):
    """The backend that runs a call, and why it is not the active one (None when it is)."""

    backend: Backend
    fallback_reason: str | None


def route(call: AttentionCall, backend: Backend | None = None) -> Route:
    """The active backend (or ``backend``) when it takes ``call``, else the naive path and
    the reason."""
    if backend is None:
        backend = active_backend()
    if backend is NAIVE:
        return Route(NAIVE, None)
    reason = backend.unsupported(call)
    if reason is None:
        return Route(backend, None)
    padded = pad_head_dim(backend, call)  # an odd head_dim: zero-padded copies on the kernels
    if padded is not None:
        return Route(padded, None)
    if reason not in _logged_reasons and len(_logged_reasons) < 256:
        _logged_reasons.add(reason)
        log.debug("forge_flash: naive path instead of %r: %s", backend.name, reason)
    return Route(NAIVE, reason)


def explain(call: AttentionCall) -> str:
    """Which backend runs ``call`` and, for the naive fallback, why."""
    backend, reason = route(call)
    return backend.name if reason is None else f"{backend.name} ({reason})"


def _prepared(
    call: AttentionCall, bind: Bind, launch: PreparedRun, q: torch.Tensor
) -> call_cache.Prepared:
    """A call signature's fast path: bind the new tensors, launch from their data pointers.

    A closure rather than an object with ``__call__``: calling it costs 0.04 us less, on
    every decode step.
    """

    new_out = torch.empty_like if _contiguous_strides(q) else _EMPTY_CONTIGUOUS

    def prepared(tensors: tuple) -> object | None:
        fields, result = bind(tensors, call, False, new_out)
        return result if launch(*fields) else None

    def checked(tensors: tuple) -> object | None:  # key counts checked on every call
        fields, result = bind(tensors, call, False, new_out)
        check_device_values(call, fields[_SEQUSED_K])
        return result if launch(*fields) else None

    # Device-value checks only where they may run: not with CUDA checks switched off.
    return checked if call.key_lengths and device_values_checked(call.device) else prepared


def attend(
    tensors: tuple,
    static: tuple,
    window: object,
    check: Callable[[tuple, tuple, object, Backend | None], AttentionCall],
    bind: Bind,
    backend: Backend | None = None,
    *,
    keep: bool = True,
) -> object:
    """Run one entry point's call (the sequence in the module docstring).

    ``tensors``: the entry point's tensor arguments (None for absent ones), in a fixed order
    that ``bind`` reads; ``static``: its name and its other arguments but the window;
    ``window``: its window_size (these three, with the tensors' layouts, are the call's
    signature); ``check(tensors, static, window, backend)``: validates all the entry point's
    arguments and describes the call (raising on bad input; a module-level function that
    unpacks them, not a closure: a closure over the entry point's locals costs every call a
    cell per local, about half a microsecond on a decode step); ``backend``: run there
    instead of on the active backend; ``keep``: remember the prepared call for the signature
    (not for calls whose checks read device values on every call anyway).

    A call that casts its inputs (float32 to the kernels' half precision) is not kept: which
    half dtype it takes depends on the values.
    """
    key = None
    if keep:
        key, prepared = call_cache.find(
            discovered_backend() if backend is None else backend, tensors, static, window
        )
        if prepared is not None:
            result = prepared(tensors)
            if result is not None:
                return result
    call = check(tensors, static, window, backend)
    fields, result = bind(tensors, call, True, _EMPTY_CONTIGUOUS)
    t = AttentionTensors(*fields)
    runner = route(call, backend).backend
    launch = runner.prepare(call, t)
    if launch is None or not launch(*fields):
        runner.run(call, t)
    if call_cache.needs_preparing(key):
        casts = call.dtype != tensors[0].dtype
        call_cache.remember(
            key, None if launch is None or casts else _prepared(call, bind, launch, tensors[0])
        )
    return result
