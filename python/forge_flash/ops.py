"""The entry points as ``torch.library`` custom ops, for ``torch.compile`` and ``torch.export``.

Dynamo cannot trace into the entry points: the backend choice, the host-side value checks and
the plugin's pointer-level binding are not tensor programs. Each entry point is therefore one
opaque op in the graph (``torch.ops.forge_flash.*``) whose fake (meta) implementation gives
the output shapes, so ``torch.compile(fullgraph=True)`` of model code that calls forge-flash
compiles without graph breaks. At run time the op calls the eager entry point, so the compiled
graph gets exactly the eager behaviour (validation, backend choice, naive fallback).

The public functions take this route only while Dynamo traces them
(``torch.compiler.is_compiling()``): calling a custom op from Python costs about 10 us
(dispatcher, boxing, aliasing checks; measured on CPU), half the budget of a whole decode
call, so eager calls go straight to the implementation.

``out=`` has no place in a functional op: under compilation the result is copied into it.

This module alone has no ``from __future__ import annotations``: torch 2.4's schema inference
reads the ops' annotations as they are and rejects strings (``import forge_flash`` failed).
"""

import torch

# Custom op schemas take no torch.dtype on every torch this package supports (>= 2.4):
# the cast dtype travels by name.
_CAST_NAMES = {None: None, torch.float16: "float16", torch.bfloat16: "bfloat16"}
_CAST_DTYPES = {None: None, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _no_lse(q: torch.Tensor) -> torch.Tensor:
    # Ops return a fixed number of tensors; an empty LSE stands for "not requested".
    return torch.empty((0,), dtype=torch.float32, device=q.device)


# -- flash_attn_fwd -------------------------------------------------------------------------


@torch.library.custom_op("forge_flash::fwd", mutates_args=())
def _fwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    softmax_scale: float | None,
    causal: bool,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    from .api import flash_attn_fwd

    if return_lse:
        return flash_attn_fwd(q, k, v, softmax_scale=softmax_scale, causal=causal, return_lse=True)
    return flash_attn_fwd(q, k, v, softmax_scale=softmax_scale, causal=causal), _no_lse(q)


@_fwd_op.register_fake
def _fwd_fake(q, k, v, softmax_scale, causal, return_lse):
    batch, seqlen_q, num_heads, _ = q.shape
    lse_shape = (batch, num_heads, seqlen_q) if return_lse else (0,)
    return q.new_empty(q.shape), q.new_empty(lse_shape, dtype=torch.float32)


def flash_attn_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    softmax_scale: float | None,
    causal: bool,
    out: torch.Tensor | None,
    return_lse: bool,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``forge_flash.flash_attn_fwd`` through the custom op (what Dynamo records)."""
    result, lse = torch.ops.forge_flash.fwd(q, k, v, softmax_scale, causal, return_lse)
    return _into_out(result, lse, out, return_lse)


def _into_out(
    result: torch.Tensor, lse: torch.Tensor, out: torch.Tensor | None, return_lse: bool
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The public return value from an op's (result, lse): custom ops cannot write into a
    caller's tensor, so a given ``out`` receives a copy."""
    if out is not None:
        out.copy_(result)
        result = out
    return (result, lse) if return_lse else result


# -- flash_attn_varlen_fwd ------------------------------------------------------------------


@torch.library.custom_op("forge_flash::varlen_fwd", mutates_args=())
def _varlen_fwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float | None,
    causal: bool,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    from .api import flash_attn_varlen_fwd

    result = flash_attn_varlen_fwd(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
        softmax_scale=softmax_scale, causal=causal, return_lse=return_lse,
    )  # fmt: skip
    return result if return_lse else (result, _no_lse(q))


@_varlen_fwd_op.register_fake
def _varlen_fwd_fake(
    q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal,
    return_lse,
):  # fmt: skip
    total_q, num_heads, _ = q.shape
    lse_shape = (num_heads, total_q) if return_lse else (0,)
    return q.new_empty(q.shape), q.new_empty(lse_shape, dtype=torch.float32)


def flash_attn_varlen_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    softmax_scale: float | None,
    causal: bool,
    out: torch.Tensor | None,
    return_lse: bool,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``forge_flash.flash_attn_varlen_fwd`` through the custom op."""
    result, lse = torch.ops.forge_flash.varlen_fwd(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale, causal,
        return_lse,
    )  # fmt: skip
    return _into_out(result, lse, out, return_lse)


# -- batched_decode_attention ---------------------------------------------------------------


@torch.library.custom_op("forge_flash::batched_decode", mutates_args=())
def _batched_decode_op(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    softmax_scale: float | None,
    return_lse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    from .api import batched_decode_attention

    result = batched_decode_attention(
        q, k_cache, v_cache, cache_seqlens, softmax_scale=softmax_scale, return_lse=return_lse
    )
    return result if return_lse else (result, _no_lse(q))


@_batched_decode_op.register_fake
def _batched_decode_fake(q, k_cache, v_cache, cache_seqlens, softmax_scale, return_lse):
    batch, num_heads, _ = q.shape
    lse_shape = (batch, num_heads) if return_lse else (0,)
    return q.new_empty(q.shape), q.new_empty(lse_shape, dtype=torch.float32)


def batched_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    softmax_scale: float | None,
    return_lse: bool,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``forge_flash.batched_decode_attention`` through the custom op."""
    result, lse = torch.ops.forge_flash.batched_decode(
        q, k_cache, v_cache, cache_seqlens, softmax_scale, return_lse
    )
    return (result, lse) if return_lse else result


# -- attention_fwd and multi_head_attention (flat projections) ------------------------------


def _flat_fake(q, k, v, num_heads, num_kv_heads, head_dim, scale, is_causal, cast_dtype):
    # The result has q's layout and dtype (float32 comes back as float32 after the cast).
    return q.new_empty(q.shape)


def _cast_name(cast_dtype: torch.dtype | None) -> str | None:
    try:
        return _CAST_NAMES[cast_dtype]
    except (KeyError, TypeError):
        # The eager checks own the message; trace-time arguments are Python constants.
        from .validation import check_cast_dtype

        check_cast_dtype(cast_dtype)
        raise


def _flat_entry(name: str):
    """The op ``forge_flash::<name>`` over ``forge_flash.layers.<name>`` (the two flat-projection
    entry points share one signature), and the function that calls it with a torch.dtype."""

    def implementation(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        scale: float | None,
        is_causal: bool,
        cast_dtype: str | None,
    ) -> torch.Tensor:
        from . import layers

        return getattr(layers, name)(
            q, k, v, num_heads, num_kv_heads, head_dim, scale, is_causal,
            cast_dtype=_CAST_DTYPES[cast_dtype],
        )  # fmt: skip

    op = torch.library.custom_op(f"forge_flash::{name}", implementation, mutates_args=())
    op.register_fake(_flat_fake)

    def call(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        scale: float | None,
        is_causal: bool,
        cast_dtype: torch.dtype | None,
    ) -> torch.Tensor:
        return getattr(torch.ops.forge_flash, name)(
            q, k, v, num_heads, num_kv_heads, head_dim, scale, is_causal, _cast_name(cast_dtype)
        )

    call.__doc__ = f"``forge_flash.{name}`` through the custom op."
    return call


attention_fwd = _flat_entry("attention_fwd")
multi_head_attention = _flat_entry("multi_head_attention")
