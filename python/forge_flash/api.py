"""The FlashAttention-style entry points on per-head tensors.

Conventions, identical on every backend:

* causal masks are aligned bottom-right: query row i sees key j iff
  ``j <= i + seqlen_k - seqlen_q`` (the last query row sees every key);
* the default softmax scale is ``head_dim ** -0.5``;
* the LSE is float32 natural-log logsumexp of the scaled scores, shaped
  ``(batch, num_heads, seqlen_q)`` for ``flash_attn_fwd``, ``(num_heads, total_q)`` for the
  varlen entry point and ``(batch, num_heads)`` for ``batched_decode_attention``;
* a query row that sees no key gives output 0 and LSE -inf; seqlen 0 and empty batches work;
* GQA/MQA: ``num_heads_k`` divides ``num_heads``; query head h reads KV head
  ``h // (num_heads // num_heads_k)``;
* inputs are never modified; ``out=`` receives the result when given.

A call whose signature (shapes, strides, dtypes, devices, options) was seen before skips
validation and planning (``forge_flash.call_cache``): a decode loop pays them once.
"""

from __future__ import annotations

import torch

from . import call_cache, ops
from .discovery import active_backend, discovered_backend
from .validation import (
    check_cache_seqlens_values,
    check_decode,
    check_flag,
    check_fwd,
    check_varlen,
    resolve_scale,
)


def flash_attn_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    softmax_scale: float | None = None,
    causal: bool = False,
    out: torch.Tensor | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention forward for a batch of equal-length sequences.

    Args:
        q: (batch, seqlen_q, num_heads, head_dim), float16/bfloat16/float32, head_dim <= 256.
        k, v: (batch, seqlen_k, num_heads_k, head_dim), same dtype and device as q.
        softmax_scale: multiplies q·k; default ``head_dim ** -0.5``.
        causal: bottom-right aligned causal mask.
        out: optional (batch, seqlen_q, num_heads, head_dim) tensor to write the result into.
        return_lse: also return the float32 LSE, (batch, num_heads, seqlen_q).

    Returns:
        ``out``, or ``(out, lse)`` when ``return_lse``.
    """
    if torch.compiler.is_compiling():  # one opaque op for Dynamo (see forge_flash.ops)
        return ops.flash_attn_fwd(q, k, v, softmax_scale, causal, out, return_lse)
    key = call_cache.signature(
        discovered_backend(), (q, k, v, out), (softmax_scale, causal, return_lse)
    )
    prepared = call_cache.lookup(key)
    if prepared is not None:
        result = out if out is not None else torch.empty_like(q, memory_format=_CONTIGUOUS)
        lse = _lse_like(q, (q.shape[0], q.shape[2], q.shape[1])) if return_lse else None
        if prepared(q, k, v, result, lse, None):
            return (result, lse) if return_lse else result
    dims = check_fwd(q, k, v, out)
    scale = resolve_scale("softmax_scale", softmax_scale, dims.head_dim)
    check_flag("causal", causal)
    check_flag("return_lse", return_lse)
    backend = active_backend()
    if out is None:
        out = torch.empty_like(q, memory_format=_CONTIGUOUS)
    lse = _lse_like(q, (dims.batch, dims.num_heads, dims.seqlen_q)) if return_lse else None
    backend.fwd(q, k, v, out, lse, softmax_scale=scale, causal=causal)
    if call_cache.needs_preparing(key):
        call_cache.remember(
            key, backend.prepare_fwd(q, k, v, out, lse, softmax_scale=scale, causal=causal)
        )
    return (out, lse) if lse is not None else out


def flash_attn_varlen_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    *,
    softmax_scale: float | None = None,
    causal: bool = False,
    out: torch.Tensor | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention forward for sequences of different lengths packed along one dimension.

    Sequence b owns query rows ``cu_seqlens_q[b]:cu_seqlens_q[b + 1]`` and key rows
    ``cu_seqlens_k[b]:cu_seqlens_k[b + 1]``; the causal mask is aligned bottom-right within each
    sequence. Empty sequences are allowed.

    Args:
        q: (total_q, num_heads, head_dim).
        k, v: (total_k, num_heads_k, head_dim).
        cu_seqlens_q, cu_seqlens_k: int32 (batch + 1,) on q's device, from 0, non-decreasing,
            ending at total_q / total_k.
        max_seqlen_q, max_seqlen_k: at least the longest query / key sequence.
        softmax_scale, causal, out, return_lse: as for ``flash_attn_fwd``; the LSE is
            (num_heads, total_q).

    The checks of ``cu_seqlens`` values read them back to the host (see
    ``forge_flash.validation``).
    """
    if torch.compiler.is_compiling():
        return ops.flash_attn_varlen_fwd(
            q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale,
            causal, out, return_lse,
        )  # fmt: skip
    dims, max_q, max_k = check_varlen(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, out
    )
    scale = resolve_scale("softmax_scale", softmax_scale, dims.head_dim)
    check_flag("causal", causal)
    check_flag("return_lse", return_lse)
    backend = active_backend()
    if out is None:
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
    lse = None
    if return_lse:
        lse = torch.empty((dims.num_heads, dims.total_q), dtype=torch.float32, device=q.device)
    backend.varlen_fwd(
        q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, max_q, max_k,
        softmax_scale=scale, causal=causal,
    )  # fmt: skip
    return (out, lse) if lse is not None else out


