"""The model-layer API: the design note's runtime dispatch on the flat projections model code holds.

q is (batch, seqlen_q, num_heads * head_dim) or (seqlen_q, num_heads * head_dim); k and v are
likewise with num_kv_heads. One call replaces a per-head loop. On the kernel path float32
inputs are cast to half precision (``cast_dtype``, default float16) and the result cast back;
the model-layer routing (``decoder_attention``) sends multi-sequence decode steps to
``batched_decode_attention`` and everything else to ``multi_head_attention``.
"""

from __future__ import annotations

from typing import Literal

import torch

from . import call_cache, ops
from .api import batched_decode_attention
from .backends.base import Backend
from .discovery import active_backend, discovered_backend
from .validation import (
    check_cast_dtype,
    check_flag,
    check_flat,
    check_index_tensor,
    device_values_readable,
    resolve_scale,
)

_FLOAT16_MAX = torch.finfo(torch.float16).max

AttentionPath = Literal["batched_decode", "multi_head_attention"]


def _fits_float16(*tensors: torch.Tensor) -> bool:
    """Whether every value survives a cast to float16 (one read-back for all tensors).

    While a CUDA graph is captured nothing can be read back, so the answer is "no" and the
    caller takes bfloat16, whose range is float32's.
    """
    if not device_values_readable(tensors[0]):
        return False
    peaks = [t.abs().amax() for t in tensors if t.numel()]
    if not peaks:
        return True
    return bool(torch.stack(peaks).amax() <= _FLOAT16_MAX)


def kernel_cast_dtype(
    backend: Backend,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    head_dim: int,
    cast_dtype: torch.dtype,
) -> torch.dtype | None:
    """The half dtype float32 inputs are cast to for the kernels, or None to keep them.

    float16 is used only when the values fit its range (else inf/NaN would come back):
    otherwise bfloat16, which has float32's range.
    """
    if q.dtype != torch.float32 or not backend.uses_kernels(q.device, head_dim):
        return None
    if cast_dtype == torch.float16 and not _fits_float16(q, k, v):
        return torch.bfloat16
    return cast_dtype


def attention_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    scale: float | None = None,
    is_causal: bool = False,
    *,
    cast_dtype: torch.dtype | None = None,
    backend: Backend | None = None,
) -> torch.Tensor:
    """Attention over all heads of flat projections; the design note's runtime dispatch.

    Uses the kernels when they are present and the inputs qualify, else the naive path.
    float32 inputs go to the kernels cast to ``cast_dtype`` (float16 by default, bfloat16
    allowed) and come back as float32; if a value exceeds float16's range, bfloat16 is used
    instead so no inf/NaN comes back (deciding that reads one number back from the GPU).

    Args:
        q: (batch, seqlen_q, num_heads * head_dim) or (seqlen_q, num_heads * head_dim).
        k, v: (batch, seqlen_k, num_kv_heads * head_dim) or (seqlen_k, num_kv_heads * head_dim).
        num_heads, num_kv_heads, head_dim: the split of the last dimension.
        scale: softmax scale, default ``head_dim ** -0.5``.
        is_causal: bottom-right aligned causal mask.
        cast_dtype: half dtype for float32 inputs on the kernel path.
        backend: run on this backend instead of the active one.

    Returns:
        A tensor in q's layout and dtype.
    """
    if backend is None and torch.compiler.is_compiling():  # see forge_flash.ops
        return ops.attention_fwd(
            q, k, v, num_heads, num_kv_heads, head_dim, scale, is_causal, cast_dtype
        )
    options = (num_heads, num_kv_heads, head_dim, scale, is_causal, cast_dtype)
    key = call_cache.signature(backend or discovered_backend(), (q, k, v), options)
    prepared = call_cache.lookup(key)
    if prepared is not None:
        # Prepared for the per-head views below; a contiguous result has q's flat layout.
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
        if prepared(q, k, v, out, None, None):
            return out
    heads, kv_heads, dim = check_flat(q, k, v, num_heads, num_kv_heads, head_dim)
    softmax_scale = resolve_scale("scale", scale, dim)
    check_flag("is_causal", is_causal)
    half = check_cast_dtype(cast_dtype)
    if backend is None:
        backend = active_backend()
    unbatched = q.dim() == 2
    if unbatched:
        q, k, v = q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0)
    q4 = q.unflatten(-1, (heads, dim))
    k4 = k.unflatten(-1, (kv_heads, dim))
    v4 = v.unflatten(-1, (kv_heads, dim))
    run_dtype = kernel_cast_dtype(backend, q4, k4, v4, dim, half)
    if run_dtype is not None:
        q4, k4, v4 = q4.to(run_dtype), k4.to(run_dtype), v4.to(run_dtype)
    out = torch.empty_like(q4, memory_format=torch.contiguous_format)
    backend.fwd(q4, k4, v4, out, None, softmax_scale=softmax_scale, causal=is_causal)
    if run_dtype is None and call_cache.needs_preparing(key):
        call_cache.remember(
            key,
            backend.prepare_fwd(
                q4, k4, v4, out, None, softmax_scale=softmax_scale, causal=is_causal
            ),
        )
    out = out.flatten(-2)
    if run_dtype is not None:
        out = out.to(torch.float32)
    return out.squeeze(0) if unbatched else out


