"""Input checks shared by every entry point.

Every check runs before any work and raises ``TypeError`` (wrong kind of object or dtype) or
``ValueError`` (wrong shape, device or value) with a message that starts with the argument's
name, says what it got and what it needs.

Checks that need the *values* of device tensors (``cu_seqlens`` bounds, ``max_seqlen``,
``cache_seqlens``) read them back to the host. On a GPU that is a synchronisation, so it is
skipped while a CUDA graph is being captured (reading back is not allowed then) and when
``FORGE_FLASH_CHECK_DEVICE_VALUES=0``; the kernels clamp those values and can never read or
write out of bounds, so skipping only loses the error message, not memory safety.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
import os
from collections.abc import Iterator
from dataclasses import replace
from typing import NamedTuple

import torch

from .call import NO_WINDOW, AttentionCall

#: The public API's head_dim limit, the same on every backend (the kernels' own limits come from
#: the plugin: ``_C.limits()``, read by ``backends.cuda``).
MAX_HEAD_DIM = 256
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
CAST_DTYPES = (torch.float16, torch.bfloat16)

_CHECK_VALUES_ENV = "FORGE_FLASH_CHECK_DEVICE_VALUES"
# Read once: the decode path calls this on every token.
_CHECK_DEVICE_VALUES = os.environ.get(_CHECK_VALUES_ENV, "1").strip() not in ("0", "false", "no")


def _shape(x: torch.Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def check_tensor(name: str, x: object, ndim: int, layout: str) -> torch.Tensor:
    """A float tensor of rank ``ndim`` whose last dimension is contiguous."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}; got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions {layout}; got shape {_shape(x)}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16 or float32; got {x.dtype}")
    if x.shape[-1] > 1 and x.stride(-1) != 1:
        raise ValueError(
            f"{name} must have a contiguous last dimension (stride 1); got strides "
            f"{x.stride()}; call .contiguous() first"
        )
    return x


def check_like(name: str, x: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """Same dtype and same device as the reference tensor (normally q)."""
    if x.dtype != ref.dtype:
        raise TypeError(f"{name} must have the dtype of {ref_name} ({ref.dtype}); got {x.dtype}")
    if x.device != ref.device:
        raise ValueError(
            f"{name} must be on the device of {ref_name} ({ref.device}); got {x.device}"
        )


def check_head_dim(name: str, head_dim: int) -> None:
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        label = name if name == "head_dim" else f"{name} (head_dim)"
        raise ValueError(f"{label} must be between 1 and {MAX_HEAD_DIM}; got {head_dim}")


def check_heads(q_name: str, num_heads: int, k_name: str, num_heads_k: int) -> None:
    if num_heads_k < 1:
        raise ValueError(f"{k_name} (num_heads_k) must be at least 1; got {num_heads_k}")
    if num_heads % num_heads_k:
        raise ValueError(
            f"{q_name} (num_heads = {num_heads}) must be a multiple of {k_name} "
            f"(num_heads_k = {num_heads_k}) for grouped-query attention"
        )


def check_out(out: object, shape: tuple[int, ...], q: torch.Tensor) -> None:
    if out is None:
        return
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor or None; got {type(out).__name__}")
    if _shape(out) != shape:
        raise ValueError(f"out must have shape {shape} (that of the result); got {_shape(out)}")
    check_like("out", out, "q", q)


def check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool; got {value!r} ({type(value).__name__})")
    return value


_FLOAT32_MAX = 3.4028234663852886e38


def _as_float32(value: float) -> float:
    """The value the kernels see (they take a float32): ``value`` rounded to the nearest
    float32, ties to even, subnormals included; OverflowError where that is infinite.

    Written with ``math`` rather than ``struct.pack("f", ...)``: Dynamo (torch 2.4) cannot
    trace ``struct``, and the entry points run this while ``torch.compile`` traces them.
    """
    if value == 0.0 or not math.isfinite(value):
        return value
    mantissa, exponent = math.frexp(value)  # value = mantissa * 2**exponent, 0.5 <= |m| < 1
    bits = min(24, exponent + 149)  # float32 keeps 24 bits, fewer below 2**-126 (subnormal)
    rounded = math.ldexp(round(math.ldexp(mantissa, bits)), exponent - bits)  # round(): ties even
    if abs(rounded) > _FLOAT32_MAX:
        raise OverflowError(f"{value} is past float32's range")
    return rounded


def resolve_scale(name: str, scale: object, head_dim: int) -> float:
    """The softmax scale, rounded to float32 so every backend uses the same one.

    ``head_dim ** -0.5`` when None, else a real number that is finite in float32.
    """
    if scale is None:
        return _as_float32(head_dim**-0.5)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"{name} must be a float or None; got {scale!r} ({type(scale).__name__})")
    value = float(scale)
    try:
        rounded = _as_float32(value)
    except OverflowError:
        rounded = math.inf
    if not math.isfinite(rounded):
        raise ValueError(f"{name} must be finite as a float32 (|scale| < 3.4e38); got {value}")
    return rounded


