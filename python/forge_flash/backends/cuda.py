"""The CUDA backend: an adapter over the plugin's binding ``forge_flash_cu13._C``.

The binding takes no torch objects: data pointers, strides in elements, the raw stream
handle and the device ordinal (docs/architecture.md, "The binding"). This adapter:

* sends a call to the kernels only when it qualifies: CUDA tensors on a GPU the plugin can
  run on, float16/bfloat16, head_dim a multiple of 8 and at most 256. Anything else runs on
  the naive path, so every input the public API accepts gets an answer;
* gives the kernels a contiguous copy of any tensor whose layout they cannot take (base
  pointer not 16-byte aligned, or a stride of a non-last dimension that is not a multiple of
  8 elements); an ``out`` like that receives the result through a copy;
* follows the workspace protocol: call with no workspace; a non-zero return is the number
  of bytes needed, allocated from torch's stream-ordered caching allocator (CUDA-graph
  safe) and passed in a second call. The size is remembered per call shape, so repeated
  decode steps allocate first and call the binding once;
* does no host synchronisation and no per-call lookups: the binding's functions are bound
  once, per-device support is cached;
* offers ``prepare_fwd``: a call with its sizes, strides and flags bound, which later calls
  of the same signature (the public API keeps one per signature) run from data pointers alone.
"""

from __future__ import annotations

import math
from types import ModuleType

import torch

from .base import Backend, PreparedFwd
from .naive import naive_fwd, naive_varlen_fwd

_DTYPE_CODES = {torch.float16: 0, torch.bfloat16: 1}
_KERNEL_MAX_HEAD_DIM = 256
_WORKSPACE_CACHE_ENTRIES = 4096  # distinct call shapes remembered; cleared when full


