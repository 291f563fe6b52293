"""The K/V append kernel (ff_append_kv) against the float64 reference and, bit for bit, the
torch ops it replaces (forge_flash.kvcache_append.append_kv / apply_rotary, which stay the CPU
path): contiguous caches (with and without cache_batch_idx) and paged ones (pages of 1, 7, 16
and 64 keys), rotary interleaved and GPT-NeoX, over the whole head or part of it, tables in
the cache's dtype or float32, 1 and 3 new tokens, GQA, float16 and bfloat16, strided views that
take the scalar path, invalid device values (clamped exactly as the torch ops clamp them), and
the attention launched programmatically behind it over many decode steps.

Caches are poisoned (NaN outside the sequences' keys): only the appended slots may change.
"""

from __future__ import annotations

import pytest
import torch

import forge_flash
from forge_flash.backends.cuda import CudaBackend
from forge_flash.kvcache_append import append_kv, append_step, apply_rotary, query_positions

from helpers.kernels import kernel_backend
from helpers.kvcache_reference import (
    cache_case,
    randn,
    random_block_table,
    reference_append,
    reference_rotary,
    rotary_tables,
)

HEADS, HEADS_K, HEAD_DIM = 8, 2, 128
BITWISE = {"rtol": 0, "atol": 0, "equal_nan": True}


def _cuda(x):
    return None if x is None else x.cuda()


def _index(values):
    return None if values is None else torch.tensor(values, dtype=torch.int32, device="cuda")


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


def _kernel(q, k_cache, v_cache, k, v, seqlens, *, rows, table, cos, sin, interleaved, per_token):
    """The fused kernel on the caches (in place): (rotated q, new lengths); asserts it ran."""
    with kernel_backend():
        q_out, lengths, fused = append_step(
            q, k_cache, v_cache, k, v, seqlens, cache_batch_idx=rows, block_table=table,
            rotary_cos=cos, rotary_sin=sin, rotary_interleaved=interleaved,
            query_per_token=per_token,
        )  # fmt: skip
    assert fused, "the append kernel must have run"
    return q_out, lengths


ROTARY = {  # name: (rotary_dim, interleaved, table dtype: None = the cache's)
    "none": (0, True, None),
    "interleaved": (HEAD_DIM, True, None),
    "neox": (HEAD_DIM, False, None),
    "interleaved-partial-fp32": (48, True, torch.float32),
    "neox-partial": (64, False, None),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("rotary", list(ROTARY))
@pytest.mark.parametrize(
    "layout", ["contiguous", "batch_idx", "paged-1", "paged-7", "paged-16", "paged-64"]
)
def test_kernel_matches_reference_and_torch_ops_bitwise(layout, rotary, dtype):
    gen = torch.Generator().manual_seed(len(layout) * 7 + len(rotary))
    seqlen_new = 3 if layout in ("contiguous", "paged-7") else 1
    case = cache_case(
        "contiguous" if layout == "batch_idx" else layout, dtype, seqlen_new, gen,
        heads_k=HEADS_K, head_dim=HEAD_DIM,
    )  # fmt: skip
    rows = case.rows if layout == "batch_idx" else None
    if layout == "contiguous":  # sequence b in cache row b
        case = case._replace(k_cache=case.k_cache[:3], v_cache=case.v_cache[:3])
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
        rows=_index(rows), table=_cuda(case.table), cos=_cuda(cos), sin=_cuda(sin),
        interleaved=interleaved, per_token=per_token,
    )  # fmt: skip
    q_gpu, k_gpu, v_gpu = q.cuda(), k.cuda(), v.cuda()
    seqlens = _index(case.lengths)
    k_cache, v_cache = case.k_cache.cuda(), case.v_cache.cuda()
    expected = _torch_ops(q_gpu, k_cache, v_cache, k_gpu, v_gpu, seqlens, **args)
    inputs = [x.clone() for x in (q_gpu, k_gpu, v_gpu, seqlens)]

    q_out, lengths = _kernel(q_gpu, k_cache, v_cache, k_gpu, v_gpu, seqlens, **args)
    torch.cuda.synchronize()

    torch.testing.assert_close(k_cache, expected[0], **BITWISE, msg="k_cache vs the torch ops")
    torch.testing.assert_close(v_cache, expected[1], **BITWISE, msg="v_cache vs the torch ops")
    torch.testing.assert_close(q_out, expected[2], **BITWISE, msg="rotated q vs the torch ops")
    assert lengths.dtype == torch.int32
    assert lengths.tolist() == [n + seqlen_new for n in case.lengths]
    for before, after in zip(inputs, (q_gpu, k_gpu, v_gpu, seqlens), strict=True):
        assert torch.equal(before, after), "q, k, v and cache_seqlens must not be modified"
    if rotary_dim == 0:
        assert q_out is q_gpu, "without rotary the queries are used as they are"

    # Against the float64 reference: the appended slots within one rounding, the rest as it was.
    positions = [[n + i for i in range(seqlen_new)] for n in case.lengths]
    k_rotated = None if cos is None else reference_rotary(k, cos, sin, positions, interleaved)
    ref_k, ref_v, written = reference_append(
        case.k_cache, case.v_cache, k, v, case.lengths, cache_rows=rows,
        block_table=case.table_rows, k_rotated=k_rotated,
    )  # fmt: skip
    tolerance = {"atol": 2e-2, "rtol": 1e-2}
    torch.testing.assert_close(k_cache.cpu()[written].double(), ref_k[written], **tolerance)
    torch.testing.assert_close(k_cache.cpu()[~written].double(), ref_k[~written], **BITWISE)
    torch.testing.assert_close(v_cache.cpu().double(), ref_v, **BITWISE)
    if cos is not None:
        q_positions = positions if per_token else [[n] * seqlen_new for n in case.lengths]
        ref_q = reference_rotary(q, cos, sin, q_positions, interleaved)
        torch.testing.assert_close(q_out.cpu().double(), ref_q, **tolerance)