def as_int(name: str, value: object) -> int:
    """``value`` as an int (not a bool), or TypeError naming ``name``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int; got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int; got {value!r} ({type(value).__name__})") from None


def check_int(name: str, value: object, minimum: int) -> int:
    number = as_int(name, value)
    if number < minimum:
        raise ValueError(f"{name} must be at least {minimum}; got {number}")
    return number


def check_num_splits(value: object) -> int:
    """``num_splits`` (FlashAttention's): 0 lets the kernels choose, n >= 1 asks for n split-KV
    parts. Counts past what the kernels take run at their most (the C API caps them), so any
    larger int is kept at a C int's range."""
    return min(check_int("num_splits", value, 0), 2**31 - 1)


def check_index_tensor(name: str, x: object, length: int | None, q: torch.Tensor) -> torch.Tensor:
    """A 1-D int32 tensor on q's device (``cu_seqlens``, ``cache_seqlens``)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of int32; got {type(x).__name__}")
    if x.dtype != torch.int32:
        raise TypeError(f"{name} must have dtype torch.int32; got {x.dtype}")
    if x.dim() != 1:
        raise ValueError(f"{name} must be 1-D; got shape {_shape(x)}")
    if length is not None and x.shape[0] != length:
        raise ValueError(f"{name} must have length {length}; got {x.shape[0]}")
    if x.device != q.device:
        raise ValueError(f"{name} must be on the device of q ({q.device}); got {x.device}")
    return x


def device_values_checked(device: torch.device) -> bool:
    """Whether value checks may ever read tensors on ``device`` (not CUDA tensors under
    ``FORGE_FLASH_CHECK_DEVICE_VALUES=0``): a repeated call decides this once."""
    return device.type != "cuda" or _CHECK_DEVICE_VALUES


@contextlib.contextmanager
def device_value_checks_off() -> Iterator[None]:
    """Calls made inside skip the checks that read device values, as under
    ``FORGE_FLASH_CHECK_DEVICE_VALUES=0``: for timing calls as an engine makes them (a varlen
    or paged call's read-back of ``cu_seqlens`` synchronises the host with the GPU and forbids
    capturing the call in a CUDA graph)."""
    global _CHECK_DEVICE_VALUES
    checks, _CHECK_DEVICE_VALUES = _CHECK_DEVICE_VALUES, False
    try:
        yield
    finally:
        _CHECK_DEVICE_VALUES = checks


def device_values_readable(x: torch.Tensor) -> bool:
    """Whether a value check may read ``x`` back to the host now (see the module docstring)."""
    if not x.is_cuda:
        return not x.is_meta
    if not _CHECK_DEVICE_VALUES:
        return False
    with torch.cuda.device(x.device):
        return not torch.cuda.is_current_stream_capturing()


def check_cu_seqlens_values(
    name: str, cu_seqlens: torch.Tensor, total: int, total_name: str, max_name: str, max_seqlen: int
) -> int | None:
    """0 first, non-decreasing, ``total`` last, and no sequence longer than ``max_seqlen``.
    Returns the longest sequence's length, or None where the values may not be read."""
    if not device_values_readable(cu_seqlens):
        return None
    bounds = cu_seqlens.tolist()
    if bounds[0] != 0:
        raise ValueError(f"{name} must start at 0; got {name}[0] = {bounds[0]}")
    longest = 0
    for i in range(1, len(bounds)):
        length = bounds[i] - bounds[i - 1]
        if length < 0:
            raise ValueError(
                f"{name} must be non-decreasing; got {name}[{i - 1}] = {bounds[i - 1]} > "
                f"{name}[{i}] = {bounds[i]}"
            )
        longest = max(longest, length)
    if bounds[-1] != total:
        raise ValueError(
            f"{name} must end at {total_name} = {total} (the rows of the packed tensor); "
            f"got {name}[-1] = {bounds[-1]}"
        )
    if longest > max_seqlen:
        raise ValueError(
            f"{max_name} must be at least the longest sequence in {name} ({longest}); "
            f"got {max_seqlen}"
        )
    return longest


def check_fwd(q: object, k: object, v: object, out: object) -> AttentionCall:
    """flash_attn_fwd's inputs: q (b, sq, h, d), k/v (b, sk, hk, d), optional out like q."""
    q = check_tensor("q", q, 4, "(batch, seqlen_q, num_heads, head_dim)")
    k = check_tensor("k", k, 4, "(batch, seqlen_k, num_heads_k, head_dim)")
    v = check_tensor("v", v, 4, "(batch, seqlen_k, num_heads_k, head_dim)")
    check_like("k", k, "q", q)
    check_like("v", v, "q", q)
    batch, seqlen_q, num_heads, head_dim = q.shape
    check_head_dim("q.shape[3]", head_dim)
    if k.shape[0] != batch or k.shape[3] != head_dim:
        raise ValueError(
            f"k must have shape (batch={batch}, seqlen_k, num_heads_k, head_dim={head_dim}) "
            f"to match q {_shape(q)}; got {_shape(k)}"
        )
    if v.shape != k.shape:
        raise ValueError(f"v must have the shape of k {_shape(k)}; got {_shape(v)}")
    check_heads("q.shape[2]", num_heads, "k.shape[2]", k.shape[2])
    check_out(out, _shape(q), q)
    return AttentionCall(
        layout="dense", batch=batch, seqlen_q=seqlen_q, seqlen_k=k.shape[1],
        num_heads=num_heads, num_heads_k=k.shape[2], head_dim=head_dim, dtype=q.dtype,
        device=q.device, softmax_scale=0.0, causal=False,
    )  # fmt: skip


def _check_paged_cache(
    k_name: str, k: torch.Tensor, v_name: str, v: torch.Tensor, head_dim: int, q: torch.Tensor
) -> None:
    """k/v as paged caches (num_blocks, page_size, heads_k, head_dim)."""
    layout = "(num_blocks, page_size, num_heads_k, head_dim)"
    check_tensor(k_name, k, 4, f"{layout} with block_table")
    check_tensor(v_name, v, 4, f"{layout} with block_table")
    check_like(k_name, k, "q", q)
    check_like(v_name, v, "q", q)
    if k.shape[3] != head_dim or k.shape[1] < 1:
        raise ValueError(
            f"{k_name} must have shape {layout} with page_size >= 1 and head_dim={head_dim}; "
            f"got {_shape(k)}"
        )
    if v.shape != k.shape:
        raise ValueError(f"{v_name} must have the shape of {k_name} {_shape(k)}; got {_shape(v)}")


def check_block_table(
    block_table: object, batch: int, num_blocks: int, page_size: int, q: torch.Tensor
) -> tuple[int, int]:
    """int32 (batch, max_blocks) on q's device; ids in [0, num_blocks) (read back when
    allowed). Returns (max_blocks, keys addressable per sequence)."""
    if not isinstance(block_table, torch.Tensor):
        raise TypeError(
            f"block_table must be a torch.Tensor of int32; got {type(block_table).__name__}"
        )
    if block_table.dtype != torch.int32:
        raise TypeError(f"block_table must have dtype torch.int32; got {block_table.dtype}")
    if block_table.dim() != 2 or block_table.shape[0] != batch:
        raise ValueError(
            f"block_table must have shape (batch={batch}, max_blocks_per_seq); "
            f"got {_shape(block_table)}"
        )
    if block_table.device != q.device:
        raise ValueError(
            f"block_table must be on the device of q ({q.device}); got {block_table.device}"
        )
    if block_table.numel() and device_values_readable(block_table):
        low, high = torch.stack(torch.aminmax(block_table)).tolist()
        if low < 0 or high >= num_blocks:
            bad = low if low < 0 else high
            raise ValueError(
                f"block_table ids must lie in [0, num_blocks = {num_blocks}); got {bad}"
            )
    return block_table.shape[1], block_table.shape[1] * page_size


def check_varlen(
    q: object,
    k: object,
    v: object,
    cu_seqlens_q: object,
    cu_seqlens_k: object,
    max_seqlen_q: object,
    max_seqlen_k: object,
    out: object,
    seqused_k: object = None,
    block_table: object = None,
) -> AttentionCall:
    """flash_attn_varlen_fwd's inputs: packed q (total_q, h, d), k/v (total_k, hk, d), or
    paged k/v (num_blocks, page_size, hk, d) with ``block_table``. Options come later
    (``with_options``)."""
    q = check_tensor("q", q, 3, "(total_q, num_heads, head_dim)")
    total_q, num_heads, head_dim = q.shape
    check_head_dim("q.shape[2]", head_dim)
    paged = block_table is not None
    if paged:
        _check_paged_cache("k", k, "v", v, head_dim, q)
    else:
        k = check_tensor("k", k, 3, "(total_k, num_heads_k, head_dim)")
        v = check_tensor("v", v, 3, "(total_k, num_heads_k, head_dim)")
        check_like("k", k, "q", q)
        check_like("v", v, "q", q)
        if k.shape[2] != head_dim:
            raise ValueError(
                f"k must have shape (total_k, num_heads_k, head_dim={head_dim}) to match q "
                f"{_shape(q)}; got {_shape(k)}"
            )
        if v.shape != k.shape:
            raise ValueError(f"v must have the shape of k {_shape(k)}; got {_shape(v)}")
    heads_k = k.shape[-2]
    check_heads("q.shape[1]", num_heads, f"k.shape[{k.dim() - 2}]", heads_k)
    check_out(out, _shape(q), q)
    cu_q = check_index_tensor("cu_seqlens_q", cu_seqlens_q, None, q)
    if cu_q.shape[0] < 1:
        raise ValueError("cu_seqlens_q must have length batch + 1 >= 1; got length 0")
    batch = cu_q.shape[0] - 1
    cu_k = check_index_tensor("cu_seqlens_k", cu_seqlens_k, cu_q.shape[0], q)
    max_q = check_int("max_seqlen_q", max_seqlen_q, 0)
    max_k = check_int("max_seqlen_k", max_seqlen_k, 0)
    check_cu_seqlens_values("cu_seqlens_q", cu_q, total_q, "total_q", "max_seqlen_q", max_q)
    page_size = num_blocks = 0
    if paged:
        page_size, num_blocks = k.shape[1], k.shape[0]
        max_blocks, capacity = check_block_table(block_table, batch, num_blocks, page_size, q)
        # cu_seqlens_k counts the keys of each sequence (its last entry is no tensor's size).
        total_k = _last_value(cu_k)
        longest = check_cu_seqlens_values(
            "cu_seqlens_k", cu_k, total_k, "total_k", "max_seqlen_k", max_k
        )
        # Each sequence's keys must lie in its row of the table (with seqused_k, the keys it
        # uses, checked below against the same capacity).
        if seqused_k is None and longest is not None and longest > capacity:
            raise ValueError(
                f"block_table must address every key: a sequence of cu_seqlens_k has {longest} "
                f"keys, but block_table's rows of {max_blocks} blocks of page_size {page_size} "
                f"hold {capacity}"
            )
        max_k = min(max_k, capacity)
    else:
        total_k = k.shape[0]
        check_cu_seqlens_values("cu_seqlens_k", cu_k, total_k, "total_k", "max_seqlen_k", max_k)
    if seqused_k is not None:
        check_index_tensor("seqused_k", seqused_k, batch, q)
        check_cache_seqlens_values(seqused_k, max_k, "seqused_k")
    return AttentionCall(
        layout="varlen", batch=batch, seqlen_q=max_q, seqlen_k=max_k, num_heads=num_heads,
        num_heads_k=heads_k, head_dim=head_dim, dtype=q.dtype, device=q.device,
        softmax_scale=0.0, causal=False, total_q=total_q, total_k=0 if paged else total_k,
        key_lengths=seqused_k is not None, page_size=page_size, num_blocks=num_blocks,
    )  # fmt: skip


def _last_value(cu_seqlens: torch.Tensor) -> int:
    """The last entry when it may be read (paged varlen: the keys' total), else 0."""
    if not device_values_readable(cu_seqlens):
        return 0
    return int(cu_seqlens[-1].item())


def check_decode(
    q: object,
    k_cache: object,
    v_cache: object,
    cache_seqlens: object,
    block_table: object = None,
    *,
    seqlen_q: int | None = None,
    kv_batch_idx: object = None,
    k_start: object = None,
) -> AttentionCall:
    """batched_decode_attention's inputs: q (b, h, d), caches (b, max_cache_len, hk, d) or
    paged (num_blocks, page_size, hk, d) with ``block_table``. ``cache_attention`` passes
    q (b, seqlen_q, h, d) (``seqlen_q`` given), and optionally the cache row of each sequence
    (``kv_batch_idx``, then the cache may have any number of rows) and its first key
    (``k_start``: left padding)."""
    if seqlen_q is None:
        q = check_tensor("q", q, 3, "(batch, num_heads, head_dim)")
        batch, num_heads, head_dim = q.shape
        sq, heads_dim_name = 1, "q.shape[1]"
    else:
        q = check_tensor("q", q, 4, "(batch, seqlen_q, num_heads, head_dim)")
        batch, sq, num_heads, head_dim = q.shape
        heads_dim_name = "q.shape[2]"
    check_head_dim(f"q.shape[{q.dim() - 1}]", head_dim)
    page_size = num_blocks = 0
    if block_table is not None:
        _check_paged_cache("k_cache", k_cache, "v_cache", v_cache, head_dim, q)
        page_size, num_blocks = k_cache.shape[1], k_cache.shape[0]
        _, max_cache_len = check_block_table(block_table, batch, num_blocks, page_size, q)
    else:
        layout = "(batch, max_cache_len, num_kv_heads, head_dim)"
        k_cache = check_tensor("k_cache", k_cache, 4, layout)
        v_cache = check_tensor("v_cache", v_cache, 4, layout)
        check_like("k_cache", k_cache, "q", q)
        check_like("v_cache", v_cache, "q", q)
        rows_ok = k_cache.shape[0] >= 1 if kv_batch_idx is not None else k_cache.shape[0] == batch
        if not rows_ok or k_cache.shape[3] != head_dim:
            rows = "cache_rows" if kv_batch_idx is not None else f"batch={batch}"
            raise ValueError(
                f"k_cache must have shape ({rows}, max_cache_len, num_kv_heads, "
                f"head_dim={head_dim}) to match q {_shape(q)}; got {_shape(k_cache)}"
            )
        if v_cache.shape != k_cache.shape:
            raise ValueError(
                f"v_cache must have the shape of k_cache {_shape(k_cache)}; got {_shape(v_cache)}"
            )
        max_cache_len = k_cache.shape[1]
    kv_rows = k_cache.shape[0]
    check_heads(heads_dim_name, num_heads, "k_cache.shape[2]", k_cache.shape[2])
    seqlens = check_index_tensor("cache_seqlens", cache_seqlens, batch, q)
    check_cache_seqlens_values(seqlens, max_cache_len)
    if kv_batch_idx is not None:
        check_index_tensor("cache_batch_idx", kv_batch_idx, batch, q)
        check_cache_seqlens_values(kv_batch_idx, kv_rows - 1, "cache_batch_idx")
    if k_start is not None:
        check_index_tensor("cache_leftpad", k_start, batch, q)
        check_cache_seqlens_values(k_start, max_cache_len, "cache_leftpad")
    return AttentionCall(
        layout="dense", batch=batch, seqlen_q=sq, seqlen_k=max_cache_len, num_heads=num_heads,
        num_heads_k=k_cache.shape[2], head_dim=head_dim, dtype=q.dtype, device=q.device,
        softmax_scale=0.0, causal=False, key_lengths=True, page_size=page_size,
        num_blocks=num_blocks, kv_batch_rows=kv_rows if kv_batch_idx is not None else 0,
        kv_batch_index=kv_batch_idx is not None, k_start=k_start is not None,
    )  # fmt: skip


def check_cache_seqlens_values(
    cache_seqlens: torch.Tensor, max_cache_len: int, name: str = "cache_seqlens"
) -> None:
    """Each length in [0, max_cache_len] (one read-back for both bounds, when allowed)."""
    if not cache_seqlens.numel() or not device_values_readable(cache_seqlens):
        return
    low, high = torch.stack(torch.aminmax(cache_seqlens)).tolist()
    if low < 0 or high > max_cache_len:
        bad = low if low < 0 else high
        raise ValueError(f"{name} must lie in [0, max_cache_len = {max_cache_len}]; got {bad}")


def check_model_dims(
    num_heads: object, num_kv_heads: object, head_dim: object
) -> tuple[int, int, int]:
    heads = check_int("num_heads", num_heads, 1)
    kv_heads = check_int("num_kv_heads", num_kv_heads, 1)
    dim = check_int("head_dim", head_dim, 1)
    check_head_dim("head_dim", dim)
    check_heads("num_heads", heads, "num_kv_heads", kv_heads)
    return heads, kv_heads, dim


def check_flat(
    q: object, k: object, v: object, num_heads: object, num_kv_heads: object, head_dim: object
) -> AttentionCall:
    """Flat projections: q (batch, seqlen_q, num_heads * head_dim) or without the batch."""
    heads, kv_heads, dim = check_model_dims(num_heads, num_kv_heads, head_dim)
    if not isinstance(q, torch.Tensor):
        raise TypeError(f"q must be a torch.Tensor; got {type(q).__name__}")
    ndim = q.dim()
    if ndim not in (2, 3):
        raise ValueError(
            "q must have 3 dimensions (batch, seqlen_q, num_heads * head_dim) or 2 "
            f"(seqlen_q, num_heads * head_dim); got shape {_shape(q)}"
        )
    rows = "(batch, seqlen, width)" if ndim == 3 else "(seqlen, width)"
    check_tensor("q", q, ndim, rows)
    k = check_tensor("k", k, ndim, f"{rows} like q")
    v = check_tensor("v", v, ndim, f"{rows} like q")
    check_like("k", k, "q", q)
    check_like("v", v, "q", q)
    if q.shape[-1] != heads * dim:
        raise ValueError(
            f"q.shape[-1] must equal num_heads * head_dim = {heads} * {dim} = {heads * dim}; "
            f"got {q.shape[-1]}"
        )
    if k.shape[-1] != kv_heads * dim:
        raise ValueError(
            f"k.shape[-1] must equal num_kv_heads * head_dim = {kv_heads} * {dim} = "
            f"{kv_heads * dim}; got {k.shape[-1]}"
        )
    if ndim == 3 and k.shape[0] != q.shape[0]:
        raise ValueError(f"k must have the batch size of q ({q.shape[0]}); got {k.shape[0]}")
    if v.shape != k.shape:
        raise ValueError(f"v must have the shape of k {_shape(k)}; got {_shape(v)}")
    batch = q.shape[0] if ndim == 3 else 1
    return AttentionCall(
        layout="dense", batch=batch, seqlen_q=q.shape[-2], seqlen_k=k.shape[-2],
        num_heads=heads, num_heads_k=kv_heads, head_dim=dim, dtype=q.dtype, device=q.device,
        softmax_scale=0.0, causal=False,
    )  # fmt: skip


def check_cast_dtype(cast_dtype: object) -> torch.dtype:
    if cast_dtype is None:
        return torch.float16
    if cast_dtype not in CAST_DTYPES:
        raise ValueError(
            f"cast_dtype must be torch.float16 or torch.bfloat16 (or None for float16); "
            f"got {cast_dtype!r}"
        )
    return cast_dtype  # type: ignore[return-value]


# -- the options every entry point shares -----------------------------------------------------


class Options(NamedTuple):
    """The caller's softmax and mask options, as given (checked by ``with_options``)."""

    softmax_scale: object = None
    causal: object = False
    window_size: object = NO_WINDOW
    softcap: object = 0.0
    alibi_slopes: object = None
    sinks: object = None
    return_lse: object = False


def check_window(window_size: object, causal: bool) -> tuple[int, int]:
    """(left, right), each an int >= -1; causal forces right = 0.

    A pair is a tuple or list of ints (or of anything ``operator.index`` takes, such as a 0-dim
    integer tensor), or a 1-dim integer tensor of two elements, which FlashAttention accepts
    and its own tests pass (``torch.randint(0, seqlen_k, (2,))``); reading such a tensor's
    values waits for its device. Bools are refused: (4, False) is no window."""
    if isinstance(window_size, torch.Tensor):
        if (
            window_size.dim() != 1
            or window_size.dtype.is_floating_point
            or window_size.is_complex()
        ):
            raise TypeError(
                f"window_size must be a (left, right) pair of ints; got a tensor of shape "
                f"{tuple(window_size.shape)} and dtype {window_size.dtype}"
            )
        if len(window_size) == 2:  # else refused below, without reading a long tensor
            window_size = tuple(window_size.tolist())  # ints, or bools (refused below)
    elif not isinstance(window_size, (tuple, list)):
        raise TypeError(
            f"window_size must be a (left, right) pair of ints; got {window_size!r} "
            f"({type(window_size).__name__})"
        )
    if len(window_size) != 2:
        raise ValueError(
            f"window_size must be a (left, right) pair of ints; got {len(window_size)} values"
        )
    edges = []
    for edge in window_size:
        if isinstance(edge, bool) or (isinstance(edge, torch.Tensor) and edge.dtype == torch.bool):
            raise TypeError(f"window_size must hold ints; got {window_size!r}")
        try:
            edges.append(operator.index(edge))
        except TypeError:
            raise TypeError(f"window_size must hold ints; got {window_size!r}") from None
    left, right = edges
    if left < -1 or right < -1:
        raise ValueError(
            f"window_size edges must be >= -1 (-1 means unbounded); got ({left}, {right})"
        )
    return (left, 0) if causal else (left, right)


def _widest_window(window: tuple[int, int], call: AttentionCall) -> tuple[int, int]:
    """The window with an edge that reaches past every key unbounded (-1): a left edge of at
    least the call's longest key sequence, or a right one of at least its longest query
    sequence, masks nothing. So a model's window wider than its sequence runs the plain
    kernels, and no edge beyond int32 (which Python allows) reaches the plugin."""
    left, right = window
    if left >= call.seqlen_k:
        left = -1
    if right >= max(call.seqlen_q, 1):
        right = -1
    return left, right


def check_softcap(softcap: object) -> float:
    """0 (off) or a positive finite number, kept as the float32 the kernels see."""
    if isinstance(softcap, bool) or not isinstance(softcap, numbers.Real):
        raise TypeError(f"softcap must be a float; got {softcap!r} ({type(softcap).__name__})")
    value = float(softcap)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"softcap must be finite and >= 0 (0 turns it off); got {value}")
    try:
        return _as_float32(value)
    except OverflowError:
        raise ValueError(f"softcap must be finite as a float32; got {value}") from None


