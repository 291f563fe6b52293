"""Fakes of the kernel plugin, for tests on machines without a GPU.

* ``install_fake_plugin`` writes an installed-looking ``forge-flash-cu13`` (or, with
  ``cuda_major=12``, ``forge-flash-cu12``) into a folder (a ``.dist-info`` with the entry
  point, and the ``forge_flash_cu13`` package with a ``_C`` module) so discovery finds it
  exactly as it finds the real one once the folder is on ``sys.path``.
* ``FakeBinding`` stands in for ``forge_flash_cu13._C`` at the level of raw pointers: it
  checks what the C API would check (alignment, strides, head_dim, dtype code), then builds
  tensor views from the pointers and strides it was given and computes the attention with the
  float64 reference. A wrong pointer or stride from the adapter therefore gives a wrong answer
  or an error, not a silent pass. It records every call, and can ask for a workspace.
"""

from __future__ import annotations

import ctypes
import textwrap
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch

from forge_flash.backends.cuda import CudaBackend

from .kvcache_reference import cache_slot, reference_rotary
from .reference import reference_attention

_DTYPES = {0: torch.float16, 1: torch.bfloat16}
_TABLE_DTYPES = {0: torch.float16, 1: torch.bfloat16, 2: torch.float32}

#: What the real binding's ``_C.limits()`` reports (csrc/include/forge_flash/limits.h).
LIMITS = {
    "max_head_dim": 256,
    "head_dim_multiple": 8,
    "head_dims": [32, 64, 96, 128, 160, 192, 224, 256],
    "alignment_bytes": 16,
    "stride_multiple": 8,
    "dtypes": {"float16": 0, "bfloat16": 1},
    "features": [
        "window",
        "softcap",
        "alibi",
        "sinks",
        "paged_kv",
        "kv_batch_index",
        "k_start",
        "any_scale",
    ],
}


def install_fake_plugin(
    root: Path,
    *,
    version: str = "0.1.0",
    binding_version: str | None = None,
    sass: tuple[int, ...] = (80, 90),
    ptx: tuple[int, ...] = (80,),
    import_error: str | None = None,
    driver_version: int = 13000,
    cuda_major: int = 13,
) -> Path:
    """Write the fake distribution under ``root``; put ``root`` on sys.path to install it.
    ``driver_version`` is what the driver supports (cudaDriverGetVersion: 12040 = CUDA 12.4);
    the fake's runtime is CUDA ``cuda_major``.0."""
    name = f"forge_flash_cu{cuda_major}"
    package = root / name
    package.mkdir(parents=True)
    dist_info = root / f"{name}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: forge-flash-cu{cuda_major}\nVersion: {version}\n"
    )
    (dist_info / "entry_points.txt").write_text(
        f"[forge_flash.backends]\ncu{cuda_major} = {name}\n"
    )
    init = f"from {name} import _C\n\n__version__ = {version!r}\n"
    if import_error:
        init = f"raise ImportError({import_error!r})\n"
    (package / "__init__.py").write_text(init)
    (package / "_C.py").write_text(
        textwrap.dedent(
            f"""
            LIMITS = {LIMITS!r}
            __version__ = {binding_version or version!r}
            CALLS = []

            def cuda_archs():
                return {list(sass)!r}

            def ptx_archs():
                return {list(ptx)!r}

            def cuda_version():
                return "{cuda_major}.0"

            def runtime_version():
                return {cuda_major * 1000}

            def driver_version():
                return {driver_version}

            def limits():
                return LIMITS

            class FwdCall:
                def __init__(self, *static):
                    self.static = static

                def __call__(self, *args):
                    CALLS.append((type(self).__name__, self.static, args))
                    return 0

                run = __call__

            class VarlenFwdCall(FwdCall):
                pass
            """
        )
    )
    return root


def _view(ptr: int, dtype: torch.dtype, shape: tuple[int, ...], strides: tuple[int, ...]):
    """A tensor over raw memory, as the kernels would address it."""
    if 0 in shape:
        return torch.empty(shape, dtype=dtype)
    span = 1 + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
    itemsize = torch.empty((), dtype=dtype).element_size()
    raw = (ctypes.c_byte * (span * itemsize)).from_address(ptr)
    return torch.frombuffer(raw, dtype=dtype).as_strided(shape, strides)


