"""Checks of the K/V append kernel (ff_append_kv), shared by its GPU test
(tests/gpu/test_append_kernel_gpu.py) and its host run (tests/c_api/test_append_kernel_host.py,
the kernel's source compiled for the CPU behind the real C API and binding).

Each check runs ``forge_flash.kvcache_append.append_step`` on the active backend, asserts that
the fused kernel ran, and compares with the torch ops it replaces (``append_kv`` /
``apply_rotary``: bit for bit, poisoned caches included) and with the float64 reference of
``helpers.kvcache_reference`` (within one rounding of the dtype). The caller makes the backend
that runs the kernel the active one.
"""

from __future__ import annotations

import torch

from forge_flash.call import NewKeys
from forge_flash.kvcache_append import append_kv, append_step, apply_rotary, query_positions

from .kvcache_reference import (
    cache_case,
    randn,
    random_block_table,
    reference_append,
    reference_rotary,
    rotary_tables,
)

HEADS, HEADS_K, HEAD_DIM = 8, 2, 128
BITWISE = {"rtol": 0, "atol": 0, "equal_nan": True}
ROUNDED = {"atol": 2e-2, "rtol": 1e-2}  # one rounding of values of a few units, in bfloat16

#: name: (rotary_dim, interleaved, table dtype: None = the cache's)
ROTARY = {
    "none": (0, True, None),
    "interleaved": (HEAD_DIM, True, None),
    "neox": (HEAD_DIM, False, None),
    "interleaved-partial-fp32": (48, True, torch.float32),
    "neox-partial": (64, False, None),
}
LAYOUTS = ["contiguous", "batch_idx", "paged-1", "paged-7", "paged-16", "paged-64"]


def _index(values, device):
    return None if values is None else torch.tensor(values, dtype=torch.int32, device=device)


def _to(x, device):
    return None if x is None else x.to(device)


def _torch_ops(
    q, k_cache, v_cache, k, v, seqlens, *, rows, table, cos, sin, interleaved, per_token
):
    """The torch path on copies of the caches: (k_cache, v_cache, rotated q)."""
    k_cache, v_cache = k_cache.clone(), v_cache.clone()
    append_kv(
        k_cache, v_cache, k, v, seqlens, cache_batch_idx=rows, block_table=table, rotary_cos=cos,
        rotary_sin=sin, rotary_interleaved=interleaved,
    )  # fmt: skip
    if cos is not None:
        q = apply_rotary(q, cos, sin, query_positions(seqlens, q.shape[1], per_token), interleaved)
    return k_cache, v_cache, q


def _fused(q, k_cache, v_cache, k, v, seqlens, *, rows, table, cos, sin, interleaved, per_token):
    """The fused kernel on the caches (in place): (rotated q, new lengths); asserts it ran."""
    new = NewKeys(k, v, cos, sin, interleaved, per_token)
    q_out, lengths, fused = append_step(
        q, k_cache, v_cache, seqlens, new, cache_batch_idx=rows, block_table=table
    )
    assert fused, "the append kernel must have run"
    return q_out, lengths


def _same_as_torch_ops(q, k_cache, v_cache, k, v, seqlens, **args):
    """Runs both paths (the kernel in place on the caches given) and asserts equal bits;
    returns the kernel's (rotated q, new lengths)."""
    expected = _torch_ops(q, k_cache, v_cache, k, v, seqlens, **args)
    q_out, lengths = _fused(q, k_cache, v_cache, k, v, seqlens, **args)
    torch.testing.assert_close(k_cache, expected[0], **BITWISE, msg="k_cache vs the torch ops")
    torch.testing.assert_close(v_cache, expected[1], **BITWISE, msg="v_cache vs the torch ops")
    torch.testing.assert_close(q_out, expected[2], **BITWISE, msg="rotated q vs the torch ops")
    return q_out, lengths