def kernel_device_reason(
    capability: tuple[int, int], sass: list[int], ptx: list[int]
) -> str | None:
    """Why the plugin cannot run on a GPU of this compute capability, or None if it can.

    SASS for sm_XY runs on sm_XZ with Z >= Y (same major version), so 8.6 and 8.9 run the
    sm_80 code while 9.0 needs sm_90; a GPU with no matching SASS can JIT-compile PTX of an
    equal or lower architecture.
    """
    major, minor = capability
    arch = 10 * major + minor
    if arch < 80:
        return f"compute capability {major}.{minor} is below 8.0, the oldest the kernels support"
    if any(a // 10 == major and a <= arch for a in sass):
        return None
    if any(p <= arch for p in ptx):
        return None
    return (
        f"the plugin holds SASS for {sorted(sass)} and PTX for {sorted(ptx)}, none of which "
        f"runs on compute capability {major}.{minor}"
    )


def _strides_ok(strides: tuple[int, ...]) -> bool:
    # A plain loop, not all(<generator>): this runs four times per call on the decode path.
    for stride in strides:  # noqa: SIM110
        if not stride or stride & 7:
            return False
    return True


def _kernel_strides(x: torch.Tensor) -> tuple[int, ...] | None:
    """The strides of every dimension but the last as the kernels take them (non-zero
    multiples of 8 elements on a 16-byte aligned base), or None if they cannot take ``x``."""
    if x.data_ptr() & 15:
        return None
    strides = x.stride()[:-1]
    if _strides_ok(strides):
        return strides
    # A size-1 dimension's stride never addresses memory (torch leaves arbitrary values
    # there): report the contiguous one rather than copying.
    shape = x.shape
    strides = tuple(
        stride if shape[i] > 1 else math.prod(shape[i + 1 :]) for i, stride in enumerate(strides)
    )
    return strides if _strides_ok(strides) else None


def _kernel_operand(x: torch.Tensor) -> torch.Tensor:
    """``x``, or an aligned contiguous copy when the kernels cannot take its layout."""
    if _kernel_strides(x) is not None:
        return x
    # clone, not .contiguous(): a contiguous view at an odd offset must move too, and fresh
    # allocations are aligned.
    return x.clone(memory_format=torch.contiguous_format)


def _destination(out: torch.Tensor) -> torch.Tensor:
    """Where the kernels write: ``out`` when they can, else a fresh buffer copied to ``out``."""
    if _kernel_strides(out) is not None:
        return out
    return torch.empty_like(out, memory_format=torch.contiguous_format)


def _no_work(out: torch.Tensor, lse: torch.Tensor | None, keys: int) -> bool:
    """Answer calls with no output or no keys here (output 0, LSE -inf); True if answered."""
    if out.numel() == 0:
        return True
    if keys == 0:
        out.zero_()
        if lse is not None:
            lse.fill_(float("-inf"))
        return True
    return False


def _raw_stream_getter():
    # torch's private fast path returns the handle as an int without building a Stream object
    # (a few microseconds per call on the decode path); the public call is the fallback.
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if raw is not None:
        return raw
    return lambda index: torch.cuda.current_stream(index).cuda_stream


class _Launch:
    """One binding call with everything but the data pointers bound (``_C.FwdCall`` or
    ``_C.VarlenFwdCall``, made once from the sizes, strides and flags).

    Follows the workspace protocol and remembers the size its plan needs (also in the
    backend's table, so a later ``_Launch`` of the same plan allocates up front).
    """

    __slots__ = ("_call", "_device", "_index", "_key", "_known", "_sizes", "_stream_of")

    def __init__(self, backend: CudaBackend, entry, static: tuple, device: torch.device) -> None:
        self._call = entry(*static)
        self._index = device.index or 0
        self._device = device
        self._key = (entry, self._index, static)
        self._sizes = backend._workspace_bytes
        self._known = self._sizes.get(self._key, 0)
        self._stream_of = backend._stream_of

    def __call__(self, *pointers: int) -> None:
        index, stream = self._index, self._stream_of(self._index)
        known = self._known
        if known:
            workspace = torch.empty(known, dtype=torch.uint8, device=self._device)
            needed = self._call(*pointers, workspace.data_ptr(), known, index, stream)
        else:
            needed = self._call(*pointers, 0, 0, index, stream)
        if not needed:
            return
        if len(self._sizes) >= _WORKSPACE_CACHE_ENTRIES:
            self._sizes.clear()
        self._sizes[self._key] = self._known = needed
        workspace = torch.empty(needed, dtype=torch.uint8, device=self._device)
        again = self._call(*pointers, workspace.data_ptr(), needed, index, stream)
        if again:
            raise RuntimeError(
                f"forge_flash_cu13 asked for {again} workspace bytes after being given "
                f"the {needed} it asked for first"
            )


class _PreparedFwd:
    """``CudaBackend.fwd`` from data pointers (see ``PreparedFwd``)."""

    __slots__ = ("_launch",)

    def __init__(self, launch: _Launch) -> None:
        self._launch = launch

    def __call__(self, q, k, v, out, lse, seqused_k) -> bool:
        q_ptr, k_ptr, v_ptr, out_ptr = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr()
        if (q_ptr | k_ptr | v_ptr | out_ptr) & 15:  # prepared for 16-byte aligned bases
            return False
        self._launch(
            q_ptr, k_ptr, v_ptr, out_ptr,
            0 if lse is None else lse.data_ptr(),
            0 if seqused_k is None else seqused_k.data_ptr(),
        )  # fmt: skip
        return True


class CudaBackend(Backend):
    """FlashAttention-2 style kernels from the ``forge-flash-cu13`` plugin."""

    name = "cuda"
    #: Device type whose tensors the kernels take (tests point it at "cpu" with a fake binding).
    device_type = "cuda"

    def __init__(self, plugin: ModuleType, binding: ModuleType) -> None:
        self.plugin = plugin
        self.binding = binding
        self._fwd = binding.FwdCall
        self._varlen_fwd = binding.VarlenFwdCall
        self._sass = list(binding.cuda_archs())
        self._ptx = list(binding.ptx_archs())
        self._device_reasons: dict[int, str | None] = {}
        self._stream_of = _raw_stream_getter()
        self._workspace_bytes: dict[tuple, int] = {}  # plan -> split-KV workspace size

    # -- which calls go to the kernels -------------------------------------------------------

    def device_reason(self, index: int) -> str | None:
        """Why GPU ``index`` cannot run the kernels, or None (cached per device)."""
        try:
            return self._device_reasons[index]
        except KeyError:
            capability = torch.cuda.get_device_capability(index)
            reason = kernel_device_reason(capability, self._sass, self._ptx)
            self._device_reasons[index] = reason
            return reason

    def uses_kernels(self, device: torch.device, head_dim: int) -> bool:
        return (
            device.type == self.device_type
            and head_dim % 8 == 0
            and head_dim <= _KERNEL_MAX_HEAD_DIM
            and self.device_reason(device.index or 0) is None
        )

    def _qualifies(self, q: torch.Tensor) -> bool:
        return q.dtype in _DTYPE_CODES and self.uses_kernels(q.device, q.shape[-1])

    # -- calls ------------------------------------------------------------------------------

    def _fwd_launch(self, q, k, v, out, softmax_scale: float, causal: bool) -> _Launch | None:
        """The launch of a ``fwd`` call on these layouts, or None if the kernels cannot take
        one of them as it is."""
        strides = [_kernel_strides(x) for x in (q, k, v, out)]
        if None in strides:
            return None
        batch, seqlen_q, num_heads, head_dim = q.shape
        static = (
            tuple(s for layout in strides for s in layout),
            batch, seqlen_q, k.shape[1], num_heads, k.shape[2], head_dim,
            softmax_scale, causal, _DTYPE_CODES[q.dtype],
        )  # fmt: skip
        return _Launch(self, self._fwd, static, q.device)

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
        if not self._qualifies(q) or out.numel() == 0 or k.shape[1] == 0:
            return None
        if seqused_k is not None and q.shape[0] > 1 and seqused_k.stride(0) != 1:
            return None
        launch = self._fwd_launch(q, k, v, out, softmax_scale, causal)
        return None if launch is None else _PreparedFwd(launch)

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
        if not self._qualifies(q):
            naive_fwd(
                q, k, v, out, lse, softmax_scale=softmax_scale, causal=causal,
                seqused_k=seqused_k,
            )  # fmt: skip
            return
        if _no_work(out, lse, k.shape[1]):
            return
        q, k, v = _kernel_operand(q), _kernel_operand(k), _kernel_operand(v)
        dest = _destination(out)
        if seqused_k is not None:
            seqused_k = seqused_k.contiguous()
        launch = self._fwd_launch(q, k, v, dest, softmax_scale, causal)
        assert launch is not None  # the operands above are laid out for the kernels
        _PreparedFwd(launch)(q, k, v, dest, lse, seqused_k)
        if dest is not out:
            out.copy_(dest)

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
        if not self._qualifies(q):
            naive_varlen_fwd(
                q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k,
                softmax_scale=softmax_scale, causal=causal,
            )  # fmt: skip
            return
        total_q, num_heads, head_dim = q.shape
        total_k, num_heads_k = k.shape[0], k.shape[1]
        if _no_work(out, lse, total_k):
            return
        q, k, v = _kernel_operand(q), _kernel_operand(k), _kernel_operand(v)
        dest = _destination(out)
        cu_seqlens_q = cu_seqlens_q.contiguous()
        cu_seqlens_k = cu_seqlens_k.contiguous()
        # Packed tensors have no batch dimension; the binding ignores batch strides.
        strides = (0, *_kernel_strides(q), 0, *_kernel_strides(k), 0, *_kernel_strides(v))
        static = (
            (*strides, 0, *_kernel_strides(dest)),
            cu_seqlens_q.shape[0] - 1, max_seqlen_q, max_seqlen_k, total_q, total_k,
            num_heads, num_heads_k, head_dim,
            softmax_scale, causal, _DTYPE_CODES[q.dtype],
        )  # fmt: skip
        _Launch(self, self._varlen_fwd, static, q.device)(
            q.data_ptr(), k.data_ptr(), v.data_ptr(), dest.data_ptr(),
            0 if lse is None else lse.data_ptr(),
            cu_seqlens_q.data_ptr(), cu_seqlens_k.data_ptr(), 0,
        )  # fmt: skip
        if dest is not out:
            out.copy_(dest)

    # -- merge of partial attention states (forge_flash.merge) ------------------------------

    def merge_states(
        self,
        outs: list[torch.Tensor],
        lses: list[torch.Tensor],
        out: torch.Tensor,
        out_lse: torch.Tensor,
    ) -> None:
        merge = getattr(self.binding, "merge_states", None)  # absent from fakes of the binding
        if merge is None or not self._merge_qualifies(outs, out):
            super().merge_states(outs, lses, out, out_lse)
            return
        # A part's last dimension must be contiguous; every other stride is taken as it is.
        outs = [x if x.stride(-1) == 1 else x.contiguous() for x in outs]
        # The kernel writes in place or apart from the parts, never over part of one.
        dest = out if _writable_over(out, outs) else torch.empty_like(out)
        dest_lse = out_lse if _writable_over(out_lse, lses) else torch.empty_like(out_lse)
        index = out.device.index or 0
        stream = self._stream_of(index)
        batch, seqlen, num_heads, head_dim = out.shape
        while True:
            last = len(outs) <= _MERGE_MAX_PARTS
            # More parts than one launch takes: merge the first ones into a float32 partial
            # that leads the next launch (the same order, so still deterministic).
            step_out = dest if last else torch.empty_like(out, dtype=torch.float32)
            step_lse = dest_lse if last else torch.empty_like(out_lse)
            parts = [
                (x.data_ptr(), _MERGE_DTYPE_CODES[x.dtype], *x.stride()[:3],
                 lse.data_ptr(), *lse.stride())
                for x, lse in zip(outs[:_MERGE_MAX_PARTS], lses[:_MERGE_MAX_PARTS], strict=True)
            ]  # fmt: skip
            merge(
                parts,
                (step_out.data_ptr(), _MERGE_DTYPE_CODES[step_out.dtype], *step_out.stride()[:3]),
                (step_lse.data_ptr(), *step_lse.stride()),
                batch, seqlen, num_heads, head_dim, index, stream,
            )  # fmt: skip
            if last:
                break
            outs = [step_out, *outs[_MERGE_MAX_PARTS:]]
            lses = [step_lse, *lses[_MERGE_MAX_PARTS:]]
        if dest is not out:
            out.copy_(dest)
        if dest_lse is not out_lse:
            out_lse.copy_(dest_lse)

    def _merge_qualifies(self, outs: list[torch.Tensor], out: torch.Tensor) -> bool:
        return (
            out.device.type == self.device_type
            and out.numel() > 0
            and out.stride(-1) == 1
            and out.dtype in _MERGE_DTYPE_CODES
            and all(x.dtype in _MERGE_DTYPE_CODES for x in outs)
            and self.device_reason(out.device.index or 0) is None
        )


_MERGE_MAX_PARTS = 16  # FF_MERGE_MAX_PARTS
_MERGE_DTYPE_CODES = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}


def _byte_span(x: torch.Tensor) -> tuple[int, int]:
    last = sum((n - 1) * s for n, s in zip(x.shape, x.stride(), strict=True))
    start = x.data_ptr()
    return start, start + (last + 1) * x.element_size()


def _writable_over(dest: torch.Tensor, parts: list[torch.Tensor]) -> bool:
    """Whether the merge kernel may write ``dest`` as it is: it is either exactly one of the
    parts (same memory, dtype and strides: an in-place merge) or apart from every part."""
    start, stop = _byte_span(dest)
    for part in parts:
        part_start, part_stop = _byte_span(part)
        if part_stop <= start or stop <= part_start:
            continue
        same = (
            part.data_ptr() == dest.data_ptr()
            and part.dtype == dest.dtype
            and all(
                n <= 1 or a == b
                for n, a, b in zip(dest.shape, dest.stride(), part.stride(), strict=True)
            )
        )
        if not same:
            return False
    return True
