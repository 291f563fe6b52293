"""Head dims the kernels do not take, on the kernels anyway: zero-padded copies.

The kernels take head_dim a multiple of their ``head_dim_multiple`` (8: rows of whole 16-byte
chunks). FlashAttention-2 serves any head_dim up to 256 by padding q, k and v with zero
features up to the next multiple of 8 and slicing the output; this does the same around a
kernel backend. The extra features multiply zeros, so the scores, the softmax, the LSE and the
output's first head_dim features are those of the call as given (its ``softmax_scale`` was
fixed from the true head_dim when the call was described). The copies cost a read and a write
of q, k and v: for a decode step, of the whole cache, so this is where odd head dims go
instead of the naive path, not a fast path. The dispatcher takes it only where the head_dim is
the kernel backend's one objection (``pad_head_dim``).
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F

from ..call import AttentionCall, AttentionTensors
from .base import Backend


def padded_head_dim(head_dim: int, multiple: int) -> int:
    """The next multiple of ``multiple`` from ``head_dim`` (itself when it is one)."""
    return -(-head_dim // multiple) * multiple


class PaddedHeadDim(Backend):
    """``inner`` (a kernel backend) on copies of q, k and v padded to ``head_dim``."""

    def __init__(self, inner: Backend, head_dim: int) -> None:
        self.inner = inner
        self.head_dim = head_dim
        self.name = inner.name  # the kernels run the call

    def unsupported(self, call: AttentionCall) -> str | None:
        return self.inner.unsupported(replace(call, head_dim=self.head_dim))

    def run(self, call: AttentionCall, t: AttentionTensors) -> None:
        extra = self.head_dim - call.head_dim

        def pad(x: torch.Tensor) -> torch.Tensor:
            return F.pad(x, (0, extra))

        out = t.out.new_empty((*t.out.shape[:-1], self.head_dim))
        padded = replace(t, q=pad(t.q), k=pad(t.k), v=pad(t.v), out=out)
        self.inner.run(replace(call, head_dim=self.head_dim), padded)
        t.out.copy_(out[..., : call.head_dim])


def pad_head_dim(backend: Backend, call: AttentionCall) -> PaddedHeadDim | None:
    """``backend`` on padded copies, where it takes ``call`` once its head_dim is padded to
    the backend's multiple (a kernel backend's ``limits.head_dim_multiple``); else None."""
    limits = getattr(backend, "limits", None)
    multiple = getattr(limits, "head_dim_multiple", 0)
    if not multiple or call.head_dim % multiple == 0:
        return None
    padded = PaddedHeadDim(backend, padded_head_dim(call.head_dim, multiple))
    return padded if padded.unsupported(call) is None else None