def check_layout(layout: str, rotary: str, dtype: torch.dtype, device: str) -> None:
    """Contiguous caches (row b, or cache_batch_idx rows) or paged ones; rotary as ROTARY
    names it; 3 new tokens (contiguous, paged-7) or 1; GQA; NaN outside the sequences' keys."""
    gen = torch.Generator().manual_seed(len(layout) * 7 + len(rotary))
    seqlen_new = 3 if layout in ("contiguous", "paged-7") else 1
    case = cache_case(
        "contiguous" if layout == "batch_idx" else layout, dtype, seqlen_new, gen,
        heads_k=HEADS_K, head_dim=HEAD_DIM,
    )  # fmt: skip
    rows = case.rows if layout == "batch_idx" else None
    if layout == "contiguous":  # sequence b in cache row b: poisoned again for that rule
        case = case._replace(k_cache=case.k_cache[:3].clone(), v_cache=case.v_cache[:3].clone())
        keep = torch.zeros(case.k_cache.shape[:2], dtype=torch.bool)
        for b, (pad, n) in enumerate(zip(case.pads, case.lengths, strict=True)):
            keep[b, pad:n] = True
        case.k_cache[~keep] = float("nan")
        case.v_cache[~keep] = float("nan")
    batch = len(case.lengths)
    rotary_dim, interleaved, table_dtype = ROTARY[rotary]
    per_token = interleaved  # both query rules, without doubling the cases
    q = randn(gen, batch, seqlen_new, HEADS, HEAD_DIM, dtype=dtype)
    k = randn(gen, batch, seqlen_new, HEADS_K, HEAD_DIM, dtype=dtype)
    v = randn(gen, batch, seqlen_new, HEADS_K, HEAD_DIM, dtype=dtype)
    cos = sin = None
    if rotary_dim:
        cos, sin = rotary_tables(gen, case.capacity, rotary_dim, table_dtype or dtype)
    args = dict(
        rows=_index(rows, device), table=_to(case.table, device), cos=_to(cos, device),
        sin=_to(sin, device), interleaved=interleaved, per_token=per_token,
    )  # fmt: skip
    q_dev, k_dev, v_dev = (x.to(device) for x in (q, k, v))
    seqlens = _index(case.lengths, device)
    k_cache, v_cache = case.k_cache.to(device), case.v_cache.to(device)
    if k_cache is case.k_cache:  # on the CPU: keep the inputs for the reference
        k_cache, v_cache = k_cache.clone(), v_cache.clone()
    inputs = [x.clone() for x in (q_dev, k_dev, v_dev, seqlens)]

    q_out, lengths = _same_as_torch_ops(q_dev, k_cache, v_cache, k_dev, v_dev, seqlens, **args)

    assert lengths.dtype == torch.int32
    assert lengths.tolist() == [n + seqlen_new for n in case.lengths]
    for before, after in zip(inputs, (q_dev, k_dev, v_dev, seqlens), strict=True):
        assert torch.equal(before, after), "q, k, v and cache_seqlens must not be modified"
    if rotary_dim == 0:
        assert q_out is q_dev, "without rotary the queries are used as they are"
    # Against the float64 reference: appended slots within one rounding, the rest as it was.
    positions = [[n + i for i in range(seqlen_new)] for n in case.lengths]
    k_rotated = None if cos is None else reference_rotary(k, cos, sin, positions, interleaved)
    ref_k, ref_v, written = reference_append(
        case.k_cache, case.v_cache, k, v, case.lengths, cache_rows=rows,
        block_table=case.table_rows, k_rotated=k_rotated,
    )  # fmt: skip
    torch.testing.assert_close(k_cache.cpu()[written].double(), ref_k[written], **ROUNDED)
    torch.testing.assert_close(k_cache.cpu()[~written].double(), ref_k[~written], **BITWISE)
    torch.testing.assert_close(v_cache.cpu().double(), ref_v, **BITWISE)
    if cos is not None:
        q_positions = positions if per_token else [[n] * seqlen_new for n in case.lengths]
        ref_q = reference_rotary(q, cos, sin, q_positions, interleaved)
        torch.testing.assert_close(q_out.cpu().double(), ref_q, **ROUNDED)


