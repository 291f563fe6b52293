"""The FlashAttention-style entry points on per-head tensors.

Conventions, identical on every backend:

* causal masks are aligned bottom-right: query row i sees key j iff
  ``j <= i + seqlen_k - seqlen_q`` (the last query row sees every key);
* the default softmax scale is ``head_dim ** -0.5``; any finite scale works;
* the LSE is float32 natural-log logsumexp of the scores, shaped ``(batch, num_heads,
  seqlen_q)`` for ``flash_attn_fwd``, ``(num_heads, total_q)`` for the varlen entry point and
  ``(batch, num_heads)`` for ``batched_decode_attention``;
* a query row that sees no key gives output 0 and LSE -inf (with ``sinks``: the sink's
  logit); seqlen 0 and empty batches work; a NaN in q, k or v gives NaN in the rows that see it;
* GQA/MQA: ``num_heads_k`` divides ``num_heads``; query head h reads KV head
  ``h // (num_heads // num_heads_k)``;
* inputs are never modified; ``out=`` receives the result when given.

The options every entry point shares (keyword-only; the defaults change nothing), with
offset = seqlen_k - seqlen_q of the sequence:

* ``window_size=(left, right)``: query i sees key j iff
  ``i + offset - left <= j <= i + offset + right``; -1 is unbounded on that side;
  ``causal=True`` forces right = 0;
* ``softcap > 0``: scores become ``softcap * tanh(softmax_scale * q.k / softcap)``, before masks
  and biases;
* ``alibi_slopes``: float32 ``(num_heads,)`` or ``(batch, num_heads)``; scores
  ``+= -slope * |i + offset - j|``;
* ``sinks``: float32 ``(num_heads,)``: a logit per head that joins every row's softmax
  denominator once (a key whose value is zero); the LSE includes it.

Each call is validated into one description (``forge_flash.call``) and run through
``forge_flash.dispatch``, which keeps a prepared form per call signature: a decode loop pays
validation and planning once. Under ``torch.compile`` each entry point is one custom op
(``torch.ops.forge_flash.*``, see ``forge_flash.ops``).

This module evaluates its annotations (no ``from __future__ import annotations``): torch 2.4's
custom-op schema inference reads them as they are and rejects strings.
"""

from dataclasses import replace

import torch

from . import dispatch, ops
from .call import NO_WINDOW, AttentionCall
from .validation import (
    Options,
    check_decode,
    check_fwd,
    check_num_splits,
    check_varlen,
    device_values_checked,
    with_options,
)


def _lse(q: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.float32, device=q.device)


# -- flash_attn_fwd ---------------------------------------------------------------------------