def check_head_vector(
    name: str, x: object, shapes: dict[tuple[int, ...], str], q: torch.Tensor
) -> str:
    """A float32 tensor on q's device whose shape is one of ``shapes``; returns its kind."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a float32 torch.Tensor or None; got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise TypeError(f"{name} must have dtype torch.float32; got {x.dtype}")
    kind = shapes.get(tuple(x.shape))
    if kind is None:
        wanted = " or ".join(str(s) for s in shapes)
        raise ValueError(f"{name} must have shape {wanted}; got {_shape(x)}")
    if x.device != q.device:
        raise ValueError(f"{name} must be on the device of q ({q.device}); got {x.device}")
    return kind


def with_options(
    call: AttentionCall,
    options: Options,
    q: torch.Tensor,
    *,
    scale_name: str = "softmax_scale",
    causal_name: str = "causal",
) -> AttentionCall:
    """``call`` (from a shape check above) completed with the checked options. The flat
    projection calls name two of them differently (``scale``, ``is_causal``)."""
    causal = check_flag(causal_name, options.causal)
    alibi = None
    if options.alibi_slopes is not None:
        shapes = {(call.num_heads,): "head", (call.batch, call.num_heads): "batch_head"}
        alibi = check_head_vector("alibi_slopes", options.alibi_slopes, shapes, q)
    if options.sinks is not None:
        check_head_vector("sinks", options.sinks, {(call.num_heads,): "head"}, q)
    return replace(
        call,
        softmax_scale=resolve_scale(scale_name, options.softmax_scale, call.head_dim),
        causal=causal,
        window=_widest_window(check_window(options.window_size, causal), call),
        softcap=check_softcap(options.softcap),
        alibi=alibi,
        sinks=options.sinks is not None,
        return_lse=check_flag("return_lse", options.return_lse),
    )


def check_device_values(call: AttentionCall, seqused_k: torch.Tensor | None) -> None:
    """The checks of device *values* that a repeated call must run again (its signature
    fixes everything else): per-sequence key counts (``AttentionTensors.seqused_k``) within
    the cache."""
    if seqused_k is not None and call.layout == "dense":
        check_cache_seqlens_values(seqused_k, call.seqlen_k)