def check_scalar_path(device: str) -> None:
    """head_dim 40, k/v/q views at an odd element offset with strides that are no multiple of
    8, GPT-NeoX rotary over 24 features (pairs 12 apart): no 16-byte access fits."""
    gen = torch.Generator().manual_seed(5)
    dtype, head_dim, seqlen_new, lengths = torch.bfloat16, 40, 2, [0, 4, 13]
    wide = randn(gen, 3, seqlen_new, HEADS_K, 2 * head_dim + 3, dtype=dtype).to(device)
    k, v = wide[..., 1 : head_dim + 1], wide[..., head_dim + 2 : 2 * head_dim + 2]
    q = randn(gen, 3, seqlen_new, HEADS, head_dim + 1, dtype=dtype).to(device)[..., 1:]
    table = random_block_table(gen, 3, 3, 11).to(device)
    k_cache = randn(gen, 11, 5, HEADS_K, head_dim, dtype=dtype).to(device)
    v_cache = randn(gen, 11, 5, HEADS_K, head_dim, dtype=dtype).to(device)
    before = k_cache.cpu()
    cos, sin = (x.to(device) for x in rotary_tables(gen, 15, 24, dtype))
    args = dict(rows=None, table=table, cos=cos, sin=sin, interleaved=False, per_token=True)
    _same_as_torch_ops(q, k_cache, v_cache, k, v, _index(lengths, device), **args)
    positions = [[n + i for i in range(seqlen_new)] for n in lengths]
    ref_k, _, written = reference_append(
        before, v_cache.cpu(), k.cpu(), v.cpu(), lengths, block_table=table.tolist(),
        k_rotated=reference_rotary(k.cpu(), cos.cpu(), sin.cpu(), positions, False),
    )  # fmt: skip
    torch.testing.assert_close(k_cache.cpu()[written].double(), ref_k[written], **ROUNDED)
    torch.testing.assert_close(k_cache.cpu()[~written].double(), ref_k[~written], **BITWISE)


def check_invalid_values_clamped(device: str) -> None:
    """Values validation would refuse (it cannot read them inside a CUDA graph): lengths past
    the capacity and negative, block ids and cache rows out of range, positions past the rotary
    table. The kernel clamps each exactly as the torch ops do and writes nothing outside the
    caches (the spare blocks around them keep their values)."""
    gen = torch.Generator().manual_seed(3)
    dtype = torch.float16
    cos, sin = (x.to(device) for x in rotary_tables(gen, 4, HEAD_DIM, dtype))  # 4 rows only
    q = randn(gen, 2, 1, HEADS, HEAD_DIM, dtype=dtype).to(device)
    k = randn(gen, 2, 1, HEADS_K, HEAD_DIM, dtype=dtype).to(device)
    v = randn(gen, 2, 1, HEADS_K, HEAD_DIM, dtype=dtype).to(device)
    # Paged: 6 blocks of 4 keys inside a larger buffer; ids 9 and -4 lie outside.
    buffer = randn(gen, 8, 4, HEADS_K, HEAD_DIM, dtype=dtype).to(device)
    table = torch.tensor([[0, 1, 9], [2, 3, -4]], dtype=torch.int32, device=device)
    for lengths in ([100, -3], [11, 9]):
        k_buffer, v_buffer = buffer.clone(), buffer.clone()
        args = dict(rows=None, table=table, cos=cos, sin=sin, interleaved=True, per_token=True)
        _same_as_torch_ops(q, k_buffer[1:7], v_buffer[1:7], k, v, _index(lengths, device), **args)
        for spare in (0, 7):
            assert torch.equal(k_buffer[spare], buffer[spare]), "a write outside k_cache"
            assert torch.equal(v_buffer[spare], buffer[spare]), "a write outside v_cache"
    # Contiguous, cache rows -1 and 5 of 3, a length past the capacity.
    k_cache = randn(gen, 3, 6, HEADS_K, HEAD_DIM, dtype=dtype).to(device)
    v_cache = randn(gen, 3, 6, HEADS_K, HEAD_DIM, dtype=dtype).to(device)
    args = dict(
        rows=_index([-1, 5], device), table=None, cos=cos, sin=sin, interleaved=False,
        per_token=False,
    )  # fmt: skip
    _same_as_torch_ops(q, k_cache, v_cache, k, v, _index([2, 9], device), **args)
