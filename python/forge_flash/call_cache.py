"""Repeated calls skip validation and planning: the prepared calls, kept per call signature.

An inference engine makes the same call (same shapes, strides, dtypes, devices and options,
new data) on every decode step of every layer. The first call of a signature is validated
and planned in full; the backend's prepared form of it (``Backend.prepare``) is then kept
under the signature, and later calls of that signature run from their data pointers alone.
Validation and planning read nothing that is not in the signature (device *values* such as
``cache_seqlens`` are not: their checks still run on every call), so a later call would pass
them exactly as the first did.
"""

from __future__ import annotations

from collections.abc import Callable

#: Distinct signatures kept; the table is emptied when it fills (a new signature costs one
#: full call, so a workload that cycles through more shapes only loses the shortcut).
MAX_ENTRIES = 4096

#: A prepared call: given the call's tensor arguments, its result, or None when it cannot run
#: them (then the full path runs).
Prepared = Callable[[tuple], object]

_prepared: dict[tuple, Prepared | None] = {}


def signature(backend: object | None, tensors: tuple, options: tuple) -> tuple | None:
    """The key of a call: the backend, each tensor's type, shape, strides, dtype and device
    (None for an absent optional tensor), each option's type and value. None when there is
    no backend yet (before discovery) or the arguments have no such key (not tensors, an
    unhashable option): those calls take the full path, whose checks say what is wrong."""
    if backend is None:
        return None
    key = [backend, options, tuple(map(type, options))]
    try:
        for t in tensors:
            key += (
                (t.__class__, t.shape, t.stride(), t.dtype, t.device) if t is not None else (None,)
            )
    except (AttributeError, TypeError, RuntimeError, NotImplementedError):
        return None
    return tuple(key)


def lookup(key: tuple | None) -> Prepared | None:
    """The prepared call of this signature, if there is one."""
    try:
        return None if key is None else _prepared.get(key)
    except TypeError:  # an unhashable option
        return None


def needs_preparing(key: tuple | None) -> bool:
    """Whether the full call that just ran should offer its prepared form for this key."""
    try:
        return key is not None and key not in _prepared
    except TypeError:
        return False


def remember(key: tuple, prepared: Prepared | None) -> None:
    """Keep ``prepared`` (None: this signature has no fast form) for later calls."""
    if len(_prepared) >= MAX_ENTRIES:
        _prepared.clear()
    _prepared[key] = prepared


def clear() -> None:
    """Forget every prepared call (tests; a backend change makes new keys anyway)."""
    _prepared.clear()