def test_strided_views_on_the_scalar_path():
    """head_dim 40, k/v views at an odd element offset with strides that are no multiple of
    8, GPT-NeoX rotary over 24 features (pairs 12 apart): no 16-byte access fits."""
    gen = torch.Generator().manual_seed(5)
    dtype, head_dim, batch, seqlen_new = torch.bfloat16, 40, 3, 2
    wide = randn(gen, batch, seqlen_new, HEADS_K, 2 * head_dim + 3, dtype=dtype).cuda()
    k, v = wide[..., 1 : head_dim + 1], wide[..., head_dim + 2 : 2 * head_dim + 2]
    q = randn(gen, batch, seqlen_new, HEADS, head_dim + 1, dtype=dtype).cuda()[..., 1:]
    table = random_block_table(gen, batch, 3, 11).cuda()
    k_cache = randn(gen, 11, 5, HEADS_K, head_dim, dtype=dtype).cuda()
    v_cache = randn(gen, 11, 5, HEADS_K, head_dim, dtype=dtype).cuda()
    cos, sin = (x.cuda() for x in rotary_tables(gen, 15, 24, dtype))
    seqlens = _index([0, 4, 13])
    args = dict(rows=None, table=table, cos=cos, sin=sin, interleaved=False, per_token=True)
    expected = _torch_ops(q, k_cache, v_cache, k, v, seqlens, **args)
    q_out, _ = _kernel(q, k_cache, v_cache, k, v, seqlens, **args)
    torch.testing.assert_close(k_cache, expected[0], **BITWISE)
    torch.testing.assert_close(v_cache, expected[1], **BITWISE)
    torch.testing.assert_close(q_out, expected[2], **BITWISE)
    positions = [[n + i for i in range(seqlen_new)] for n in (0, 4, 13)]
    ref_k, _, written = reference_append(
        k_cache.cpu(), v_cache.cpu(), k.cpu(), v.cpu(), [0, 4, 13],
        block_table=table.tolist(),
        k_rotated=reference_rotary(k.cpu(), cos.cpu(), sin.cpu(), positions, False),
    )  # fmt: skip
    torch.testing.assert_close(
        k_cache.cpu()[written].double(), ref_k[written], atol=2e-2, rtol=1e-2
    )


def test_invalid_device_values_are_clamped_like_the_torch_ops():
    """Values validation would refuse (it cannot read them inside a CUDA graph): a length past
    the capacity, a negative one, block ids and a cache row out of range, positions past the
    rotary table. The kernel clamps each exactly as the torch ops do, and writes nothing
    outside the caches (the spare blocks/rows around them stay as they were)."""
    gen = torch.Generator().manual_seed(3)
    dtype = torch.float16
    cos, sin = (x.cuda() for x in rotary_tables(gen, 4, HEAD_DIM, dtype))  # 4 rows only
    q = randn(gen, 2, 1, HEADS, HEAD_DIM, dtype=dtype).cuda()
    k = randn(gen, 2, 1, HEADS_K, HEAD_DIM, dtype=dtype).cuda()
    v = randn(gen, 2, 1, HEADS_K, HEAD_DIM, dtype=dtype).cuda()
    # Paged: 6 blocks of 4 keys inside a larger buffer; sequence 0's last id is past the end.
    buffer = randn(gen, 8, 4, HEADS_K, HEAD_DIM, dtype=dtype).cuda()
    table = torch.tensor([[0, 1, 9], [2, 3, -4]], dtype=torch.int32, device="cuda")
    for lengths in ([100, -3], [11, 9]):
        k_buffer, v_buffer = buffer.clone(), buffer.clone()
        k_cache, v_cache = k_buffer[1:7], v_buffer[1:7]
        seqlens = _index(lengths)
        args = dict(rows=None, table=table, cos=cos, sin=sin, interleaved=True, per_token=True)
        expected = _torch_ops(q, k_cache, v_cache, k, v, seqlens, **args)
        q_out, _ = _kernel(q, k_cache, v_cache, k, v, seqlens, **args)
        torch.testing.assert_close(k_cache, expected[0], **BITWISE)
        torch.testing.assert_close(v_cache, expected[1], **BITWISE)
        torch.testing.assert_close(q_out, expected[2], **BITWISE)
        for spare in (0, 7):
            assert torch.equal(k_buffer[spare], buffer[spare]), "write outside k_cache"
            assert torch.equal(v_buffer[spare], buffer[spare]), "write outside v_cache"
    # Contiguous with a cache row index out of range (-1 and 5 of 3 rows).
    k_cache = randn(gen, 3, 6, HEADS_K, HEAD_DIM, dtype=dtype).cuda()
    v_cache = torch.randn_like(k_cache)
    seqlens, rows = _index([2, 9]), _index([-1, 5])
    args = dict(rows=rows, table=None, cos=cos, sin=sin, interleaved=False, per_token=False)
    expected = _torch_ops(q, k_cache, v_cache, k, v, seqlens, **args)
    q_out, _ = _kernel(q, k_cache, v_cache, k, v, seqlens, **args)
    torch.testing.assert_close(k_cache, expected[0], **BITWISE)
    torch.testing.assert_close(v_cache, expected[1], **BITWISE)
    torch.testing.assert_close(q_out, expected[2], **BITWISE)