def flash_attn_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = NO_WINDOW,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention forward for a batch of equal-length sequences.

    Args:
        q: (batch, seqlen_q, num_heads, head_dim), float16/bfloat16/float32, head_dim <= 256.
        k, v: (batch, seqlen_k, num_heads_k, head_dim), same dtype and device as q.
        softmax_scale: multiplies q·k; default ``head_dim ** -0.5``.
        causal: bottom-right aligned causal mask.
        window_size, softcap, alibi_slopes, sinks: see the module docstring.
        out: optional (batch, seqlen_q, num_heads, head_dim) tensor to write the result into.
        return_lse: also return the float32 LSE, (batch, num_heads, seqlen_q).

    Returns:
        ``out``, or ``(out, lse)`` when ``return_lse``.
    """
    if torch.compiler.is_compiling():  # one opaque op for Dynamo
        options = Options(softmax_scale, causal, window_size, softcap, alibi_slopes, sinks)
        result, lse = torch.ops.forge_flash.fwd(
            q, k, v, softmax_scale, causal, return_lse, *ops.option_args(options)
        )
        return ops.into_out(result, lse, out, return_lse)
    return dispatch.attend(
        (q, k, v, out, alibi_slopes, sinks),
        ("fwd", softmax_scale, causal, softcap, return_lse),
        window_size,
        _check_fwd,
        _bind_fwd,
    )


def _check_fwd(tensors: tuple, static: tuple, window_size, backend) -> AttentionCall:
    q, k, v, out, alibi_slopes, sinks = tensors
    _, scale, causal, softcap, return_lse = static
    options = Options(scale, causal, window_size, softcap, alibi_slopes, sinks, return_lse)
    return with_options(check_fwd(q, k, v, out), options, q)


# The binds give AttentionTensors' fields in order (see dispatch.Bind): q, k, v, out, lse,
# cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks, kv_batch_idx, k_start.


def _bind_fwd(
    tensors: tuple, call: AttentionCall, views: bool, new_out: dispatch.NewOut
) -> tuple[tuple, object]:
    q, k, v, out, alibi_slopes, sinks = tensors
    if out is None:
        out = new_out(q)
    if not call.return_lse:
        return (q, k, v, out, None, None, None, None, None, alibi_slopes, sinks), out
    lse = _lse(q, (q.shape[0], q.shape[2], q.shape[1]))
    return (q, k, v, out, lse, None, None, None, None, alibi_slopes, sinks), (out, lse)


@ops.custom_op("forge_flash::fwd")
def _fwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    softmax_scale: float | None,
    causal: bool,
    return_lse: bool,
    window_left: int = -1,
    window_right: int = -1,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    result = flash_attn_fwd(
        q, k, v, softmax_scale=softmax_scale, causal=causal,
        window_size=(window_left, window_right), softcap=softcap, alibi_slopes=alibi_slopes,
        sinks=sinks, return_lse=return_lse,
    )  # fmt: skip
    return ops.with_lse(result, return_lse, q)


@_fwd_op.register_fake
def _(q, k, v, softmax_scale, causal, return_lse, *options):
    return ops.fake_outputs(q, (q.shape[0], q.shape[2], q.shape[1]), return_lse)


# -- flash_attn_varlen_fwd --------------------------------------------------------------------


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
    window_size: tuple[int, int] = NO_WINDOW,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
    seqused_k: torch.Tensor | None = None,
    block_table: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Attention forward for sequences of different lengths packed along one dimension.

    Sequence b owns query rows ``cu_seqlens_q[b]:cu_seqlens_q[b + 1]`` and key rows
    ``cu_seqlens_k[b]:cu_seqlens_k[b + 1]``; the causal mask and the window are aligned
    bottom-right within each sequence. Empty sequences are allowed.

    Args:
        q: (total_q, num_heads, head_dim).
        k, v: (total_k, num_heads_k, head_dim); or, with ``block_table``, paged caches
            (num_blocks, page_size, num_heads_k, head_dim).
        cu_seqlens_q, cu_seqlens_k: int32 (batch + 1,) on q's device, from 0, non-decreasing,
            ending at total_q / total_k (paged: cu_seqlens_k counts each sequence's keys).
        max_seqlen_q, max_seqlen_k: at least the longest query / key sequence.
        seqused_k: int32 (batch,): sequence b uses only its first ``seqused_k[b]`` keys.
        block_table: int32 (batch, max_blocks): key t of sequence b is row t % page_size of
            block ``block_table[b, t // page_size]`` (chunked prefill over a paged cache).
        softmax_scale, causal, window_size, softcap, alibi_slopes, sinks, out, return_lse: as
            for ``flash_attn_fwd``; the LSE is (num_heads, total_q).

    The checks of ``cu_seqlens`` values read them back to the host (see
    ``forge_flash.validation``).
    """
    if torch.compiler.is_compiling():
        options = Options(softmax_scale, causal, window_size, softcap, alibi_slopes, sinks)
        result, lse = torch.ops.forge_flash.varlen_fwd(
            q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, softmax_scale,
            causal, return_lse, *ops.option_args(options), seqused_k, block_table,
        )  # fmt: skip
        return ops.into_out(result, lse, out, return_lse)
    tensors = (
        q, k, v, out, cu_seqlens_q, cu_seqlens_k, seqused_k, block_table, alibi_slopes, sinks
    )  # fmt: skip
    static = ("varlen", max_seqlen_q, max_seqlen_k, softmax_scale, causal, softcap, return_lse)
    # Kept per signature only where the checks read no device values (CUDA tensors under
    # FORGE_FLASH_CHECK_DEVICE_VALUES=0 or device_value_checks_off, as engines run chunked
    # prefill): check_varlen's call then follows from the signature alone, and a repeated call
    # skips validation and planning as the other entry points' do. Where the checks read
    # cu_seqlens back, they run on every call, and no kept call is looked up.
    keep = isinstance(q, torch.Tensor) and not device_values_checked(q.device)
    return dispatch.attend(tensors, static, window_size, _check_varlen, _bind_varlen, keep=keep)