@dataclass
class FakeBinding:
    """A pointer-level stand-in for ``forge_flash_cu13._C`` (see the module docstring)."""

    workspace_needed: int = 0
    ask_twice: bool = False
    calls: list[dict] = field(default_factory=list)
    __version__: str = "0.1.0"

    def cuda_archs(self) -> list[int]:
        return [80, 90]

    def ptx_archs(self) -> list[int]:
        return [80]

    def cuda_version(self) -> str:
        return "13.0"

    def max_head_dim(self) -> int:
        return 256

    # -- checks the C API makes ---------------------------------------------------------------

    @staticmethod
    def _check(ptrs, strides, head_dim, dtype):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype code {dtype}")
        if head_dim % 8 or head_dim > 256:
            raise ValueError(f"head_dim {head_dim}")
        for ptr in ptrs:
            if ptr % 16:
                raise ValueError(f"pointer {ptr:#x} is not 16-byte aligned")
        for stride in strides:
            if stride % 8:
                raise ValueError(f"stride {stride} is not a multiple of 8")

    def _workspace(self, workspace, workspace_bytes) -> int:
        if self.workspace_needed and (workspace == 0 or workspace_bytes < self.workspace_needed):
            return self.workspace_needed
        if self.ask_twice and workspace:
            return self.workspace_needed + 1
        return 0

    # -- entry points: the binding's bound calls, over one flat function each ---------------

    def limits(self) -> dict:
        return LIMITS

    def FwdCall(self, *static):
        def call(q, k, v, out, lse, seqused_k, workspace, workspace_bytes, device, stream):
            return run(q, k, v, out, lse, seqused_k, 0, 0, 0, 0, 0, workspace, workspace_bytes,
                       device, stream)  # fmt: skip

        def run(q, k, v, out, lse, seqused_k, alibi, sinks, block_table, kv_batch_idx, k_start,
                workspace, workspace_bytes, device, stream):  # fmt: skip
            pointers = dict(alibi=alibi, sinks=sinks, block_table=block_table,
                            kv_batch_idx=kv_batch_idx, k_start=k_start)  # fmt: skip
            return self.fwd(q, k, v, out, lse, seqused_k, *static, workspace, workspace_bytes,
                            device, stream, **pointers)  # fmt: skip

        def run_append(append, q, k_cache, v_cache, out, lse, cache_seqlens, alibi, sinks,
                       block_table, kv_batch_idx, k, v, rotary_cos, rotary_sin, workspace,
                       workspace_bytes, device, stream):  # fmt: skip
            return self.fwd_append(
                static, append.static, q, k_cache, v_cache, out, lse, cache_seqlens,
                dict(alibi=alibi, sinks=sinks, block_table=block_table,
                     kv_batch_idx=kv_batch_idx),
                dict(k=k, v=v, rotary_cos=rotary_cos, rotary_sin=rotary_sin), workspace,
                workspace_bytes, device, stream,
            )  # fmt: skip

        call.run = run
        call.run_append = run_append
        return call

    def fwd_append(self, static, append, q, k_cache, v_cache, out, lse, cache_seqlens, options,
                   new, workspace, workspace_bytes, device, stream):  # fmt: skip
        """ff_attn_fwd_append: declines (-1, nothing written) where the C API does (the decode
        kernel takes at most 16 rows per KV head and new keys of one tile of 32), else the
        append's reference, then the attention's over the grown lengths with q rotated as the
        append kernel rotates it (the C API makes some steps two launches of
        its own: the same results)."""
        strides, batch, seqlen_q, _, num_heads, num_heads_k, head_dim = static[:7]
        self.calls.append(dict(entry="fwd_append", q=q, k_cache=k_cache, v_cache=v_cache, out=out,
                               lse=lse, cache_seqlens=cache_seqlens, attention_static=static,
                               **append, **options, **new))  # fmt: skip
        group = num_heads // num_heads_k
        rows = seqlen_q * group if group > 1 and seqlen_q * group <= 128 else seqlen_q
        rotary = append["rotary"][0] > 0
        if rows > 16 or append["sizes"][1] > 32:
            return -1
        needed = self._workspace(workspace, workspace_bytes)
        if needed:
            return needed
        element = _DTYPES[static[9]]
        q_rotated = torch.empty((batch, seqlen_q, num_heads, head_dim), dtype=element)
        grown = torch.empty(batch, dtype=torch.int32)
        # The append kernel's own reference, told about q (the bound call was made without).
        sizes = list(append["sizes"])
        sizes[2], sizes[3] = seqlen_q, num_heads
        q_strides = (*strides[0:3], *q_rotated.stride()[:3])
        step = dict(append, sizes=tuple(sizes), strides=(*append["strides"][:12], *q_strides))
        pointers = dict(new, k_cache=k_cache, v_cache=v_cache, q=q if rotary else 0,
                        q_out=q_rotated.data_ptr() if rotary else 0, cache_seqlens=cache_seqlens,
                        seqlens_out=grown.data_ptr(), cache_batch_idx=options["kv_batch_idx"],
                        block_table=options["block_table"])  # fmt: skip
        self._append(step, pointers)
        attended = q_rotated.data_ptr() if rotary else q
        q_strides = q_rotated.stride()[:3] if rotary else tuple(strides[0:3])
        calls = len(self.calls)
        result = self.fwd(attended, k_cache, v_cache, out, lse, grown.data_ptr(),
                          (*q_strides, *strides[3:]), *static[1:], workspace, workspace_bytes,
                          device, stream, **options)  # fmt: skip
        del self.calls[calls:]  # one recorded call: the fused step
        return result

    def VarlenFwdCall(self, *static):
        def run(q, k, v, out, lse, cu_q, cu_k, seqused_k, alibi, sinks, block_table, workspace,
                workspace_bytes, device, stream):  # fmt: skip
            pointers = dict(alibi=alibi, sinks=sinks, block_table=block_table)
            return self.varlen_fwd(q, k, v, out, lse, cu_q, cu_k, seqused_k, *static, workspace,
                                   workspace_bytes, device, stream, **pointers)  # fmt: skip

        return types.SimpleNamespace(run=run)

    def AppendKvCall(self, strides, rotary_strides, table_stride, sizes, rotary, dtype,
                     programmatic):  # fmt: skip
        """ff_append_kv from pointers: the caches, q_out and seqlens_out written through views
        built from the pointers and strides given, rotary by the float64 reference."""
        static = dict(strides=tuple(strides), rotary_strides=tuple(rotary_strides),
                      table_stride=table_stride, sizes=tuple(sizes), rotary=tuple(rotary),
                      dtype=dtype, programmatic=programmatic)  # fmt: skip
        if len(strides) != 18 or len(rotary_strides) != 4 or len(sizes) != 9 or len(rotary) != 5:
            raise TypeError("AppendKvCall: wrong field counts")

        def call(k, v, k_cache, v_cache, q, q_out, cache_seqlens, seqlens_out, cache_batch_idx,
                 block_table, rotary_cos, rotary_sin, device, stream):  # fmt: skip
            pointers = dict(k=k, v=v, k_cache=k_cache, v_cache=v_cache, q=q, q_out=q_out,
                            cache_seqlens=cache_seqlens, seqlens_out=seqlens_out,
                            cache_batch_idx=cache_batch_idx, block_table=block_table,
                            rotary_cos=rotary_cos, rotary_sin=rotary_sin, device=device,
                            stream=stream)  # fmt: skip
            self.calls.append(dict(entry="append_kv", **static, **pointers))
            self._append(static, pointers)

        call.static = static  # what FwdCall.run_append reads of it
        return call

    @staticmethod
    def _append(static, p):
        batch, seqlen_new, seqlen_q, heads, heads_k, head_dim, cache_batch, cache_len, width = (
            static["sizes"]
        )
        rotary_dim, seqlen_ro, table_dtype, interleaved, per_token = static["rotary"]
        if static["dtype"] not in _DTYPES or not 1 <= head_dim <= 256:
            raise ValueError(f"dtype code {static['dtype']} or head_dim {head_dim}")
        if rotary_dim % 2 or rotary_dim > head_dim or bool(p["rotary_cos"]) != bool(rotary_dim):
            raise ValueError(f"rotary_dim {rotary_dim}")
        if bool(p["q"]) != bool(p["q_out"]) or (p["q"] and not rotary_dim):
            raise ValueError("q and q_out go together, with rotary")
        if p["block_table"] and p["cache_batch_idx"]:
            raise ValueError("cache_batch_idx does not combine with a block_table")
        element, s = _DTYPES[static["dtype"]], static["strides"]

        def rows(ptr, i, b, n, h):
            return _view(ptr, element, (b, n, h, head_dim), (*s[3 * i : 3 * i + 3], 1))

        k = rows(p["k"], 0, batch, seqlen_new, heads_k)
        v = rows(p["v"], 1, batch, seqlen_new, heads_k)
        k_cache = rows(p["k_cache"], 2, cache_batch, cache_len, heads_k)
        v_cache = rows(p["v_cache"], 3, cache_batch, cache_len, heads_k)
        lengths = _view(p["cache_seqlens"], torch.int32, (batch,), (1,)).tolist()
        cache_rows = table = None
        if p["cache_batch_idx"]:
            cache_rows = _view(p["cache_batch_idx"], torch.int32, (batch,), (1,)).tolist()
        if p["block_table"]:
            shape, strides = (batch, width), (static["table_stride"], 1)
            table = _view(p["block_table"], torch.int32, shape, strides).tolist()
        new_positions = [[n + i for i in range(seqlen_new)] for n in lengths]
        if rotary_dim:
            tables = [
                _view(p[name], _TABLE_DTYPES[table_dtype], (seqlen_ro, rotary_dim // 2),
                      tuple(static["rotary_strides"][2 * j : 2 * j + 2]))
                for j, name in enumerate(("rotary_cos", "rotary_sin"))
            ]  # fmt: skip
            k = reference_rotary(k, *tables, new_positions, bool(interleaved)).to(element)
            if p["q"]:
                q = rows(p["q"], 4, batch, seqlen_q, heads)
                span = range(seqlen_q)
                positions = [[n + (i if per_token else 0) for i in span] for n in lengths]
                rotated = reference_rotary(q, *tables, positions, bool(interleaved))
                rows(p["q_out"], 5, batch, seqlen_q, heads).copy_(rotated)
        for b, row in enumerate(new_positions):
            for i, position in enumerate(row):
                slot = cache_slot(b, position, cache_rows, table, cache_len)
                k_cache[slot], v_cache[slot] = k[b, i], v[b, i]
        if p["seqlens_out"]:
            grown = torch.tensor(lengths, dtype=torch.int32) + seqlen_new
            _view(p["seqlens_out"], torch.int32, (batch,), (1,)).copy_(grown)

    @staticmethod
    def _option_kwargs(options, causal, num_heads, batch, alibi, sinks):
        """The reference's keyword options from the bound options and pointers (only the ones
        in use, so plain calls need nothing beyond the plain reference)."""
        window_left, window_right, softcap, alibi_batch_stride = options[:4]
        kwargs = {}
        # The binding's window has causal folded in (right = 0); the reference takes causal.
        if (window_left, window_right) not in ((-1, -1), (-1, 0) if causal else (-1, -1)):
            kwargs["window_size"] = (window_left, window_right)
        if softcap:
            kwargs["softcap"] = softcap
        if alibi:
            shape = (batch, num_heads) if alibi_batch_stride else (num_heads,)
            kwargs["alibi_slopes"] = _view(
                alibi, torch.float32, shape, (alibi_batch_stride, 1)[-len(shape) :]
            )
        if sinks:
            kwargs["sinks"] = _view(sinks, torch.float32, (num_heads,), (1,))
        return kwargs

    def fwd(self, q, k, v, out, lse, seqused_k, strides, batch, seqlen_q, seqlen_k, num_heads,
            num_heads_k, head_dim, softmax_scale, causal, dtype, options, workspace,
            workspace_bytes, device, stream, *, alibi=0, sinks=0, block_table=0,
            kv_batch_idx=0, k_start=0):  # fmt: skip
        call = dict(
            entry="fwd", q=q, k=k, v=v, out=out, lse=lse, seqused_k=seqused_k,
            strides=tuple(strides), batch=batch, seqlen_q=seqlen_q, seqlen_k=seqlen_k,
            num_heads=num_heads, num_heads_k=num_heads_k, head_dim=head_dim,
            softmax_scale=softmax_scale, causal=causal, dtype=dtype, options=tuple(options),
            alibi=alibi, sinks=sinks, block_table=block_table, kv_batch_idx=kv_batch_idx,
            k_start=k_start, workspace=workspace, workspace_bytes=workspace_bytes, device=device,
            stream=stream,
        )  # fmt: skip
        self.calls.append(call)
        self._check((q, k, v, out), strides, head_dim, dtype)
        needed = self._workspace(workspace, workspace_bytes)
        if needed:
            return needed
        element = _DTYPES[dtype]
        s = strides
        page_size, num_blocks, table_stride, _, kv_rows = options[4:9]
        qv = _view(q, element, (batch, seqlen_q, num_heads, head_dim), (*s[0:3], 1))
        ov = _view(out, element, (batch, seqlen_q, num_heads, head_dim), (*s[9:12], 1))
        if page_size:  # paged: (num_blocks, page_size, hk, d), gathered through the table
            kv_shape = (num_blocks, page_size, num_heads_k, head_dim)
            width = seqlen_k // page_size
            table = _view(block_table, torch.int32, (batch, width), (table_stride, 1)).long()
            kv = _view(k, element, kv_shape, (*s[3:6], 1))[table].flatten(1, 2)
            vv = _view(v, element, kv_shape, (*s[6:9], 1))[table].flatten(1, 2)
        else:
            rows = kv_rows if kv_batch_idx else batch
            kv = _view(k, element, (rows, seqlen_k, num_heads_k, head_dim), (*s[3:6], 1))
            vv = _view(v, element, (rows, seqlen_k, num_heads_k, head_dim), (*s[6:9], 1))
            if kv_batch_idx:
                index = _view(kv_batch_idx, torch.int32, (batch,), (1,)).long()
                kv, vv = kv[index], vv[index]
        lengths = [seqlen_k] * batch
        if seqused_k:
            lengths = _view(seqused_k, torch.int32, (batch,), (1,)).tolist()
        starts = [0] * batch
        if k_start:
            starts = _view(k_start, torch.int32, (batch,), (1,)).tolist()
        kwargs = self._option_kwargs(options, causal, num_heads, batch, alibi, sinks)
        lse_view = None
        if lse:
            shape = (batch, num_heads, seqlen_q)
            lse_view = _view(lse, torch.float32, shape, (num_heads * seqlen_q, seqlen_q, 1))
        per_row_slopes = "alibi_slopes" in kwargs and kwargs["alibi_slopes"].dim() == 2
        if not k_start and not per_row_slopes:
            result, result_lse = reference_attention(
                qv, kv, vv, scale=softmax_scale, causal=causal,
                key_lengths=lengths if seqused_k else None, **kwargs,
            )  # fmt: skip
            ov.copy_(result)
            if lse_view is not None:
                lse_view.copy_(result_lse)
            return 0
        for b in range(batch):  # per-sequence key starts or slopes: one sequence at a time
            one = dict(kwargs)
            if "alibi_slopes" in one and one["alibi_slopes"].dim() == 2:
                one["alibi_slopes"] = one["alibi_slopes"][b]
            lo, hi = starts[b], max(starts[b], lengths[b])
            result, result_lse = reference_attention(
                qv[b : b + 1], kv[b : b + 1, lo:hi], vv[b : b + 1, lo:hi], scale=softmax_scale,
                causal=causal, **one,
            )  # fmt: skip
            ov[b].copy_(result[0])
            if lse_view is not None:
                lse_view[b].copy_(result_lse[0])
        return 0

    def varlen_fwd(self, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, seqused_k, strides,
                   batch, max_seqlen_q, max_seqlen_k, total_q, total_k, num_heads, num_heads_k,
                   head_dim, softmax_scale, causal, dtype, options, workspace, workspace_bytes,
                   device, stream, *, alibi=0, sinks=0, block_table=0):  # fmt: skip
        call = dict(
            entry="varlen_fwd", q=q, k=k, v=v, out=out, lse=lse, cu_seqlens_q=cu_seqlens_q,
            cu_seqlens_k=cu_seqlens_k, seqused_k=seqused_k, strides=tuple(strides), batch=batch,
            max_seqlen_q=max_seqlen_q, max_seqlen_k=max_seqlen_k, total_q=total_q,
            total_k=total_k, num_heads=num_heads, num_heads_k=num_heads_k, head_dim=head_dim,
            softmax_scale=softmax_scale, causal=causal, dtype=dtype, options=tuple(options),
            alibi=alibi, sinks=sinks, block_table=block_table, workspace=workspace,
            workspace_bytes=workspace_bytes, device=device, stream=stream,
        )  # fmt: skip
        self.calls.append(call)
        self._check((q, k, v, out), strides, head_dim, dtype)
        page_size, num_blocks, table_stride = options[4:7]
        if strides[0] or strides[9] or (not page_size and (strides[3] or strides[6])):
            raise ValueError("varlen batch strides must be 0")
        needed = self._workspace(workspace, workspace_bytes)
        if needed:
            return needed
        element = _DTYPES[dtype]
        s = strides
        qv = _view(q, element, (total_q, num_heads, head_dim), (*s[1:3], 1))
        ov = _view(out, element, (total_q, num_heads, head_dim), (*s[10:12], 1))
        bounds_q = _view(cu_seqlens_q, torch.int32, (batch + 1,), (1,)).tolist()
        bounds_k = _view(cu_seqlens_k, torch.int32, (batch + 1,), (1,)).tolist()
        used = _view(seqused_k, torch.int32, (batch,), (1,)).tolist() if seqused_k else None
        if page_size:
            kv_shape = (num_blocks, page_size, num_heads_k, head_dim)
            kp = _view(k, element, kv_shape, (*s[3:6], 1))
            vp = _view(v, element, kv_shape, (*s[6:9], 1))
            width = -(-max_seqlen_k // page_size)
            table = _view(block_table, torch.int32, (batch, width), (table_stride, 1)).long()
        else:
            kv = _view(k, element, (total_k, num_heads_k, head_dim), (*s[4:6], 1))
            vv = _view(v, element, (total_k, num_heads_k, head_dim), (*s[7:9], 1))
        lse_view = None
        if lse:
            lse_view = _view(lse, torch.float32, (num_heads, total_q), (total_q, 1))
        kwargs = self._option_kwargs(options, causal, num_heads, batch, alibi, sinks)
        for b in range(batch):
            q0, q1, k0, k1 = bounds_q[b], bounds_q[b + 1], bounds_k[b], bounds_k[b + 1]
            # The kernels' rule (cta_work.cuh, sequence_extent): seqused_k within the count.
            n = k1 - k0 if used is None else min(used[b], k1 - k0)
            if page_size:
                rows = table[b].repeat_interleave(page_size)[:n]
                ks, vs = (
                    kp[rows, torch.arange(n) % page_size],
                    vp[rows, torch.arange(n) % page_size],
                )
            else:
                ks, vs = kv[k0 : k0 + n], vv[k0 : k0 + n]
            one = dict(kwargs)
            if "alibi_slopes" in one and one["alibi_slopes"].dim() == 2:
                one["alibi_slopes"] = one["alibi_slopes"][b]
            result, result_lse = reference_attention(
                qv[q0:q1].unsqueeze(0), ks.unsqueeze(0), vs.unsqueeze(0),
                scale=softmax_scale, causal=causal, **one,
            )  # fmt: skip
            ov[q0:q1].copy_(result[0])
            if lse_view is not None:
                lse_view[:, q0:q1].copy_(result_lse[0])
        return 0


#: The stream handle ``CpuCudaBackend`` passes.
STREAM = 0x5EED


class CpuCudaBackend(CudaBackend):
    """The real adapter, aimed at CPU tensors, on a fake GPU 0 with a fixed stream handle."""

    device_type = "cpu"

    def __init__(self, binding):
        super().__init__(types.SimpleNamespace(__version__="0.1.0"), binding)
        self._stream_of = lambda index: STREAM

    def device_reason(self, index):
        return None
