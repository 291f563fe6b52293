"""The custom ops of the serving calls compiled with inductor on the GPU, against the same eager
calls on the kernels: a decoding step of ``flash_attn_with_kvcache`` (rotary, the append into a
paged cache, attention over cache plus the new token: the C API's fused path), whose op writes
the caches in place (``torch.ops.forge_flash.with_kvcache``; inductor's code must not copy
them), and ``merge_attention_states``
(``torch.ops.forge_flash.merge_states``, the merge kernel). The compiled graph runs the eager
entry point inside the op, so outputs and caches must match bit for bit; the eager calls
themselves are checked against float64 references in test_kvcache_gpu.py and
test_merge_kernel.py.
"""

from __future__ import annotations

import pytest
import torch
from torch._inductor.utils import run_and_get_code

import forge_flash as ff

from helpers.kernels import kernel_backend


def _paged_step_inputs(page_size: int):
    batch, heads, heads_k, dim = 4, 16, 4, 128
    lengths = [0, page_size - 1, 3 * page_size, 200]
    blocks = -(-(max(lengths) + 1) // page_size)
    num_blocks = batch * blocks + 3
    q = torch.randn(batch, 1, heads, dim, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(batch, 1, heads_k, dim, device="cuda", dtype=torch.bfloat16) for _ in "kv")
    caches = [
        torch.randn(num_blocks, page_size, heads_k, dim, device="cuda", dtype=torch.bfloat16)
        for _ in "kv"
    ]
    table = torch.randperm(num_blocks, device="cuda")[: batch * blocks].view(batch, blocks)
    lens = torch.tensor(lengths, dtype=torch.int32, device="cuda")
    angles = torch.rand(1024, dim // 2, device="cuda") * 6.28
    return q, k, v, caches, table.to(torch.int32), lens, angles.cos(), angles.sin()


@pytest.mark.parametrize("page_size", [16, 64])
def test_compiled_paged_decode_step_matches_eager(page_size):
    q, k, v, caches, table, lens, cos, sin = _paged_step_inputs(page_size)

    def step(q, k_cache, v_cache, k, v):
        return ff.flash_attn_with_kvcache(
            q, k_cache, v_cache, k, v, cos, sin, cache_seqlens=lens, block_table=table,
            causal=True, return_softmax_lse=True,
        )  # fmt: skip

    with kernel_backend():
        eager_caches = [c.clone() for c in caches]
        expected = step(q, *eager_caches, k, v)
        torch._dynamo.reset()
        compiled = torch.compile(step, fullgraph=True)
        compiled_caches = [c.clone() for c in caches]
        got, sources = run_and_get_code(compiled, q, *compiled_caches, k, v)
        torch.cuda.synchronize()
    # Inductor called the op on the caller's caches: no copy of a cache in its code.
    code = "\n".join(sources)
    assert "forge_flash.with_kvcache" in code
    assert "clone" not in code and "copy_" not in code, code
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    for a, b in zip(compiled_caches, eager_caches, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    # The step wrote its new keys: the caches differ from the ones before it.
    assert not torch.equal(compiled_caches[0], caches[0])


def test_compiled_merge_matches_eager():
    q = torch.randn(2, 300, 8, 128, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(2, 900, 8, 128, device="cuda", dtype=torch.bfloat16) for _ in "kv")
    with kernel_backend():
        parts = [ff.flash_attn_fwd(q, k[:, s], v[:, s], return_lse=True)
                 for s in (slice(0, 400), slice(400, 900))]  # fmt: skip
        outs, lses = [p[0] for p in parts], [p[1] for p in parts]
        expected = ff.merge_attention_states(outs, lses)
        torch._dynamo.reset()
        got = torch.compile(ff.merge_attention_states, fullgraph=True)(outs, lses)
        torch.cuda.synchronize()
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
