"""The CUDA backend: an adapter over the plugin's binding ``forge_flash_cu13._C``.

The binding takes no torch objects: data pointers, strides in elements, the raw stream
handle and the device ordinal (docs/architecture.md, "The binding"). This adapter:

* says which calls the kernels take (``unsupported``): CUDA tensors on a GPU the plugin can
  run on, a dtype, head_dim and options the plugin lists in ``_C.limits()``. The dispatcher
  sends every other call to the naive path, with the reason;
* gives the kernels a contiguous copy of any tensor whose layout they cannot take (base
  pointer not aligned, or a stride of a non-last dimension that is not a multiple of the
  plugin's stride unit); an ``out`` like that receives the result through a copy;
* follows the workspace protocol: call with no workspace; a non-zero return is the number
  of bytes needed, allocated from torch's stream-ordered caching allocator (CUDA-graph
  safe) and passed in a second call. The size is remembered per call shape, so repeated
  decode steps allocate first and call the binding once;
* does no host synchronisation and no per-call lookups: the binding's functions are bound
  once, per-device support is cached;
* offers ``prepare``: a call with its sizes, strides and flags bound, which later calls of
  the same signature (the dispatcher keeps one per signature) run from data pointers alone.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from types import ModuleType

import torch

from ..call import AttentionCall, AttentionTensors, NewKeys
from .base import Backend, PreparedRun

_DTYPE_NAMES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
_WORKSPACE_CACHE_ENTRIES = 4096  # distinct call shapes remembered; cleared when full
_CONTIGUOUS = torch.contiguous_format


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


class KernelLimits:
    """What the plugin's kernels take, as its ``_C.limits()`` reports (csrc/include/
    forge_flash/limits.h is the one place these numbers are written)."""

    def __init__(self, limits: dict) -> None:
        self.max_head_dim: int = limits["max_head_dim"]
        self.head_dim_multiple: int = limits["head_dim_multiple"]
        self.head_dims: tuple[int, ...] = tuple(limits["head_dims"])
        self.alignment: int = limits["alignment_bytes"]
        self.stride_multiple: int = limits["stride_multiple"]
        self.dtype_codes = {
            dtype: limits["dtypes"][name]
            for dtype, name in _DTYPE_NAMES.items()
            if name in limits["dtypes"]
        }
        self.features = frozenset(limits["features"])


def _feature_reason(call: AttentionCall, features: frozenset[str]) -> str | None:
    """The first option of ``call`` the kernels do not take, as a reason, or None."""
    wanted = {
        "window": call.window[0] >= 0 or (call.window[1] >= 0 and not call.causal),
        "softcap": call.softcap > 0,
        "alibi": call.alibi is not None,
        "sinks": call.sinks,
        "paged_kv": call.page_size > 0,
        "kv_batch_index": call.kv_batch_index,
        "k_start": call.k_start,
        "any_scale": not call.softmax_scale > 0,
    }
    for feature, used in wanted.items():
        if used and feature not in features:
            return f"this plugin's kernels do not take {feature.replace('_', ' ')}"
    return None


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
    backend's table, so a later ``_Launch`` of the same plan allocates up front). The prepared
    calls below are launches that read their pointers from the call's tensors (one object,
    so a decode step goes from the tensors to the binding in one Python call).
    """

    __slots__ = ("_call", "_device", "_index", "_key", "_known", "_sizes", "_stream_of")

    def __init__(self, backend: CudaBackend, bound, key: tuple, device: torch.device) -> None:
        self._call = bound
        self._index = device.index or 0
        self._device = device
        self._key = key
        self._sizes = backend._workspace_bytes
        self._known = self._sizes.get(key, 0)
        self._stream_of = backend._stream_of

    @property
    def key(self) -> tuple:
        """(the binding's call type, its static arguments): what this launch was bound from."""
        return self._key

    def run(self, *pointers: int) -> bool:
        """The call; False where the binding declined it (a negative answer: nothing ran)."""
        # A method, not __call__: a call through an instance's __call__ costs 0.04 us more.
        index, stream = self._index, self._stream_of(self._index)
        known = self._known
        if known:
            workspace = torch.empty(known, dtype=torch.uint8, device=self._device)
            needed = self._call(*pointers, workspace.data_ptr(), known, index, stream)
        else:
            needed = self._call(*pointers, 0, 0, index, stream)
        if needed > 0:
            self._grow(pointers, needed, index, stream)
        return needed >= 0

    def _grow(self, pointers: tuple, needed: int, index: int, stream: int) -> None:
        """The call again with the ``needed`` workspace bytes it asked for (remembered)."""
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


