"""One description of an attention call: what validation checked and every backend reads.

Every entry point (``flash_attn_fwd``, the varlen and batched-decode calls, the flat-projection
calls, ``flash_attn_with_kvcache``) turns its arguments into the same two objects:

* ``AttentionCall``: the static facts of the call (layout, sizes, dtype, device, the softmax
  scale and every option). Validation builds it; the backends, the dispatcher's choice of a
  backend and the repeated-call cache read it. Adding an option means adding a field here, its
  check in ``validation`` and its meaning in the backends: no entry point's plumbing changes.
* ``AttentionTensors``: the data of the call, in one of two layouts: ``dense`` (q/out
  ``(batch, seqlen_q, heads, head_dim)``, k/v ``(batch, seqlen_k, heads_k, head_dim)``) or
  ``varlen`` (packed q/out ``(total_q, heads, head_dim)``, k/v ``(total_k, heads_k, head_dim)``).
  Paged K/V (``page_size > 0``) is ``(num_blocks, page_size, heads_k, head_dim)`` in both.

This module imports nothing else of forge_flash: it is the bottom of the layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Layout = Literal["dense", "varlen"]

#: No window: ``window_size`` (-1, -1).
NO_WINDOW = (-1, -1)


@dataclass(frozen=True)
class AttentionCall:
    """The static description of one attention call (see the module docstring)."""

    layout: Layout
    batch: int
    seqlen_q: int  # dense: per sequence; varlen: the longest
    seqlen_k: int  # keys addressable per sequence (a cache's capacity); varlen: the longest
    num_heads: int
    num_heads_k: int
    head_dim: int
    dtype: torch.dtype
    device: torch.device
    softmax_scale: float  # already rounded to float32
    causal: bool
    #: (left, right) keys around the aligned diagonal; -1 is unbounded. ``causal`` is kept as
    #: its own flag and also folded in here (right = 0), so a backend reads one rule.
    window: tuple[int, int] = NO_WINDOW
    softcap: float = 0.0  # 0: no softcap
    #: ALiBi slopes: None, "head" (num_heads,) or "batch_head" (batch, num_heads), float32.
    alibi: Literal["head", "batch_head"] | None = None
    sinks: bool = False  # a float32 (num_heads,) sink logit per head
    total_q: int = 0  # varlen: rows of the packed q
    total_k: int = 0  # varlen: rows of the packed k/v (0 when paged)
    #: Per-sequence key counts live on the device (``seqused_k``, ``cache_seqlens``).
    key_lengths: bool = False
    page_size: int = 0  # paged K/V: keys per block; 0 = contiguous
    num_blocks: int = 0  # paged K/V: blocks in the cache
    kv_batch_rows: int = 0  # dense K/V with a batch index: rows of the cache (else batch)
    kv_batch_index: bool = False  # sequence b reads cache row kv_batch_idx[b]
    k_start: bool = False  # sequence b's keys start at k_start[b] (left padding)
    return_lse: bool = False
    #: The kernels may start while the previous kernel in the stream still runs (programmatic
    #: dependent launch; they wait for it before touching memory): set after the fused K/V
    #: append, whose tail the attention's launch then overlaps. Timing only: results are equal.
    programmatic_launch: bool = False
    #: Split-KV parts per query block's keys: 0 lets the kernels' dispatcher choose; n >= 1
    #: asks for n (1: none), fewer where the keys are short (FlashAttention's ``num_splits``).
    #: Timing only: results are equal up to rounding.
    num_splits: int = 0

    @property
    def group(self) -> int:
        """Query heads per KV head (GQA)."""
        return self.num_heads // self.num_heads_k

    @property
    def plain(self) -> bool:
        """No score transform and no mask but causal: what every kernel takes."""
        return (
            self.window == (-1, 0 if self.causal else -1)
            and self.softcap == 0.0
            and self.alibi is None
            and not self.sinks
        )


@dataclass(slots=True)  # built on every call: slots make that and each field read cheaper
class AttentionTensors:
    """The data of one attention call, in the layout its ``AttentionCall`` names.

    ``out`` and ``lse`` are written by the backend: out like q; lse float32 ``(batch, heads,
    seqlen_q)`` (dense) or ``(heads, total_q)`` (varlen), or None when not asked for.

    A repeated call passes the same tensors as a plain tuple in this field order (``fields``):
    the prepared launch takes them positionally (``backends.base.PreparedRun``), since
    building this object on every call would cost 0.2 us of a decode step's host time.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    out: torch.Tensor
    lse: torch.Tensor | None = None
    cu_seqlens_q: torch.Tensor | None = None  # varlen, int32 (batch + 1,)
    cu_seqlens_k: torch.Tensor | None = None  # varlen, int32 (batch + 1,)
    seqused_k: torch.Tensor | None = None  # int32 (batch,): keys of sequence b
    block_table: torch.Tensor | None = None  # paged K/V, int32 (batch, max_blocks)
    alibi_slopes: torch.Tensor | None = None  # float32 (heads,) or (batch, heads)
    sinks: torch.Tensor | None = None  # float32 (heads,)
    kv_batch_idx: torch.Tensor | None = None  # int32 (batch,): cache row of sequence b
    k_start: torch.Tensor | None = None  # int32 (batch,): first key of sequence b

    def fields(self) -> tuple:
        """The fields in order, as a repeated call passes them (see the class docstring)."""
        return tuple(getattr(self, name) for name in self.__slots__)


@dataclass(slots=True)
class NewKeys:
    """The new keys/values of a decode step (``flash_attn_with_kvcache``) for a backend that
    appends them inside the attention (``Backend.attend_appending``): k/v ``(batch,
    seqlen_new, heads_k, head_dim)``, written into the caches at ``cache_seqlens[b] + i``
    (rotated with the tables, as ``kvcache_append.append_kv`` does) and attended with them; q
    rotated as ``kvcache_append.query_positions`` says."""

    k: torch.Tensor
    v: torch.Tensor
    rotary_cos: torch.Tensor | None
    rotary_sin: torch.Tensor | None
    rotary_interleaved: bool
    query_per_token: bool
