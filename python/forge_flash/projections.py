"""Attention on the flat projections model code holds: the design note's runtime dispatch.

q is (batch, seqlen_q, num_heads * head_dim) or (seqlen_q, num_heads * head_dim); k and v are
likewise with num_kv_heads. One call replaces a per-head loop. Where the kernels run, float32
inputs are cast to half precision (``cast_dtype``, default float16) and the result cast back;
the model-layer routing (``decoder_attention``) sends multi-sequence decode steps to
``batched_decode_attention`` and everything else to ``multi_head_attention``.

This module evaluates its annotations (it defines custom ops; see ``forge_flash.ops``).
"""

from dataclasses import replace
from typing import Literal

import torch

from . import dispatch, ops
from .api import batched_decode_attention
from .backends.base import Backend
from .call import NO_WINDOW, AttentionCall
from .validation import (
    Options,
    check_cast_dtype,
    check_flag,
    check_flat,
    check_index_tensor,
    device_values_readable,
    resolve_scale,
    with_options,
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


def kernel_cast(
    call: AttentionCall,
    cast_dtype: torch.dtype,
    tensors: tuple[torch.Tensor, ...],
    backend: Backend | None,
) -> AttentionCall:
    """The call to run: float32 ``call`` turned into a half-precision one when the backend
    refuses float32 but takes that (on the naive path a cast would cost precision and buy
    nothing).

    float16 is used only when the values fit its range (else inf/NaN would come back):
    otherwise bfloat16, which has float32's range.
    """
    if call.dtype != torch.float32 or dispatch.route(call, backend).fallback_reason is None:
        return call  # the backend runs float32 as it is
    if dispatch.route(replace(call, dtype=cast_dtype), backend).fallback_reason is not None:
        return call  # nor does it take half precision: the naive path keeps float32
    if cast_dtype == torch.float16 and not _fits_float16(*tensors):
        cast_dtype = torch.bfloat16
    return replace(call, dtype=cast_dtype)


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
    window_size: tuple[int, int] = NO_WINDOW,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
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
        window_size, softcap, alibi_slopes, sinks: as for ``forge_flash.flash_attn_fwd``.
        backend: run on this backend instead of the active one.

    Returns:
        A tensor in q's layout and dtype.
    """
    if backend is None and torch.compiler.is_compiling():
        options = Options(scale, is_causal, window_size, softcap, alibi_slopes, sinks)
        return torch.ops.forge_flash.attention_fwd(
            q, k, v, num_heads, num_kv_heads, head_dim, scale, is_causal,
            ops.CAST_NAMES.get(cast_dtype, cast_dtype), *ops.option_args(options),
        )  # fmt: skip
    return _flat_attention(
        q, k, v, num_heads, num_kv_heads, head_dim, scale, is_causal, cast_dtype, window_size,
        softcap, alibi_slopes, sinks, backend,
    )  # fmt: skip


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
    window_size: tuple[int, int] = NO_WINDOW,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """The design note's backend trait call: ``attention_fwd`` on the active backend (the
    same implementation, its own op name under ``torch.compile``)."""
    if torch.compiler.is_compiling():
        options = Options(scale, is_causal, window_size, softcap, alibi_slopes, sinks)
        return torch.ops.forge_flash.multi_head_attention(
            q, k, v, num_heads, num_kv_heads, head_dim, scale, is_causal,
            ops.CAST_NAMES.get(cast_dtype, cast_dtype), *ops.option_args(options),
        )  # fmt: skip
    return _flat_attention(
        q, k, v, num_heads, num_kv_heads, head_dim, scale, is_causal, cast_dtype, window_size,
        softcap, alibi_slopes, sinks, None,
    )  # fmt: skip


def _flat_attention(
    q, k, v, num_heads, num_kv_heads, head_dim, scale, is_causal, cast_dtype, window_size,
    softcap, alibi_slopes, sinks, backend,
) -> torch.Tensor:  # fmt: skip
    static = ("flat", scale, is_causal, softcap, num_heads, num_kv_heads, head_dim, cast_dtype)
    out = dispatch.attend(
        (q, k, v, alibi_slopes, sinks), static, window_size, _check_flat, _bind_flat, backend
    )
    return out if out.dtype == q.dtype else out.to(q.dtype)


def _check_flat(tensors: tuple, static: tuple, window_size, backend) -> AttentionCall:
    q, k, v, alibi_slopes, sinks = tensors
    _, scale, is_causal, softcap, num_heads, num_kv_heads, head_dim, cast_dtype = static
    call = check_flat(q, k, v, num_heads, num_kv_heads, head_dim)
    options = Options(scale, is_causal, window_size, softcap, alibi_slopes, sinks)
    call = with_options(call, options, q, scale_name="scale", causal_name="is_causal")
    return kernel_cast(call, check_cast_dtype(cast_dtype), (q, k, v), backend)


def _bind_flat(
    tensors: tuple, call: AttentionCall, views: bool, new_out: dispatch.NewOut
) -> tuple[tuple, torch.Tensor]:
    q, k, v, alibi_slopes, sinks = tensors
    if call.dtype != q.dtype:  # float32 cast for the kernels (see kernel_cast)
        q, k, v = q.to(call.dtype), k.to(call.dtype), v.to(call.dtype)
    out = new_out(q)
    parts = [q, k, v, out]
    if views:  # the per-head layout (b, s, h, d) of the same memory
        parts = [x.unflatten(-1, (n, call.head_dim)) for x, n in ((q, call.num_heads),
                 (k, call.num_heads_k), (v, call.num_heads_k), (out, call.num_heads))]  # fmt: skip
        if q.dim() == 2:  # unbatched: a batch of one
            parts = [x.unsqueeze(0) for x in parts]
    # AttentionTensors' fields in order (see dispatch.Bind)
    return (*parts, None, None, None, None, None, alibi_slopes, sinks), out


def _flat_op(name: str):
    """The op ``forge_flash::<name>`` over the flat-projection implementation (the two public
    flat calls share one signature and one implementation)."""

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
        window_left: int = -1,
        window_right: int = -1,
        softcap: float = 0.0,
        alibi_slopes: torch.Tensor | None = None,
        sinks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return _flat_attention(
            q, k, v, num_heads, num_kv_heads, head_dim, scale, is_causal,
            ops.CAST_DTYPES.get(cast_dtype, cast_dtype), (window_left, window_right), softcap,
            alibi_slopes, sinks, None,
        )  # fmt: skip

    op = torch.library.custom_op(f"forge_flash::{name}", implementation, mutates_args=())

    @op.register_fake
    def _(q, k, v, *args):
        # The result has q's layout and dtype (float32 comes back as float32 after the cast).
        return q.new_empty(q.shape)

    return op


_flat_op("attention_fwd")
_flat_op("multi_head_attention")


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
    window_size: tuple[int, int] = NO_WINDOW,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
) -> torch.Tensor:
    """A decoder layer's attention call, routed by ``attention_path``.

    q is (batch, seqlen_q, num_heads * head_dim); k/v are (batch, seqlen_k, num_kv_heads *
    head_dim): for a decode step, the KV cache including the new token. ``cache_seqlens``
    (int32, (batch,)) gives each sequence's filled cache length in a decode step (default: all
    of ``seqlen_k``); a decode step with it always takes batched decode, even for one sequence,
    since that path honours the lengths on the device. Batched decode keeps q's dtype:
    casting a whole KV cache to half precision on every token would cost more than it saves,
    so float32 decode runs on the naive path. Every argument is checked, whichever route the
    call takes, before any work.

    Returns (batch, seqlen_q, num_heads * head_dim).
    """
    options = Options(scale, is_causal, window_size, softcap, alibi_slopes, sinks, False)
    call = check_flat(q, k, v, num_heads, num_kv_heads, head_dim)
    if q.dim() != 3:
        raise ValueError(
            "q must have 3 dimensions (batch, seqlen_q, num_heads * head_dim) for "
            f"decoder_attention; got shape {tuple(q.shape)}"
        )
    if not torch.compiler.is_compiling():
        # Traced, the routed op checks the options when the graph runs, with these messages
        # (and Dynamo before torch 2.5 cannot trace dataclasses.replace, which this uses).
        call = with_options(call, options, q, scale_name="scale", causal_name="is_causal")
    check_cast_dtype(cast_dtype)
    check_flag("is_causal", is_causal)
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
        heads, kv_heads, dim = call.num_heads, call.num_heads_k, call.head_dim
        out = batched_decode_attention(
            q.view(batch, heads, dim),
            k.unflatten(-1, (kv_heads, dim)),
            v.unflatten(-1, (kv_heads, dim)),
            cache_seqlens,
            softmax_scale=resolve_scale("scale", scale, dim),
            window_size=window_size,
            softcap=softcap,
            alibi_slopes=alibi_slopes,
            sinks=sinks,
        )
        return out.view(batch, 1, heads * dim)
    return multi_head_attention(
        q, k, v, num_heads, num_kv_heads, head_dim, scale, is_causal, cast_dtype=cast_dtype,
        window_size=window_size, softcap=softcap, alibi_slopes=alibi_slopes, sinks=sinks,
    )  # fmt: skip
