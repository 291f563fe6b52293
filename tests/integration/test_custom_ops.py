"""The torch.library custom ops: schemas, fake implementations and Dynamo routing.

``torch.library.opcheck`` runs each op for real and under fake tensors and checks that the
fake implementation predicts the real outputs' shapes, dtypes and strides, that the schema
(no mutation, no aliasing) holds, and that AOT dispatch with dynamic shapes traces it.
"""

from __future__ import annotations

import pytest
import torch

import forge_flash as ff
import forge_flash.ops

from helpers.reference import reference_attention


def _qkv(batch, seqlen_q, seqlen_k, heads=4, kv_heads=2, dim=16, dtype=torch.float32):
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(batch, seqlen_q, heads, dim, generator=gen).to(dtype)
    k = torch.randn(batch, seqlen_k, kv_heads, dim, generator=gen).to(dtype)
    v = torch.randn(batch, seqlen_k, kv_heads, dim, generator=gen).to(dtype)
    return q, k, v


def _samples():
    q, k, v = _qkv(2, 5, 9)
    cu = torch.tensor([0, 3, 8], dtype=torch.int32)
    cu_k = torch.tensor([0, 4, 11], dtype=torch.int32)
    pq, pk, pv = q.reshape(10, 4, 16)[:8], k.reshape(18, 2, 16)[:11], v.reshape(18, 2, 16)[:11]
    lens = torch.tensor([3, 9], dtype=torch.int32)
    flat = (q.flatten(2), k.flatten(2), v.flatten(2), 4, 2, 16)
    ops = torch.ops.forge_flash
    return [
        (ops.fwd, (q, k, v, None, True, True)),
        (ops.fwd, (q, k, v, 0.3, False, False)),
        (ops.varlen_fwd, (pq, pk, pv, cu, cu_k, 5, 7, None, True, True)),
        (ops.varlen_fwd, (pq, pk, pv, cu, cu_k, 5, 7, None, False, False)),
        (ops.batched_decode, (q[:, 0], k, v, lens, None, True)),
        (ops.batched_decode, (q[:, 0].half(), k.half(), v.half(), lens, 0.5, False)),
        (ops.attention_fwd, (*flat, None, True, None)),
        (ops.attention_fwd, (*flat, None, True, "bfloat16")),
        (ops.multi_head_attention, (*flat, None, False, "float16")),
        (ops.multi_head_attention, (q[0].flatten(1), k[0].flatten(1), v[0].flatten(1), 4, 2, 16,
                                    None, True, None)),
    ]  # fmt: skip


@pytest.mark.parametrize("case", range(len(_samples())))
def test_opcheck(case):
    op, args = _samples()[case]
    torch.library.opcheck(op, args)


def test_ops_compute_what_the_entry_points_compute():
    q, k, v = _qkv(2, 5, 9)
    out, lse = torch.ops.forge_flash.fwd(q, k, v, None, True, True)
    expected, expected_lse = reference_attention(q, k, v, causal=True)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(lse.double(), expected_lse, atol=1e-5, rtol=0)
    out, empty = torch.ops.forge_flash.fwd(q, k, v, None, True, False)
    assert empty.shape == (0,)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=0)


def _graph_targets(fn, *args):
    """Compile ``fn`` with fullgraph=True; the call targets of the one FX graph Dynamo made."""
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    result = torch.compile(fn, fullgraph=True, backend=backend)(*args)
    assert len(graphs) == 1
    # Dynamo records the op packet ("forge_flash.fwd"), AOT tracing the overload (".default").
    return result, {str(node.target).removesuffix(".default") for node in graphs[0].graph.nodes}


def test_dynamo_records_one_op_per_entry_point():
    q, k, v = _qkv(2, 5, 9)
    out = torch.empty_like(q)
    lens = torch.tensor([3, 9], dtype=torch.int32)

    def fn(q, k, v, out, lens):
        a = ff.flash_attn_fwd(q, k, v, causal=True, out=out)
        b = ff.batched_decode_attention(q[:, 0], k, v, lens)
        c = ff.multi_head_attention(q.flatten(2), k.flatten(2), v.flatten(2), 4, 2, 16)
        d = ff.attention_fwd(q.flatten(2), k.flatten(2), v.flatten(2), 4, 2, 16, 0.25, True)
        return a, b, c, d

    eager = fn(q, k, v, torch.empty_like(q), lens)
    compiled, targets = _graph_targets(fn, q, k, v, out, lens)
    for name in ("fwd", "batched_decode", "multi_head_attention", "attention_fwd"):
        assert f"forge_flash.{name}" in targets
    for got, expected in zip(compiled, eager, strict=True):
        torch.testing.assert_close(got, expected, atol=0, rtol=0)
    torch.testing.assert_close(out, eager[0], atol=0, rtol=0)  # out= received the result


def test_varlen_under_compile():
    q, k, v = _qkv(1, 8, 11)
    cu_q = torch.tensor([0, 3, 8], dtype=torch.int32)
    cu_k = torch.tensor([0, 4, 11], dtype=torch.int32)

    def fn(q, k, v):
        return ff.flash_attn_varlen_fwd(q, k, v, cu_q, cu_k, 5, 7, causal=True, return_lse=True)

    args = (q[0], k[0], v[0])
    (out, lse), targets = _graph_targets(fn, *args)
    assert "forge_flash.varlen_fwd" in targets
    expected, expected_lse = ff.flash_attn_varlen_fwd(
        *args, cu_q, cu_k, 5, 7, causal=True, return_lse=True
    )
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    torch.testing.assert_close(lse, expected_lse, atol=0, rtol=0)


def test_eager_calls_do_not_go_through_the_op(monkeypatch):
    # The op costs ~10 us of dispatch per call; eager calls must not pay it.
    def fail(*args):
        raise AssertionError("eager call went through torch.ops.forge_flash")

    monkeypatch.setattr(ff.ops, "option_args", fail)  # the first step of the op route
    q, k, v = _qkv(1, 3, 3)
    ff.flash_attn_fwd(q, k, v)


def test_bad_input_under_compile_raises_the_eager_error():
    q, k, v = _qkv(1, 3, 3)
    bad_k = k[..., :8]  # head_dim 8 against q's 16

    def fn(q, k, v):
        return ff.flash_attn_fwd(q, k, v)

    torch._dynamo.reset()
    with pytest.raises(ValueError, match="k must have shape"):
        torch.compile(fn, fullgraph=True, backend="eager")(q, bad_k, v[..., :8])


def test_op_annotations_are_evaluated_for_torch_2_4():
    """torch 2.4's schema inference takes the ops' annotations as they are and rejects strings:
    with ``from __future__ import annotations`` in forge_flash.ops, ``import forge_flash``
    raised ValueError on torch 2.4 (CI's torch resolves strings, so only this catches it)."""
    import __future__

    assert getattr(forge_flash.ops, "annotations", None) is not __future__.annotations
