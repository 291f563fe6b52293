"""The backend interface: what the dispatcher needs from an attention implementation.

A backend receives a call that validation has already checked, described once
(``forge_flash.call``: an ``AttentionCall`` and its ``AttentionTensors``), writes into the
``out`` (and optional ``lse``) tensors it is given, and follows the conventions of
``forge_flash`` (bottom-right causal alignment, LSE float32 natural log, a row that sees no key
gives output 0 and LSE -inf, or the sink's logit with sinks).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, Protocol

import torch

from ..call import AttentionCall, AttentionTensors, NewKeys


class PreparedRun(Protocol):
    """``Backend.run`` of one call with everything but the data pointers worked out.

    Called with tensors of the signature it was prepared for (types, shapes, strides, dtypes,
    devices), given positionally in the order of ``AttentionTensors``' fields (trailing
    absent ones may be left out; ``AttentionTensors.fields``), it reads nothing from them but
    their data pointers. Returns False, having done nothing, when those pointers do not suit
    it (the caller then takes ``Backend.run``).
    """

    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        out: torch.Tensor,
        *optional: torch.Tensor | None,
    ) -> bool: ...


class Backend(ABC):
    """An attention implementation behind the public API."""

    #: Short name, as used by ``FORGE_FLASH_BACKEND`` and ``backend_info()``.
    name: ClassVar[str]

    def unsupported(self, call: AttentionCall) -> str | None:
        """Why this backend does not run ``call`` (the dispatcher then takes the naive path
        and can say why), or None when it does. The default runs every call."""
        return None

    @abstractmethod
    def run(self, call: AttentionCall, t: AttentionTensors) -> None:
        """Compute ``call`` on ``t``: write ``t.out`` and, when given, ``t.lse``."""

    def prepare(self, call: AttentionCall, t: AttentionTensors) -> PreparedRun | None:
        """A fast repeatable form of ``run`` for this call's signature (the dispatcher keeps
        one per signature, so decode steps skip validation and planning), or None when the
        backend has none; the default, since the naive path's cost is its arithmetic."""
        return None

    def merge_states(
        self,
        outs: list[torch.Tensor],
        lses: list[torch.Tensor],
        out: torch.Tensor,
        out_lse: torch.Tensor,
    ) -> bool:
        """Merge partial results over disjoint key sets into ``out``/``out_lse`` (validated by
        ``forge_flash.merge_attention_states``, which documents the semantics). Returns False,
        having done nothing, when this backend does not take these parts (the default: the
        caller then takes the naive path)."""
        return False

    def append_kv(
        self,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        cache_seqlens: torch.Tensor,
        new: NewKeys,
        *,
        cache_batch_idx: torch.Tensor | None,
        block_table: torch.Tensor | None,
        q: torch.Tensor,
    ) -> tuple[torch.Tensor | None, torch.Tensor] | None:
        """The K/V append of ``flash_attn_with_kvcache`` in one step (the semantics of
        ``forge_flash.kvcache_append``, arguments validated by ``kvcache_checks``): writes
        ``new``'s k/v into the caches at ``cache_seqlens[b] + i``, rotated when it has tables,
        and returns ``(q rotated into a new tensor, or None without rotary; int32
        cache_seqlens + seqlen_new)``. Returns None, having done nothing, when this backend
        does not take the call (the default: the caller then takes the torch ops)."""
        return None

    def attend_appending(
        self,
        describe: Callable[[], AttentionCall],
        q: torch.Tensor,
        k_cache: torch.Tensor,
        v_cache: torch.Tensor,
        cache_seqlens: torch.Tensor,
        new: NewKeys,
        *,
        cache_batch_idx: torch.Tensor | None,
        block_table: torch.Tensor | None,
        alibi_slopes: torch.Tensor | None,
        sinks: torch.Tensor | None,
        options: tuple,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None:
        """A whole ``flash_attn_with_kvcache`` step (arguments validated by ``kvcache_checks``)
        with the append of ``new`` fused into the attention: the caches written as
        ``append_kv`` writes them, and the result of ``api.cache_attention`` over the keys
        cached before (``cache_seqlens``) plus the new ones, with q rotated.
        ``describe()`` gives the attention's ``AttentionCall`` (built once per layout);
        ``options`` (hashable) holds the static options it was built from. Returns None,
        having done nothing, when this backend does not fuse the step (the default: the caller
        then appends, then attends)."""
        return None

    def __repr__(self) -> str:
        return f"<forge_flash backend {self.name!r}>"