def batched_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    *,
    softmax_scale: float | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """One new token for each of N sequences against their KV caches (batched decode).

    Row b attends to the first ``cache_seqlens[b]`` entries of its cache (append the new
    token's K/V to the cache before the call if it should see itself). A row with
    ``cache_seqlens[b] == 0`` gives output 0 and LSE -inf.

    Args:
        q: (batch, num_heads, head_dim).
        k_cache, v_cache: (batch, max_cache_len, num_kv_heads, head_dim).
        cache_seqlens: int32 (batch,) on q's device, each in [0, max_cache_len] (checked by
            reading it back, except while a CUDA graph is captured).
        softmax_scale: default ``head_dim ** -0.5``.
        return_lse: also return the float32 LSE, (batch, num_heads).

    Returns:
        (batch, num_heads, head_dim), or ``(out, lse)`` when ``return_lse``.
    """
    if torch.compiler.is_compiling():
        return ops.batched_decode_attention(
            q, k_cache, v_cache, cache_seqlens, softmax_scale, return_lse
        )
    tensors = (q, k_cache, v_cache, cache_seqlens)
    key = call_cache.signature(discovered_backend(), tensors, (softmax_scale, return_lse))
    prepared = call_cache.lookup(key)
    if prepared is not None:
        check_cache_seqlens_values(cache_seqlens, k_cache.shape[1])
        out = torch.empty_like(q, memory_format=_CONTIGUOUS)
        lse = _lse_like(q, q.shape[:2]) if return_lse else None
        # Prepared for the 4-D views below: the same memory, so the same pointers.
        if prepared(q, k_cache, v_cache, out, lse, cache_seqlens):
            return (out, lse) if return_lse else out
    dims = check_decode(*tensors)
    scale = resolve_scale("softmax_scale", softmax_scale, dims.head_dim)
    check_flag("return_lse", return_lse)
    backend = active_backend()
    out = torch.empty_like(q, memory_format=_CONTIGUOUS)
    lse = _lse_like(q, (dims.batch, dims.num_heads)) if return_lse else None
    # One query row per sequence: flash_attn_fwd's layout with seqlen_q = 1.
    args = (q.unsqueeze(1), k_cache, v_cache, out.unsqueeze(1))
    lse_rows = None if lse is None else lse.unsqueeze(-1)
    backend.fwd(*args, lse_rows, softmax_scale=scale, causal=False, seqused_k=cache_seqlens)
    if call_cache.needs_preparing(key):
        call_cache.remember(
            key,
            backend.prepare_fwd(
                *args, lse_rows, softmax_scale=scale, causal=False, seqused_k=cache_seqlens
            ),
        )
    return (out, lse) if lse is not None else out


_CONTIGUOUS = torch.contiguous_format


def _lse_like(q: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.float32, device=q.device)
