"""The backend interface: what the public API needs from an attention implementation.

Backends receive inputs that the public API has already validated, write into the ``out``
(and optional ``lse``) tensors they are given, and follow the conventions of
``forge_flash`` (bottom-right causal alignment, LSE float32 natural log, a row that sees no
key gives output 0 and LSE -inf).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Protocol

import torch


class PreparedFwd(Protocol):
    """``Backend.fwd`` with everything but the data pointers worked out in advance.

    Called with tensors of the signature it was prepared for (types, shapes, strides, dtypes,
    devices; the same memory may also be passed as views that differ only in size-1
    dimensions), it reads nothing from them but their data pointers. Returns False, having done
    nothing, when those pointers do not suit it (the caller then takes ``Backend.fwd``).
    """

    def __call__(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        out: torch.Tensor,
        lse: torch.Tensor | None,
        seqused_k: torch.Tensor | None,
    ) -> bool: ...


class Backend(ABC):
    """An attention implementation behind the public API."""

    #: Short name, as used by ``FORGE_FLASH_BACKEND`` and ``backend_info()``.
    name: ClassVar[str]

    def uses_kernels(self, device: torch.device, head_dim: int) -> bool:
        """Whether float16/bfloat16 inputs of this head_dim on ``device`` run on compiled kernels.

        The model-layer API casts float32 inputs to half precision only when this is true:
        on the naive path the cast would cost precision and buy nothing.
        """
        return False

    @abstractmethod
    def fwd(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        out: torch.Tensor,
        lse: torch.Tensor | None,
        *,
        softmax_scale: float,
        causal: bool,
        seqused_k: torch.Tensor | None = None,
    ) -> None:
        """Uniform batch: q/out (b, sq, h, d), k/v (b, sk, hk, d), lse (b, h, sq) float32.

        ``seqused_k`` (int32, (b,)): batch row i attends only to its first ``seqused_k[i]``
        keys (a KV cache's fill level); the causal alignment is then relative to that length.
        """

    @abstractmethod
    def varlen_fwd(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        out: torch.Tensor,
        lse: torch.Tensor | None,
        cu_seqlens_q: torch.Tensor,
        cu_seqlens_k: torch.Tensor,
        max_seqlen_q: int,
        max_seqlen_k: int,
        *,
        softmax_scale: float,
        causal: bool,
    ) -> None:
        """Packed batch: q/out (total_q, h, d), k/v (total_k, hk, d), lse (h, total_q) float32."""

    def prepare_fwd(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        out: torch.Tensor,
        lse: torch.Tensor | None,
        *,
        softmax_scale: float,
        causal: bool,
        seqused_k: torch.Tensor | None = None,
    ) -> PreparedFwd | None:
        """A fast repeatable form of this ``fwd`` call (the public API keeps one per call
        signature, so decode steps skip validation and planning), or None when the backend
        has none; the default, since the naive path's cost is its arithmetic."""
        return None

    def multi_head_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        scale: float | None,
        is_causal: bool,
        *,
        cast_dtype: torch.dtype | None = None,
    ) -> torch.Tensor:
        """All heads in one call on the flat projections model code holds (the design note's trait).

        q is (batch, seqlen_q, num_heads * head_dim) or (seqlen_q, num_heads * head_dim), k/v
        likewise with num_kv_heads; the result has q's layout. The default runs this backend's
        ``fwd``, which for the naive backend is the naive path; a backend whose kernels take
        only half precision gets float32 inputs auto-cast through ``uses_kernels``.
        """
        from ..layers import attention_fwd  # layers imports the backends: import late

        return attention_fwd(
            q, k, v, num_heads, num_kv_heads, head_dim, scale, is_causal,
            cast_dtype=cast_dtype, backend=self,
        )  # fmt: skip

    def merge_states(
        self,
        outs: list[torch.Tensor],
        lses: list[torch.Tensor],
        out: torch.Tensor,
        out_lse: torch.Tensor,
    ) -> None:
        """Merge partial results over disjoint key sets into ``out``/``out_lse`` (validated by
        ``forge_flash.merge_attention_states``, which documents the semantics). The default is
        the naive path."""
        from ..merge import naive_merge_states  # merge imports the backends: import late

        naive_merge_states(outs, lses, out, out_lse)

    def __repr__(self) -> str:
        return f"<forge_flash backend {self.name!r}>"
