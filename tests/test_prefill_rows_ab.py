"""tools/lab/prefill_rows_ab.py's forced split count (``--num-splits``): the paged call it times
is flash_attn_varlen_fwd's own path with the call's ``num_splits`` set, and it answers as the
public call does (checked on the naive path, where splits change nothing)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch

import forge_flash
from forge_flash.benchmark import paged_inputs, prefill_shapes

LAB = Path(__file__).resolve().parents[1] / "tools" / "lab"
sys.path.insert(0, str(LAB))
try:
    import prefill_rows_ab
finally:
    sys.path.remove(str(LAB))


def test_forced_split_count_reaches_the_call_and_keeps_the_answer(monkeypatch):
    shape = prefill_shapes([200], [64], ["bf16"])[0]
    shape = dataclasses.replace(shape, batch=1, heads=2, heads_k=2, seqlen_k=300, causal=True)
    sizes = [(1, 200, 2, 64), (1, 300, 2, 64), (1, 300, 2, 64)]
    copies = [[torch.randn(size, dtype=torch.bfloat16) for size in sizes]]
    paged = paged_inputs(dataclasses.replace(shape, kind="paged", page_size=16), copies)
    seen = []
    attend = prefill_rows_ab.dispatch.attend

    def spy(tensors, static, window, check, bind, **kwargs):
        seen.append(check(tensors, static, window, None).num_splits)
        return attend(tensors, static, window, check, bind, **kwargs)

    monkeypatch.setattr(prefill_rows_ab.dispatch, "attend", spy)
    got = prefill_rows_ab.split_varlen_call(3)(*paged.copies[0], paged, shape, True)
    assert seen == [3]
    want = forge_flash.flash_attn_varlen_fwd(
        *paged.copies[0], paged.cu_seqlens_q, paged.cu_seqlens_k, 200, 300, causal=True,
        block_table=paged.table,
    )  # fmt: skip
    assert seen == [3, 0]  # the public call leaves the count to the kernels
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    # and both against float32 attention over the dense K/V (bottom-right causal mask)
    q, k, v = (t[0].float().transpose(0, 1) for t in copies[0])
    keep = torch.ones(200, 300, dtype=torch.bool).tril(300 - 200)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep)
    torch.testing.assert_close(got.float(), ref.transpose(0, 1), rtol=2e-2, atol=2e-2)
