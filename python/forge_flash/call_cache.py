"""Repeated calls skip validation and planning: the prepared calls, kept per call signature.

An inference engine makes the same call (same shapes, strides, dtypes, devices and options,
new data) on every decode step of every layer. The first call of a signature is validated
and planned in full; the backend's prepared form of it (``Backend.prepare``) is then kept
under the signature, and later calls of that signature run from their data pointers alone.
Validation and planning read nothing that is not in the signature (device *values* such as
``cache_seqlens`` are not: their checks still run on every call), so a later call would pass
them exactly as the first did. A varlen call, whose checks of ``cu_seqlens`` feed its
validation, is kept only where those read no device values (``FORGE_FLASH_CHECK_DEVICE_VALUES=0``;
``api.flash_attn_varlen_fwd``).

The signature is built and looked up on every call, so it is the largest part of a decode
step's host time in the Python layer; ``find`` builds it as one tuple in one expression and
compares it with the last one found before hashing it (on CPU, for tools/lab/
python_overhead_ab.py's flash_attn_fwd call: 1.7 us, against 2.0 us for a key built as a list
extended per tensor in a loop, then hashed to look it up).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import torch

from .call import NO_WINDOW

#: Distinct signatures kept; the table is emptied when it fills (a new signature costs one
#: full call, so a workload that cycles through more shapes only loses the shortcut).
MAX_ENTRIES = 4096

#: A prepared call: given the call's tensor arguments, its result, or None when it cannot run
#: them (then the full path runs).
Prepared = Callable[[tuple], object]

_prepared: dict[tuple, Prepared | None] = {}
#: The last signature found with a prepared call, and that call (one tuple: a thread reads a
#: matching pair).
_last: tuple = ((), None)

_NOT_KEYED = (AttributeError, TypeError, ValueError, RuntimeError, NotImplementedError)
#: Where a key holds the options, and the kinds of option a kept key may hold.
_OPTIONS = 3
_VALUES = (numbers.Number, str, torch.dtype)


def find(
    backend: object | None, tensors: tuple, options: tuple, window: object = NO_WINDOW
) -> tuple[tuple | None, Prepared | None]:
    """The call's signature (its key) and its prepared call (None if there is none yet).

    The key: the backend, the window's two edges, each option's value and type, each
    tensor's type, shape, strides, dtype and device (None for an absent optional tensor).
    None when there is no backend yet (before discovery) or the arguments have no such key
    (not tensors; a window that is not a tuple of two ``int``: a bool, a float or a tensor
    equals an int in a key, but validation tells them apart or reads a tensor's value): those
    calls take the full path, whose checks say what is wrong. A key with an unhashable or
    mutable option finds nothing and is never kept (``needs_preparing``).
    """
    global _last
    if backend is None or window.__class__ is not tuple:
        return None, None
    try:
        left, right = window
        if left.__class__ is not int or right.__class__ is not int:
            return None, None
        # One flat tuple: options and their types side by side (True == 1 == 1.0 as values),
        # then one entry per tensor.
        key = (
            backend, left, right, options, *map(type, options),
            *[None if t is None else (t.__class__, t.shape, t.stride(), t.dtype, t.device)
              for t in tensors],
        )  # fmt: skip
    except _NOT_KEYED:
        return None, None
    try:
        # A decode loop repeats one signature (every layer's call alike): comparing with the
        # last one found skips hashing the key (0.45 us to look it up, 0.23 us to compare).
        last = _last
        if last[0] == key:
            return key, last[1]
        prepared = _prepared.get(key)
    except _NOT_KEYED:  # an unhashable option, or one that cannot be compared
        return key, None
    if prepared is not None:
        _last = (key, prepared)
    return key, prepared


def signature(
    backend: object | None, tensors: tuple, options: tuple, window: object = NO_WINDOW
) -> tuple | None:
    """The key of a call (see ``find``)."""
    return find(backend, tensors, options, window)[0]


def lookup(key: tuple | None) -> Prepared | None:
    """The prepared call of this signature, if there is one."""
    try:
        return None if key is None else _prepared.get(key)
    except TypeError:  # an unhashable option
        return None


def needs_preparing(key: tuple | None) -> bool:
    """Whether the full call that just ran should offer its prepared form for this key: not
    when an option is something whose value can change while it stays the same object (an
    index held in a tensor: validation reads it, a key compares the object)."""
    try:
        if key is None or key in _prepared:
            return False
    except TypeError:
        return False
    return all(o is None or isinstance(o, _VALUES) for o in key[_OPTIONS])


def remember(key: tuple, prepared: Prepared | None) -> None:
    """Keep ``prepared`` (None: this signature has no fast form) for later calls."""
    if len(_prepared) >= MAX_ENTRIES:
        _prepared.clear()
    _prepared[key] = prepared


def clear() -> None:
    """Forget every prepared call (tests; a backend change makes new keys anyway)."""
    global _last
    _prepared.clear()
    _last = ((), None)
