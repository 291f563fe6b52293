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

import logging
from collections.abc import Callable
from typing import NamedTuple

from . import call_cache
from .backends.base import Backend, PreparedRun
from .backends.naive import NAIVE
from .call import AttentionCall, AttentionTensors
from .discovery import active_backend, discovered_backend
from .validation import check_device_values, device_values_checked

log = logging.getLogger("forge_flash")
_logged_reasons: set[str] = set()

#: Turns the (checked) argument tensors of an entry point into the call's tensors, allocating
#: the outputs, and gives the value the entry point returns. Views and allocations only: a
#: repeated call runs it with no validation before it, and with ``views=False``: a prepared
#: launch reads nothing but data pointers, so the entry point may hand over its own tensors
#: (the same memory) instead of the layout's views, which cost a microsecond or more each.
Bind = Callable[[tuple, AttentionCall, bool], tuple[AttentionTensors, object]]


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
    if reason not in _logged_reasons and len(_logged_reasons) < 256:
        _logged_reasons.add(reason)
        log.debug("forge_flash: naive path instead of %r: %s", backend.name, reason)
    return Route(NAIVE, reason)


def explain(call: AttentionCall) -> str:
    """Which backend runs ``call`` and, for the naive fallback, why."""
    backend, reason = route(call)
    return backend.name if reason is None else f"{backend.name} ({reason})"


class _Prepared:
    """A call signature's fast path: bind the new tensors, re-check device values, launch."""

    __slots__ = ("bind", "call", "check", "launch")

    def __init__(self, call: AttentionCall, bind: Bind, launch: PreparedRun) -> None:
        self.call, self.bind, self.launch = call, bind, launch
        # Device-value checks only where they may run: not with CUDA checks switched off.
        checked = call.key_lengths and device_values_checked(call.device)
        self.check = check_device_values if checked else None

    def __call__(self, tensors: tuple) -> object | None:
        t, result = self.bind(tensors, self.call, False)
        if self.check is not None:
            self.check(self.call, t)
        return result if self.launch(t) else None


def attend(
    tensors: tuple,
    static: tuple,
    check: Callable[..., AttentionCall],
    arguments: tuple,
    bind: Bind,
    *,
    keep: bool = True,
    backend: Backend | None = None,
) -> object:
    """Run one entry point's call (the sequence in the module docstring).

    ``tensors``: the entry point's tensor arguments (None for absent ones), in a fixed order
    that ``bind`` reads; ``static``: its name and other arguments (with the tensors' layouts,
    the call's signature); ``check(*arguments)``: validates all the entry point's arguments
    and describes the call (raising on bad input; a module-level function and a tuple, not a
    closure: a closure over the entry point's locals costs every call a cell per local, about
    half a microsecond on a decode step); ``keep``: remember the prepared call for the
    signature (not for calls whose checks read device values on every call anyway);
    ``backend``: run there instead of on the active backend.

    A call that casts its inputs (float32 to the kernels' half precision) is not kept: which
    half dtype it takes depends on the values.
    """
    key = None
    if keep:
        key = call_cache.signature(backend or discovered_backend(), tensors, static)
    prepared = call_cache.lookup(key)
    if prepared is not None:
        result = prepared(tensors)
        if result is not None:
            return result
    call = check(*arguments)
    t, result = bind(tensors, call, True)
    runner = route(call, backend).backend
    launch = runner.prepare(call, t)
    if launch is None or not launch(t):
        runner.run(call, t)
    if call_cache.needs_preparing(key):
        casts = call.dtype != tensors[0].dtype
        call_cache.remember(key, None if launch is None or casts else _Prepared(call, bind, launch))
    return result