def _ptr(x: torch.Tensor | None) -> int:
    return 0 if x is None else x.data_ptr()


class _PreparedDense(_Launch):
    """A dense-layout call from data pointers (see ``PreparedRun``): the plain form passes the
    ten integers of a decode step, the option form every optional tensor too."""

    __slots__ = ("_align", "_options")

    def __init__(
        self, backend: CudaBackend, bound, key: tuple, device: torch.device, options: bool
    ) -> None:
        super().__init__(backend, bound, key, device)
        self._options = options
        self._align = backend.limits.alignment - 1

    def __call__(
        self, q, k, v, out, lse=None, cu_seqlens_q=None, cu_seqlens_k=None, seqused_k=None,
        block_table=None, alibi_slopes=None, sinks=None, kv_batch_idx=None, k_start=None,
    ) -> bool:  # fmt: skip
        q_ptr, k_ptr, v_ptr, out_ptr = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr()
        if (q_ptr | k_ptr | v_ptr | out_ptr) & self._align:  # prepared for aligned bases
            return False
        if self._options:
            self.run(
                q_ptr, k_ptr, v_ptr, out_ptr, _ptr(lse), _ptr(seqused_k), _ptr(alibi_slopes),
                _ptr(sinks), _ptr(block_table), _ptr(kv_batch_idx), _ptr(k_start),
            )  # fmt: skip
            return True
        # A decode step: no helper calls and, with no workspace needed, the binding called
        # here rather than through run (0.17 us less per call, measured on CPU).
        lse_ptr = 0 if lse is None else lse.data_ptr()
        lengths_ptr = 0 if seqused_k is None else seqused_k.data_ptr()
        if self._known:
            self.run(q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, lengths_ptr)
            return True
        index = self._index
        stream = self._stream_of(index)
        needed = self._call(q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, lengths_ptr, 0, 0, index, stream)
        if needed:
            pointers = (q_ptr, k_ptr, v_ptr, out_ptr, lse_ptr, lengths_ptr)
            self._grow(pointers, needed, index, stream)
        return True


class _PreparedVarlen(_PreparedDense):
    __slots__ = ()

    def __call__(
        self, q, k, v, out, lse=None, cu_seqlens_q=None, cu_seqlens_k=None, seqused_k=None,
        block_table=None, alibi_slopes=None, sinks=None, kv_batch_idx=None, k_start=None,
    ) -> bool:  # fmt: skip
        q_ptr, k_ptr, v_ptr, out_ptr = q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr()
        if (q_ptr | k_ptr | v_ptr | out_ptr) & self._align:
            return False
        self.run(
            q_ptr, k_ptr, v_ptr, out_ptr, _ptr(lse), cu_seqlens_q.data_ptr(),
            cu_seqlens_k.data_ptr(), _ptr(seqused_k), _ptr(alibi_slopes), _ptr(sinks),
            _ptr(block_table),
        )  # fmt: skip
        return True


