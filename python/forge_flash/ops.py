"""What the entry points' ``torch.library`` custom ops share (``torch.compile``, ``torch.export``).

Dynamo cannot trace into the entry points: the backend choice, the host-side value checks and
the plugin's pointer-level binding are not tensor programs. Each entry point is therefore one
opaque op in the graph (``torch.ops.forge_flash.*``), defined beside the entry point it runs
(``forge_flash.api``, ``forge_flash.projections``), whose fake (meta) implementation gives the
output shapes, so ``torch.compile(fullgraph=True)`` of model code that calls forge-flash
compiles without graph breaks. At run time the op calls the eager entry point, so the compiled
graph gets exactly the eager behaviour (validation, backend choice, naive fallback).

The public functions take this route only while Dynamo traces them
(``torch.compiler.is_compiling()``): calling a custom op from Python costs about 10 us
(dispatcher, boxing, aliasing checks; measured on CPU), half the budget of a whole decode
call, so eager calls go straight to the implementation.

``out=`` has no place in a functional op: under compilation the result is copied into it.
Modules that define ops evaluate their annotations (no ``from __future__ import
annotations``): torch 2.4's schema inference reads them as they are and rejects strings.
"""

import torch

from .validation import Options, check_window


def custom_op(name: str, mutates_args: tuple[str, ...] = ()):
    """``torch.library.custom_op`` for a forge_flash op: functional, or writing in place into
    the arguments ``mutates_args`` names (``with_kvcache``'s caches)."""
    return torch.library.custom_op(name, mutates_args=mutates_args)


def option_args(options: Options) -> tuple:
    """The shared options as op arguments: window edges, softcap, ALiBi slopes, sinks. A
    malformed window raises here with the eager message (ops take ints, not pairs)."""
    left, right = check_window(options.window_size, False)
    return (left, right, options.softcap, options.alibi_slopes, options.sinks)


def no_lse(q: torch.Tensor) -> torch.Tensor:
    """Ops return a fixed number of tensors; an empty LSE stands for "not requested"."""
    return torch.empty((0,), dtype=torch.float32, device=q.device)


def with_lse(result, return_lse: bool, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An entry point's result as an op's (out, lse) pair."""
    return result if return_lse else (result, no_lse(q))


def fake_outputs(
    q: torch.Tensor, lse_shape: tuple, return_lse: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """What an op returns, as shapes: out like q, the LSE (or an empty one)."""
    return q.new_empty(q.shape), q.new_empty(lse_shape if return_lse else (0,), dtype=torch.float32)


def into_out(
    result: torch.Tensor,
    lse: torch.Tensor,
    out: torch.Tensor | None,
    return_lse: bool,
    out_lse: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The public return value from an op's (result, lse): custom ops cannot write into a
    caller's tensor, so a given ``out`` (and ``out_lse``) receives a copy."""
    if out is not None:
        out.copy_(result)
        result = out
    if out_lse is not None:
        out_lse.copy_(lse)
        lse = out_lse
    return (result, lse) if return_lse else result


# Custom op schemas take no torch.dtype on every torch this package supports (>= 2.4):
# the cast dtype travels by name.
CAST_NAMES = {None: None, torch.float16: "float16", torch.bfloat16: "bfloat16"}
CAST_DTYPES = {None: None, "float16": torch.float16, "bfloat16": torch.bfloat16}