def test_the_binding_refuses_bad_arguments_with_the_c_api_message():
    from forge_flash.discovery import plugin_binding

    _C = plugin_binding()
    k = torch.zeros(1, 1, 1, 64, dtype=torch.float16, device="cuda")
    cache = torch.zeros(1, 4, 1, 64, dtype=torch.float16, device="cuda")
    cos = torch.zeros(4, 16, dtype=torch.float16, device="cuda")
    seqlens = torch.zeros(1, dtype=torch.int32, device="cuda")
    strides = (64, 64, 64) * 2 + (256, 64, 64) * 2 + (0, 0, 0) * 2
    stream = torch.cuda.current_stream().cuda_stream
    bad = _C.AppendKvCall(strides, (16, 1, 16, 1), 0, (1, 1, 0, 0, 1, 64, 1, 4, 0),
                          (31, 4, 0, 1, 1), 0, True)  # fmt: skip
    with pytest.raises(ValueError, match=r"^forge_flash: rotary_dim must be even"):
        bad(k.data_ptr(), k.data_ptr(), cache.data_ptr(), cache.data_ptr(), 0, 0,
            seqlens.data_ptr(), 0, 0, 0, cos.data_ptr(), cos.data_ptr(), 0, stream)  # fmt: skip
    assert torch.count_nonzero(cache) == 0


@pytest.mark.parametrize("layout", ["contiguous", "paged-16"])
def test_attention_behind_the_append_sees_every_new_key(monkeypatch, layout):
    """Batch 64 of 32/8 heads of 128, 24 decode steps with rotary: the fused append followed
    by the programmatically launched attention gives bit for bit the outputs and caches of the
    torch ops followed by a plain launch of the same attention (a launch that read a cache
    or q before the append finished would differ)."""
    gen = torch.Generator().manual_seed(21)
    dtype, batch, heads, heads_k, capacity, steps = torch.bfloat16, 64, 32, 8, 512, 24
    lengths = torch.randint(0, capacity - steps, (batch,), generator=gen, dtype=torch.int32)
    if layout == "contiguous":
        table = None
        k_cache = randn(gen, batch, capacity, heads_k, HEAD_DIM, dtype=dtype).cuda()
    else:
        blocks = capacity // 16
        table = random_block_table(gen, batch, blocks, batch * blocks).cuda()
        k_cache = randn(gen, batch * blocks, 16, heads_k, HEAD_DIM, dtype=dtype).cuda()
    v_cache = torch.randn_like(k_cache)
    cos, sin = (x.cuda() for x in rotary_tables(gen, capacity, HEAD_DIM, dtype))
    caches = {"fused": (k_cache, v_cache), "torch": (k_cache.clone(), v_cache.clone())}
    outs = {name: [] for name in caches}
    shapes = [(batch, 1, h, HEAD_DIM) for h in (heads, heads_k, heads_k)]
    steps_inputs = [
        [torch.randn(shape, device="cuda", dtype=dtype) for shape in shapes] for _ in range(steps)
    ]
    with kernel_backend():
        for name in ("fused", "torch"):
            if name == "torch":
                monkeypatch.setattr(CudaBackend, "append_kv", lambda *args, **kwargs: None)
            seqlens = lengths.cuda()
            for q, k, v in steps_inputs:
                out = forge_flash.flash_attn_with_kvcache(
                    q, *caches[name], k, v, rotary_cos=cos, rotary_sin=sin,
                    cache_seqlens=seqlens, block_table=table, causal=True,
                )  # fmt: skip
                outs[name].append(out)
                seqlens = seqlens + 1
    torch.cuda.synchronize()
    for i, (fused, plain) in enumerate(zip(outs["fused"], outs["torch"], strict=True)):
        assert torch.equal(fused, plain), f"step {i}: the attention after the fused append"
    assert torch.equal(caches["fused"][0], caches["torch"][0])
    assert torch.equal(caches["fused"][1], caches["torch"][1])