def _check_varlen(tensors: tuple, static: tuple, window_size, backend) -> AttentionCall:
    q, k, v, out, cu_q, cu_k, seqused_k, block_table, alibi_slopes, sinks = tensors
    _, max_q, max_k, scale, causal, softcap, return_lse = static
    call = check_varlen(q, k, v, cu_q, cu_k, max_q, max_k, out, seqused_k, block_table)
    options = Options(scale, causal, window_size, softcap, alibi_slopes, sinks, return_lse)
    return with_options(call, options, q)


def _bind_varlen(
    tensors: tuple, call: AttentionCall, views: bool, new_out: dispatch.NewOut
) -> tuple[tuple, object]:
    q, k, v, out, cu_q, cu_k, seqused_k, block_table, alibi_slopes, sinks = tensors
    if out is None:
        out = new_out(q)
    lse = _lse(q, (call.num_heads, call.total_q)) if call.return_lse else None
    fields = (q, k, v, out, lse, cu_q, cu_k, seqused_k, block_table, alibi_slopes, sinks)
    return fields, (out if lse is None else (out, lse))


@ops.custom_op("forge_flash::varlen_fwd")
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
    window_left: int = -1,
    window_right: int = -1,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
    seqused_k: torch.Tensor | None = None,
    block_table: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    result = flash_attn_varlen_fwd(
        q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
        softmax_scale=softmax_scale, causal=causal, window_size=(window_left, window_right),
        softcap=softcap, alibi_slopes=alibi_slopes, sinks=sinks, seqused_k=seqused_k,
        block_table=block_table, return_lse=return_lse,
    )  # fmt: skip
    return ops.with_lse(result, return_lse, q)


@_varlen_fwd_op.register_fake
def _(q, k, v, cu_q, cu_k, max_q, max_k, softmax_scale, causal, return_lse, *options):
    return ops.fake_outputs(q, (q.shape[1], q.shape[0]), return_lse)


# -- batched_decode_attention and cache_attention ---------------------------------------------


def batched_decode_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    *,
    softmax_scale: float | None = None,
    window_size: tuple[int, int] = NO_WINDOW,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
    block_table: torch.Tensor | None = None,
    return_lse: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """One new token for each of N sequences against their KV caches (batched decode).

    Row b attends to the first ``cache_seqlens[b]`` entries of its cache (append the new
    token's K/V to the cache before the call if it should see itself). A row with
    ``cache_seqlens[b] == 0`` gives output 0 and LSE -inf (the sink's logit with ``sinks``).
    The query sits at position ``cache_seqlens[b] - 1`` for the window and ALiBi.

    Args:
        q: (batch, num_heads, head_dim).
        k_cache, v_cache: (batch, max_cache_len, num_kv_heads, head_dim); or, with
            ``block_table`` (int32 (batch, max_blocks)), paged caches (num_blocks, page_size,
            num_kv_heads, head_dim).
        cache_seqlens: int32 (batch,) on q's device, each in [0, max_cache_len] (checked by
            reading it back, except while a CUDA graph is captured).
        softmax_scale, window_size, softcap, alibi_slopes, sinks: as for ``flash_attn_fwd``.
        return_lse: also return the float32 LSE, (batch, num_heads).

    Returns:
        (batch, num_heads, head_dim), or ``(out, lse)`` when ``return_lse``.
    """
    if torch.compiler.is_compiling():
        options = Options(softmax_scale, False, window_size, softcap, alibi_slopes, sinks)
        result, lse = torch.ops.forge_flash.batched_decode(
            q, k_cache, v_cache, cache_seqlens, softmax_scale, return_lse,
            *ops.option_args(options), block_table,
        )  # fmt: skip
        return (result, lse) if return_lse else result
    return dispatch.attend(
        (q, k_cache, v_cache, cache_seqlens, block_table, alibi_slopes, sinks),
        ("batched_decode", softmax_scale, softcap, return_lse),
        window_size,
        _check_decode,
        _bind_decode,
    )


