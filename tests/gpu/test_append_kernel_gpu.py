"""The K/V append kernel (ff_append_kv) on the GPU against the float64 reference and, bit for
bit, the torch ops it replaces (helpers.append_cases: contiguous caches with and without
cache_batch_idx, paged ones of pages of 1, 7, 16 and 64 keys, rotary interleaved and GPT-NeoX
over the whole head or part of it, tables in the cache's dtype or float32, 1 and 3 new tokens,
GQA, float16 and bfloat16, poisoned caches; strided views that take the scalar path; invalid
device values, clamped exactly as the torch ops clamp them), the binding's errors, and the
attention launched programmatically behind it over many decode steps.
"""

from __future__ import annotations

import pytest
import torch

import forge_flash
from forge_flash.backends.cuda import CudaBackend

from helpers.append_cases import (
    HEAD_DIM,
    LAYOUTS,
    ROTARY,
    check_invalid_values_clamped,
    check_layout,
    check_scalar_path,
)
from helpers.kernels import kernel_backend
from helpers.kvcache_reference import randn, random_block_table, rotary_tables


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("rotary", list(ROTARY))
@pytest.mark.parametrize("layout", LAYOUTS)
def test_kernel_matches_reference_and_torch_ops_bitwise(layout, rotary, dtype):
    with kernel_backend():
        check_layout(layout, rotary, dtype, "cuda")


def test_strided_views_on_the_scalar_path():
    with kernel_backend():
        check_scalar_path("cuda")


def test_invalid_device_values_are_clamped_like_the_torch_ops():
    with kernel_backend():
        check_invalid_values_clamped("cuda")


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