class CudaBackend(Backend):
    """FlashAttention-style kernels from the ``forge-flash-cu13`` plugin."""

    name = "cuda"
    #: Device type whose tensors the kernels take (tests point it at "cpu" with a fake binding).
    device_type = "cuda"

    def __init__(self, plugin: ModuleType, binding: ModuleType) -> None:
        self.plugin = plugin
        self.binding = binding
        self.limits = KernelLimits(binding.limits())
        self._fwd = binding.FwdCall
        self._varlen_fwd = binding.VarlenFwdCall
        self._sass = list(binding.cuda_archs())
        self._ptx = list(binding.ptx_archs())
        self._device_reasons: dict[int, str | None] = {}
        self._stream_of = _raw_stream_getter()
        self._workspace_bytes: dict[tuple, int] = {}  # plan -> split-KV workspace size
        self._append_calls: dict[tuple, object] = {}  # layout -> bound _C.AppendKvCall
        self._fused_steps: dict[tuple, list | None] = {}  # layout -> attend_appending's entry

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

    def unsupported(self, call: AttentionCall) -> str | None:
        limits = self.limits
        if call.device.type != self.device_type:
            return f"the kernels take {self.device_type} tensors; got {call.device.type}"
        if call.dtype not in limits.dtype_codes:
            names = ", ".join(_DTYPE_NAMES[d] for d in limits.dtype_codes)
            return f"the kernels take {names}; got {call.dtype}"
        if call.head_dim % limits.head_dim_multiple or call.head_dim > limits.max_head_dim:
            return (
                f"the kernels take head_dim a multiple of {limits.head_dim_multiple} up to "
                f"{limits.max_head_dim}; got {call.head_dim}"
            )
        reason = self.device_reason(call.device.index or 0)
        if reason is not None:
            return reason
        return _feature_reason(call, limits.features)

    # -- layouts -------------------------------------------------------------------------------

    def _strides(self, x: torch.Tensor) -> tuple[int, ...] | None:
        """The strides of every dimension but the last as the kernels take them (non-zero
        multiples of the stride unit on an aligned base), or None if they cannot take ``x``."""
        if x.data_ptr() % self.limits.alignment:
            return None
        unit = self.limits.stride_multiple
        strides = x.stride()[:-1]
        if all(s and not s % unit for s in strides):
            return strides
        # A size-1 dimension's stride never addresses memory (torch leaves arbitrary values
        # there): report the contiguous one rather than copying.
        shape = x.shape
        strides = tuple(
            s if shape[i] > 1 else math.prod(shape[i + 1 :]) for i, s in enumerate(strides)
        )
        return strides if all(s and not s % unit for s in strides) else None

    def _operand(self, x: torch.Tensor) -> torch.Tensor:
        """``x``, or an aligned contiguous copy when the kernels cannot take its layout."""
        if self._strides(x) is not None:
            return x
        # clone, not .contiguous(): a contiguous view at an odd offset must move too, and fresh
        # allocations are aligned.
        return x.clone(memory_format=torch.contiguous_format)

    # -- calls ------------------------------------------------------------------------------

    def _options(self, call: AttentionCall, t: AttentionTensors) -> tuple:
        """The option fields of a bound call: window, softcap, ALiBi batch stride, paging, the
        programmatic launch and the split count."""
        alibi_batch_stride = t.alibi_slopes.stride(0) if call.alibi == "batch_head" else 0
        table_stride = max_blocks = 0
        if t.block_table is not None:
            table_stride, max_blocks = t.block_table.stride(0), t.block_table.shape[1]
        return (
            call.window[0], call.window[1], call.softcap, alibi_batch_stride,
            call.page_size, call.num_blocks, table_stride, max_blocks,
            call.kv_batch_rows or call.batch, call.programmatic_launch, call.num_splits,
        )  # fmt: skip

    def _bind(self, call: AttentionCall, t: AttentionTensors) -> PreparedRun | None:
        """The prepared launch of ``call`` on these layouts, or None if the kernels cannot
        take one of them as it is."""
        layouts = [self._strides(x) for x in (t.q, t.k, t.v, t.out)]
        if None in layouts:
            return None
        with_options = not call.plain or not call.softmax_scale > 0 or call.page_size > 0
        with_options = with_options or call.kv_batch_index or call.k_start or call.num_splits
        dtype = self.limits.dtype_codes[call.dtype]
        options = self._options(call, t)
        if call.layout == "varlen":
            # Packed tensors have no batch dimension; the binding ignores batch strides.
            strides = tuple(s for layout in layouts for s in (0, *layout[-2:]))
            if call.page_size:  # paged k/v: (block, row, head) strides
                strides = (*strides[:3], *layouts[1], *layouts[2], *strides[9:])
            static = (
                strides, call.batch, call.seqlen_q, call.seqlen_k, call.total_q, call.total_k,
                call.num_heads, call.num_heads_k, call.head_dim, call.softmax_scale,
                call.causal, dtype, options,
            )  # fmt: skip
            bound = self._varlen_fwd(*static)
            return _PreparedVarlen(self, bound.run, (self._varlen_fwd, static), call.device, True)
        static = (
            tuple(s for layout in layouts for s in layout),
            call.batch, call.seqlen_q, call.seqlen_k, call.num_heads, call.num_heads_k,
            call.head_dim, call.softmax_scale, call.causal, dtype, options,
        )  # fmt: skip
        bound = self._fwd(*static)
        return _PreparedDense(
            self, bound.run if with_options else bound, (self._fwd, static), call.device,
            with_options,
        )  # fmt: skip

    def prepare(self, call: AttentionCall, t: AttentionTensors) -> PreparedRun | None:
        if self.unsupported(call) is not None or t.out.numel() == 0:
            return None
        if call.layout == "dense" and call.seqlen_k == 0:
            return None
        for index in (t.seqused_k, t.block_table, t.kv_batch_idx, t.k_start):
            if (
                index is not None
                and index.dim() == 1
                and index.numel() > 1
                and index.stride(0) != 1
            ):
                return None
        if t.block_table is not None and t.block_table.stride(1) != 1:
            return None
        for vector in (t.alibi_slopes, t.sinks):  # read as [batch * stride + head]
            if vector is not None and vector.shape[-1] > 1 and vector.stride(-1) != 1:
                return None
        return self._bind(call, t)

    def run(self, call: AttentionCall, t: AttentionTensors) -> None:
        if t.out.numel() == 0:
            return
        packed = call.layout == "varlen" and not call.page_size
        if call.seqlen_k == 0 or (packed and call.total_k == 0):
            _no_keys(t)
            return
        out = t.out
        dest = (
            out
            if self._strides(out) is not None
            else torch.empty_like(out, memory_format=torch.contiguous_format)
        )
        contiguous = {
            name: x.contiguous()
            for name in ("cu_seqlens_q", "cu_seqlens_k", "seqused_k", "block_table",
                         "kv_batch_idx", "k_start", "alibi_slopes", "sinks")
            if (x := getattr(t, name)) is not None
        }  # fmt: skip
        ready = replace(
            t, q=self._operand(t.q), k=self._operand(t.k), v=self._operand(t.v), out=dest,
            **contiguous,
        )  # fmt: skip
        prepared = self._bind(call, ready)
        # the operands are laid out for it
        assert prepared is not None and prepared(*ready.fields())
        if dest is not out:
            out.copy_(dest)

    # -- merge of partial attention states (forge_flash.merge) ------------------------------

    def merge_states(
        self,
        outs: list[torch.Tensor],
        lses: list[torch.Tensor],
        out: torch.Tensor,
        out_lse: torch.Tensor,
    ) -> bool:
        merge = getattr(self.binding, "merge_states", None)  # absent from fakes of the binding
        if merge is None or not self._merge_qualifies(outs, out):
            return False
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
        return True

    def _merge_qualifies(self, outs: list[torch.Tensor], out: torch.Tensor) -> bool:
        return (
            out.device.type == self.device_type
            and out.numel() > 0
            and out.stride(-1) == 1
            and out.dtype in _MERGE_DTYPE_CODES
            and all(x.dtype in _MERGE_DTYPE_CODES for x in outs)
            and self.device_reason(out.device.index or 0) is None
        )

    # -- the K/V append of flash_attn_with_kvcache (forge_flash.kvcache_append) --------------

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
        k, v, rotary_cos, rotary_sin = new.k, new.v, new.rotary_cos, new.rotary_sin
        rotary_interleaved, query_per_token = new.rotary_interleaved, new.query_per_token
        rotary = rotary_cos is not None
        q_in = q if rotary else None
        # The layout: everything the kernel's bound call and its eligibility depend on (read
        # from the tensors in a few microseconds; the decision is made once per layout).
        layout = (
            k.dtype, k.device, k.shape, k.stride(), v.stride(), k_cache.shape, k_cache.stride(),
            v_cache.stride(), cache_seqlens.stride(),
            None if cache_batch_idx is None else cache_batch_idx.stride(),
            None if block_table is None else (block_table.shape, block_table.stride()),
            None if q_in is None else (q_in.shape, q_in.stride()),
            None if not rotary else (
                rotary_cos.shape, rotary_cos.stride(), rotary_cos.dtype, rotary_sin.stride(),
                rotary_sin.dtype, bool(rotary_interleaved), bool(query_per_token),
            ),
        )  # fmt: skip
        entry = self._append_calls.get(layout)
        if entry is None:
            if len(self._append_calls) >= _WORKSPACE_CACHE_ENTRIES:
                self._append_calls.clear()
            entry = self._append_calls[layout] = self._append_entry(
                k_cache, v_cache, cache_seqlens, new, cache_batch_idx, block_table, q_in
            )
        if entry is None:
            return None
        bound, spans = entry
        # The kernel reads the new keys while it writes the caches: apart, or the torch ops.
        k_ptr, v_ptr, k_cache_ptr, v_cache_ptr = (
            k.data_ptr(), v.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr()
        )  # fmt: skip
        if not _apart((k_ptr, v_ptr), (k_cache_ptr, v_cache_ptr), spans):
            return None
        q_out = None if q_in is None else torch.empty_like(q_in, memory_format=_CONTIGUOUS)
        seqlens_out = torch.empty(k.shape[0], dtype=torch.int32, device=k.device)
        index = k.device.index or 0
        bound(
            k_ptr, v_ptr, k_cache_ptr, v_cache_ptr, _ptr(q_in), _ptr(q_out),
            cache_seqlens.data_ptr(), seqlens_out.data_ptr(), _ptr(cache_batch_idx),
            _ptr(block_table), _ptr(rotary_cos), _ptr(rotary_sin), index, self._stream_of(index),
        )  # fmt: skip
        return q_out, seqlens_out

    def _append_entry(
        self, k_cache, v_cache, cache_seqlens, new, cache_batch_idx, block_table, q_in
    ) -> tuple[object, tuple[int, int, int, int]] | None:
        """For one layout: the bound ``_C.AppendKvCall`` and the byte spans of k, v, k_cache
        and v_cache (for the per-call overlap check), or None when the kernel does not
        take the layout (validated by ``kvcache_checks``; the torch ops take every one)."""
        k, v, rotary_cos, rotary_sin = new.k, new.v, new.rotary_cos, new.rotary_sin
        bound_type = getattr(self.binding, "AppendKvCall", None)  # absent from older fakes
        if bound_type is None or k.device.type != self.device_type:
            return None
        if k.dtype not in self.limits.dtype_codes or k.shape[3] > self.limits.max_head_dim:
            return None
        if not k.shape[0] or not k.shape[1]:
            return None  # nothing to append (the torch ops do nothing either)
        rows = [k, v, k_cache, v_cache] + ([] if q_in is None else [q_in])
        if any(x.stride(-1) != 1 and x.shape[-1] > 1 for x in rows):
            return None
        rotary = rotary_cos is not None
        if rotary and (
            rotary_sin.dtype != rotary_cos.dtype or rotary_cos.dtype not in _MERGE_DTYPE_CODES
        ):
            return None
        for index in (cache_seqlens, cache_batch_idx):
            if index is not None and index.numel() > 1 and index.stride(0) != 1:
                return None
        if block_table is not None and block_table.shape[1] > 1 and block_table.stride(1) != 1:
            return None
        if self.device_reason(k.device.index or 0) is not None:
            return None
        batch, seqlen_new, heads_k, head_dim = k.shape
        max_blocks = 0 if block_table is None else block_table.shape[1]
        table_stride = 0
        if block_table is not None:  # a single row's stride never addresses memory
            table_stride = block_table.stride(0) if block_table.shape[0] > 1 else max_blocks
        q_out = None if q_in is None else torch.empty(q_in.shape, device="meta")  # contiguous
        layouts = (k, v, k_cache, v_cache, q_in, q_out)
        static = (
            tuple(s for x in layouts for s in _row_strides(x)),
            (*rotary_cos.stride(), *rotary_sin.stride()) if rotary else (0, 0, 0, 0),
            table_stride,
            (
                batch, seqlen_new, 0 if q_in is None else q_in.shape[1],
                0 if q_in is None else q_in.shape[2], heads_k, head_dim, k_cache.shape[0],
                k_cache.shape[1], max_blocks,
            ),
            (
                2 * rotary_cos.shape[1], rotary_cos.shape[0], _MERGE_DTYPE_CODES[rotary_cos.dtype],
                int(new.rotary_interleaved), int(new.query_per_token),
            ) if rotary else (0, 0, 0, 0, 0),
            self.limits.dtype_codes[k.dtype],
            True,  # programmatic: the kernel waits for its predecessor before touching memory
        )  # fmt: skip
        return bound_type(*static), tuple(_span_bytes(x) for x in (k, v, k_cache, v_cache))

    # -- a decode step with its K/V append fused (flash_attn_with_kvcache) --------------------

    def attend_appending(
        self, describe, q, k_cache, v_cache, cache_seqlens, new, *, cache_batch_idx,
        block_table, alibi_slopes, sinks, options,
    ):  # fmt: skip
        k, v, cos, sin = new.k, new.v, new.rotary_cos, new.rotary_sin
        # Everything the bound calls depend on (validation has checked the rest).
        layout = (
            options, q.shape, q.stride(), q.dtype, q.device, k_cache.shape, k_cache.stride(),
            v_cache.stride(), k.shape, k.stride(), v.stride(), cache_seqlens.stride(),
            None if cache_batch_idx is None else cache_batch_idx.stride(),
            None if block_table is None else (block_table.shape, block_table.stride()),
            None if alibi_slopes is None else (alibi_slopes.shape, alibi_slopes.stride()),
            sinks is None,
            None if cos is None else (cos.shape, cos.stride(), cos.dtype, sin.stride(), sin.dtype),
            new.rotary_interleaved, new.query_per_token,
        )  # fmt: skip
        entry = self._fused_steps.get(layout, _NOT_PLANNED)
        if entry is _NOT_PLANNED:
            if len(self._fused_steps) >= _WORKSPACE_CACHE_ENTRIES:
                self._fused_steps.clear()
            entry = self._fused_steps[layout] = self._fused_entry(
                describe, q, k_cache, v_cache, cache_seqlens, new, cache_batch_idx, block_table,
                alibi_slopes, sinks,
            )  # fmt: skip
        if entry is None:
            return None
        launch, spans, return_lse = entry
        pointers = (
            q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), k.data_ptr(), v.data_ptr()
        )  # fmt: skip
        if (pointers[0] | pointers[1] | pointers[2] | pointers[3] | pointers[4]) & 15:
            return None  # bound for 16-byte aligned bases (the C API's vectors need them)
        if not _apart(pointers[3:], pointers[1:3], spans):
            return None  # the kernel reads the new keys while it writes the caches
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        lse = _cache_lse(q) if return_lse else None
        if not launch.run(
            pointers[0], pointers[1], pointers[2], out.data_ptr(), _ptr(lse),
            cache_seqlens.data_ptr(), _ptr(alibi_slopes), _ptr(sinks), _ptr(block_table),
            _ptr(cache_batch_idx), pointers[3], pointers[4], _ptr(cos), _ptr(sin),
        ):  # fmt: skip
            self._fused_steps[layout] = None  # the step does not fuse (nothing ran): never again
            return None
        return out if lse is None else (out, lse)

    def _fused_entry(
        self, describe, q, k_cache, v_cache, cache_seqlens, new, cache_batch_idx, block_table,
        alibi_slopes, sinks,
    ) -> tuple[_Launch, tuple[int, int, int, int], bool] | None:  # fmt: skip
        """For one layout: the launch of the attention's bound ``_C.FwdCall.run_append`` with
        the append's bound ``_C.AppendKvCall`` (the workspace protocol as for every launch),
        the byte spans of k, v and the caches, and return_lse; or None where the kernels do
        not take the step as it is."""
        call = describe()
        if self.unsupported(call) is not None or call.layout != "dense" or call.k_start:
            return None
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        lse = _cache_lse(q) if call.return_lse else None
        tensors = AttentionTensors(
            q=q, k=k_cache, v=v_cache, out=out, lse=lse, seqused_k=cache_seqlens,
            block_table=block_table, alibi_slopes=alibi_slopes, sinks=sinks,
            kv_batch_idx=cache_batch_idx,
        )  # fmt: skip
        prepared = self.prepare(call, tensors)
        if prepared is None:
            return None
        append = self._append_entry(
            k_cache, v_cache, cache_seqlens, new, cache_batch_idx, block_table, None
        )
        if append is None:
            return None
        fwd_type, static = prepared.key  # the attention's bound call, with the option fields
        fwd = fwd_type(*static)
        if not hasattr(fwd, "run_append"):
            return None  # a plugin (or test fake) without the fused step
        bound, spans = append
        key = (fwd_type, static, "append")  # a plan (splits, workspace) of its own
        launch = _Launch(self, functools.partial(fwd.run_append, bound), key, call.device)
        return launch, spans, call.return_lse