def _check_decode(tensors: tuple, static: tuple, window_size, backend) -> AttentionCall:
    q, k_cache, v_cache, cache_seqlens, block_table, alibi_slopes, sinks = tensors
    _, scale, softcap, return_lse = static
    call = check_decode(q, k_cache, v_cache, cache_seqlens, block_table)
    options = Options(scale, False, window_size, softcap, alibi_slopes, sinks, return_lse)
    return with_options(call, options, q)


def _bind_decode(
    tensors: tuple, call: AttentionCall, views: bool, new_out: dispatch.NewOut
) -> tuple[tuple, object]:
    q, k_cache, v_cache, cache_seqlens, block_table, alibi_slopes, sinks = tensors
    out = new_out(q)
    lse = _lse(q, q.shape[:2]) if call.return_lse else None
    result = out if lse is None else (out, lse)
    if views:  # one query row per sequence: the dense layout with seqlen_q = 1, same memory
        q, out, lse = q.unsqueeze(1), out.unsqueeze(1), None if lse is None else lse.unsqueeze(-1)
    fields = (q, k_cache, v_cache, out, lse, None, None, cache_seqlens, block_table, alibi_slopes,
              sinks)  # fmt: skip
    return fields, result


@ops.custom_op("forge_flash::batched_decode")
def _batched_decode_op(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    softmax_scale: float | None,
    return_lse: bool,
    window_left: int = -1,
    window_right: int = -1,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
    block_table: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    result = batched_decode_attention(
        q, k_cache, v_cache, cache_seqlens, softmax_scale=softmax_scale,
        window_size=(window_left, window_right), softcap=softcap, alibi_slopes=alibi_slopes,
        sinks=sinks, block_table=block_table, return_lse=return_lse,
    )  # fmt: skip
    return ops.with_lse(result, return_lse, q)


@_batched_decode_op.register_fake
def _(q, k_cache, v_cache, cache_seqlens, softmax_scale, return_lse, *options):
    return ops.fake_outputs(q, tuple(q.shape[:2]), return_lse)


def cache_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    *,
    cache_batch_idx: torch.Tensor | None = None,
    cache_leftpad: torch.Tensor | None = None,
    block_table: torch.Tensor | None = None,
    softmax_scale: float | None = None,
    causal: bool = False,
    window_size: tuple[int, int] = NO_WINDOW,
    softcap: float = 0.0,
    alibi_slopes: torch.Tensor | None = None,
    sinks: torch.Tensor | None = None,
    return_lse: bool = False,
    programmatic_launch: bool = False,
    num_splits: int = 0,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Queries of several tokens per sequence against KV caches (what
    ``flash_attn_with_kvcache`` runs after appending).

    Sequence b attends to keys ``[cache_leftpad[b], cache_seqlens[b])`` of cache row
    ``cache_batch_idx[b]`` (row b without it); causal masks, windows and ALiBi are aligned
    bottom-right on that key range.

    Args:
        q: (batch, seqlen_q, num_heads, head_dim).
        k_cache, v_cache: (cache_rows, max_cache_len, num_kv_heads, head_dim), or paged with
            ``block_table`` as for ``batched_decode_attention``.
        cache_seqlens: int32 (batch,): the end of each sequence's keys.
        cache_batch_idx, cache_leftpad: int32 (batch,), optional.
        programmatic_launch: let the kernels' launch overlap the previous kernel's tail
            (``AttentionCall.programmatic_launch``; ``flash_attn_with_kvcache`` sets it after
            the fused append). Timing only.
        num_splits: split-KV parts of each sequence's keys: 0 (default) lets the kernels
            choose, n >= 1 asks for n (1: no split; fewer where the keys are short). Timing
            only: the answer is the same up to rounding (``AttentionCall.num_splits``).
        the rest: as for ``flash_attn_fwd``.

    Returns:
        (batch, seqlen_q, num_heads, head_dim), and the LSE (batch, num_heads, seqlen_q) when
        ``return_lse``.
    """
    tensors = (
        q, k_cache, v_cache, cache_seqlens, cache_batch_idx, cache_leftpad, block_table,
        alibi_slopes, sinks,
    )  # fmt: skip
    static = ("cache", softmax_scale, causal, softcap, return_lse, programmatic_launch, num_splits)
    return dispatch.attend(tensors, static, window_size, _check_cache, _bind_cache)


def cache_attention_call(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    cache_seqlens: torch.Tensor,
    *,
    cache_batch_idx: torch.Tensor | None,
    block_table: torch.Tensor | None,
    softmax_scale: float | None,
    causal: bool,
    window_size: tuple[int, int],
    softcap: float,
    alibi_slopes: torch.Tensor | None,
    sinks: torch.Tensor | None,
    return_lse: bool,
    num_splits: int = 0,
) -> AttentionCall:
    """The validated description of ``cache_attention``'s call with these arguments (no left
    padding): what a backend that fuses the K/V append into the attention binds
    (``Backend.attend_appending``)."""
    tensors = (
        q, k_cache, v_cache, cache_seqlens, cache_batch_idx, None, block_table, alibi_slopes,
        sinks,
    )  # fmt: skip
    static = ("cache", softmax_scale, causal, softcap, return_lse, False, num_splits)
    return _check_cache(tensors, static, window_size, None)


def _check_cache(tensors: tuple, static: tuple, window_size, backend) -> AttentionCall:
    q, k_cache, v_cache, cache_seqlens, cache_batch_idx, cache_leftpad, *rest = tensors
    block_table, alibi_slopes, sinks = rest
    _, scale, causal, softcap, return_lse, programmatic_launch, num_splits = static
    options = Options(scale, causal, window_size, softcap, alibi_slopes, sinks, return_lse)
    if block_table is not None and cache_batch_idx is not None:
        raise ValueError(
            "cache_batch_idx must be None with block_table (the table maps sequences to "
            "pages); got both"
        )
    seqlen_q = q.shape[1] if isinstance(q, torch.Tensor) and q.dim() == 4 else 1
    call = check_decode(
        q, k_cache, v_cache, cache_seqlens, block_table, seqlen_q=seqlen_q,
        kv_batch_idx=cache_batch_idx, k_start=cache_leftpad,
    )  # fmt: skip
    call = with_options(call, options, q)
    num_splits = check_num_splits(num_splits)
    if programmatic_launch or num_splits:
        call = replace(call, programmatic_launch=programmatic_launch, num_splits=num_splits)
    return call


def _bind_cache(
    tensors: tuple, call: AttentionCall, views: bool, new_out: dispatch.NewOut
) -> tuple[tuple, object]:
    q, k_cache, v_cache, seqlens, batch_idx, leftpad, block_table, alibi_slopes, sinks = tensors
    out = new_out(q)
    lse = _lse(q, (q.shape[0], q.shape[2], q.shape[1])) if call.return_lse else None
    fields = (q, k_cache, v_cache, out, lse, None, None, seqlens, block_table, alibi_slopes,
              sinks, batch_idx, leftpad)  # fmt: skip
    return fields, (out if lse is None else (out, lse))