def multi_head_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    scale: float | None = None,
    is_causal: bool = False,
    *,
    cast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """The active backend's ``multi_head_attention`` (the design note's backend trait call).

    Same arguments and result as ``attention_fwd``.
    """
    if torch.compiler.is_compiling():  # see forge_flash.ops
        return ops.multi_head_attention(
            q, k, v, num_heads, num_kv_heads, head_dim, scale, is_causal, cast_dtype
        )
    return active_backend().multi_head_attention(
        q, k, v, num_heads, num_kv_heads, head_dim, scale, is_causal, cast_dtype=cast_dtype
    )


def attention_path(batch: int, seqlen_q: int) -> AttentionPath:
    """The design note's model-layer routing rule.

    decode (seqlen_q == 1) with batch > 1 -> ``batched_decode``; single-sequence decode and
    prefill (seqlen_q > 1) -> ``multi_head_attention``.
    """
    return "batched_decode" if seqlen_q == 1 and batch > 1 else "multi_head_attention"


def decoder_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    scale: float | None = None,
    is_causal: bool = True,
    *,
    cache_seqlens: torch.Tensor | None = None,
    cast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """A decoder layer's attention call, routed by ``attention_path``.

    q is (batch, seqlen_q, num_heads * head_dim); k/v are (batch, seqlen_k, num_kv_heads *
    head_dim): for a decode step, the KV cache including the new token. ``cache_seqlens``
    (int32, (batch,)) gives each sequence's filled cache length in a decode step (default: all
    of ``seqlen_k``); a decode step with it always takes batched decode, even for one sequence,
    since that path honours the lengths on the device. Batched decode keeps q's dtype:
    casting a whole KV cache to half precision on every token would cost more than it saves,
    so float32 decode runs on the naive path.

    Returns (batch, seqlen_q, num_heads * head_dim).
    """
    heads, kv_heads, dim = check_flat(q, k, v, num_heads, num_kv_heads, head_dim)
    if q.dim() != 3:
        raise ValueError(
            "q must have 3 dimensions (batch, seqlen_q, num_heads * head_dim) for "
            f"decoder_attention; got shape {tuple(q.shape)}"
        )
    batch, seqlen_q, seqlen_k = q.shape[0], q.shape[1], k.shape[1]
    if cache_seqlens is not None:
        if seqlen_q != 1:
            raise ValueError(
                "cache_seqlens applies only to decode steps (seqlen_q == 1); got "
                f"seqlen_q = {seqlen_q}"
            )
        check_index_tensor("cache_seqlens", cache_seqlens, batch, q)
    # Per-sequence cache lengths are what batched decode exists for; honouring them through
    # multi_head_attention would need a host read of the length (and break CUDA graphs).
    if cache_seqlens is not None or attention_path(batch, seqlen_q) == "batched_decode":
        if cache_seqlens is None:
            cache_seqlens = torch.full((batch,), seqlen_k, dtype=torch.int32, device=q.device)
        out = batched_decode_attention(
            q.view(batch, heads, dim),
            k.unflatten(-1, (kv_heads, dim)),
            v.unflatten(-1, (kv_heads, dim)),
            cache_seqlens,
            softmax_scale=scale,
        )
        return out.view(batch, 1, heads * dim)
    return multi_head_attention(
        q, k, v, num_heads, num_kv_heads, head_dim, scale, is_causal, cast_dtype=cast_dtype
    )