_NOT_PLANNED = object()


def _cache_lse(q: torch.Tensor) -> torch.Tensor:
    """The float32 LSE of a cache attention over q (batch, seqlen_q, heads, head_dim)."""
    return torch.empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32, device=q.device)


def _apart(sources: tuple, caches: tuple, spans: tuple) -> bool:
    """Whether the byte ranges of k and v (``sources``) miss those of both caches."""
    for source, source_span in zip(sources, spans[:2], strict=True):
        for cache, cache_span in zip(caches, spans[2:], strict=True):
            if source < cache + cache_span and cache < source + source_span:
                return False
    return True


def _row_strides(x: torch.Tensor | None) -> tuple[int, int, int]:
    """(batch, row, head) strides of a 4-D tensor as the append kernel takes them: 0 for an
    absent tensor and for size-1 dimensions (whose strides torch leaves arbitrary), so they
    never stand in the way of 16-byte accesses."""
    if x is None:
        return (0, 0, 0)
    return tuple(s if n > 1 else 0 for n, s in zip(x.shape[:3], x.stride()[:3], strict=True))


def _span_bytes(x: torch.Tensor) -> int:
    """Bytes from ``x``'s first element to the end of its last (0 when empty)."""
    if not x.numel():
        return 0
    return (1 + sum((n - 1) * s for n, s in zip(x.shape, x.stride(), strict=True))) * (
        x.element_size()
    )


def _no_keys(t: AttentionTensors) -> None:
    """A call with no keys at all: output 0, LSE -inf (or the sink's logit)."""
    t.out.zero_()
    if t.lse is not None:
        if t.sinks is None:
            t.lse.fill_(float("-inf"))
        elif t.lse.dim() == 3:  # dense (batch, heads, seqlen_q)
            t.lse.copy_(t.sinks.view(1, -1, 1).expand_as(t.lse))
        else:  # varlen (heads, total_q)
            t.lse.copy_(t.sinks.view(-1, 1).expand_as(t.lse))


_MERGE_MAX_PARTS = 16  # FF_MERGE_MAX_PARTS
_MERGE_DTYPE_CODES = {torch.float16: 0, torch.bfloat16: 1, torch.float32: 2}


def _byte_span(x: torch.Tensor) -> tuple[int, int]:
    start = x.data_ptr()
    return start, start + _span_bytes(x)


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
