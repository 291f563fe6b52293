"""The torch.library custom ops: schemas, fake implementations and Dynamo routing.

``torch.library.opcheck`` runs each op for real and under fake tensors and checks that the
fake implementation predicts the real outputs' shapes, dtypes and strides, that the schema
(no mutation, no aliasing) holds, and that AOT dispatch with dynamic shapes traces it.
"""

from __future__ import annotations

import inspect
import types

import pytest
import torch

import forge_flash as ff
import forge_flash.kvcache
import forge_flash.merge
import forge_flash.ops

from helpers.kvcache_reference import (
    random_block_table,
    reference_append,
    reference_cache_attention,
    rotary_tables,
)
from helpers.reference import reference_attention

_TORCH = tuple(int(part) for part in torch.__version__.split(".")[:2])


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


def _kvcache_samples():
    """with_kvcache's op arguments: (q, k_cache, v_cache, k, v, rotary_cos, rotary_sin,
    cache_seqlens, cache_seqlens_value, cache_batch_idx, cache_leftpad, block_table,
    softmax_scale, causal, window_left, window_right, softcap, rotary_interleaved,
    alibi_slopes, num_splits, return_lse, sinks)."""
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 1, 4, 16, generator=gen)
    k_cache, v_cache = (
        torch.randn(2, 12, 2, 16, generator=gen),
        torch.randn(2, 12, 2, 16, generator=gen),
    )
    k, v = torch.randn(2, 1, 2, 16, generator=gen), torch.randn(2, 1, 2, 16, generator=gen)
    lens = torch.tensor([3, 9], dtype=torch.int32)
    cos, sin = rotary_tables(gen, 16, 8, torch.float32)
    pages = torch.randn(7, 4, 2, 16, generator=gen), torch.randn(7, 4, 2, 16, generator=gen)
    table = random_block_table(gen, 2, 3, 7)
    plain = (None, False, -1, -1, 0.0, True, None, 0)
    return [
        (q, k_cache, v_cache, k, v, None, None, lens, None, None, None, None, *plain, True, None),
        (q, k_cache, v_cache, k, v, cos, sin, lens, None, None, None, None, *plain, False, None),
        (q, *pages, k, v, None, None, lens, None, None, None, table, 0.3, True, 2, 0, 5.0, False,
         None, 1, True, torch.randn(4, generator=gen)),
        (q, k_cache, v_cache, None, None, None, None, None, 7, None, None, None, *plain, True,
         None),
    ]  # fmt: skip


@pytest.mark.parametrize("case", range(len(_samples())))
def test_opcheck(case):
    op, args = _samples()[case]
    torch.library.opcheck(op, args)


def _merge_parts():
    """Attention of q over k's first 4 keys and over the other 5: two partial states."""
    q, k, v = _qkv(2, 5, 9)
    first = ff.flash_attn_fwd(q, k[:, :4], v[:, :4], return_lse=True)
    second = ff.flash_attn_fwd(q, k[:, 4:], v[:, 4:], return_lse=True)
    return (q, k, v), [first[0], second[0]], [first[1], second[1]]


def test_opcheck_merge_states():
    _, outs, lses = _merge_parts()
    torch.library.opcheck(torch.ops.forge_flash.merge_states, (outs, lses))
    mixed = [outs[0].bfloat16(), outs[1]]  # the output takes the promoted dtype
    torch.library.opcheck(torch.ops.forge_flash.merge_states, (mixed, lses))


def test_merge_under_compile_is_one_op_and_merges_in_place():
    (q, k, v), outs, lses = _merge_parts()

    def fn(a, b, lse_a, lse_b):
        return ff.merge_attention_states([a, b], [lse_a, lse_b], out=a, out_lse=lse_a)

    expected, expected_lse = reference_attention(q, k, v)  # the attention over all 9 keys
    eager = [x.clone() for x in (*outs, *lses)]
    fn(*eager)
    compiled = [x.clone() for x in (*outs, *lses)]
    (out, lse), targets = _graph_targets(fn, *compiled)
    assert "forge_flash.merge_states" in targets
    assert out is compiled[0] and lse is compiled[2]  # out= and out_lse= were written
    torch.testing.assert_close(out, eager[0], atol=0, rtol=0)
    torch.testing.assert_close(lse, eager[2], atol=0, rtol=0)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(lse.double(), expected_lse, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", range(len(_kvcache_samples())))
def test_opcheck_with_kvcache(case):
    # A mutating op: opcheck also checks that it writes only the arguments its schema names
    # (k_cache, v_cache) and that the fake implementation matches after the writes.
    torch.library.opcheck(torch.ops.forge_flash.with_kvcache, _kvcache_samples()[case])


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


@pytest.mark.parametrize("backend", ["record", "aot_eager"])
def test_with_kvcache_under_compile_appends_and_attends(backend):
    # A decoding step as engines compile it: rotary, the append into a paged cache, attention
    # over cache plus the new token. Dynamo records one op that writes the caches; aot_eager
    # runs it functionalized, where the writes must still reach the caller's caches.
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(3, 1, 4, 16, generator=gen)
    k, v = torch.randn(3, 1, 2, 16, generator=gen), torch.randn(3, 1, 2, 16, generator=gen)
    caches = torch.randn(10, 4, 2, 16, generator=gen), torch.randn(10, 4, 2, 16, generator=gen)
    table = random_block_table(gen, 3, 3, 10)
    lens = torch.tensor([0, 5, 11], dtype=torch.int32)
    cos, sin = rotary_tables(gen, 16, 8, torch.float32)

    def step(q, k_cache, v_cache, k, v):
        return ff.flash_attn_with_kvcache(
            q, k_cache, v_cache, k, v, cos, sin, cache_seqlens=lens, block_table=table,
            causal=True, rotary_interleaved=False, return_softmax_lse=True,
        )  # fmt: skip

    eager_caches = [c.clone() for c in caches]
    expected = step(q, *eager_caches, k, v)
    compiled_caches = [c.clone() for c in caches]
    if backend == "record":
        got, targets = _graph_targets(step, q, *compiled_caches, k, v)
        assert "forge_flash.with_kvcache" in targets
    else:
        torch._dynamo.reset()
        got = torch.compile(step, fullgraph=True, backend="aot_eager")(q, *compiled_caches, k, v)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    for a, b in zip(compiled_caches, eager_caches, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    # And the step itself against the float64 reference: the new keys in place, the output
    # over each sequence's keys plus its new one (the rotation is the reference's concern in
    # tests/test_kvcache.py: here without rotary).
    plain = [c.clone() for c in caches]
    got_out = torch.compile(
        lambda q, kc, vc, k, v: ff.flash_attn_with_kvcache(
            q, kc, vc, k, v, cache_seqlens=lens, block_table=table, causal=True
        ),
        fullgraph=True, backend="aot_eager",
    )(q, *plain, k, v)  # fmt: skip
    rows = table.tolist()
    ref_k, ref_v, _ = reference_append(*caches, k, v, lens.tolist(), block_table=rows)
    ends = [n + 1 for n in lens.tolist()]
    torch.testing.assert_close(plain[0].double(), ref_k, atol=0, rtol=0)
    torch.testing.assert_close(plain[1].double(), ref_v, atol=0, rtol=0)
    ref_out, _ = reference_cache_attention(q, ref_k, ref_v, ends, block_table=rows, causal=True)
    torch.testing.assert_close(got_out.double(), ref_out, atol=1e-5, rtol=0)


@pytest.mark.parametrize("paged", [False, True])
def test_inductor_writes_the_caches_in_place(paged):
    # A KV cache is most of a serving GPU's memory. Functionalized, the op writes into fresh
    # caches that are then copied back; inductor's re-inplacing must undo that, so that the
    # compiled step calls the op on the caller's caches and copies nothing (without that pass
    # the generated code clones both caches before the op and copies them back after it).
    from torch._inductor.utils import run_and_get_code

    gen = torch.Generator().manual_seed(4)
    q = torch.randn(3, 1, 4, 16, generator=gen)
    k, v = torch.randn(3, 1, 2, 16, generator=gen), torch.randn(3, 1, 2, 16, generator=gen)
    shape = (10, 4, 2, 16) if paged else (3, 13, 2, 16)
    caches = torch.randn(*shape, generator=gen), torch.randn(*shape, generator=gen)
    table = random_block_table(gen, 3, 3, 10) if paged else None
    lens = torch.tensor([0, 5, 11], dtype=torch.int32)

    def step(q, k_cache, v_cache, k, v):
        return ff.flash_attn_with_kvcache(
            q, k_cache, v_cache, k, v, cache_seqlens=lens, block_table=table, causal=True
        )

    eager_caches = [c.clone() for c in caches]
    expected = step(q, *eager_caches, k, v)
    torch._dynamo.reset()
    compiled_caches = [c.clone() for c in caches]
    got, sources = run_and_get_code(torch.compile(step, fullgraph=True), q, *compiled_caches, k, v)
    code = "\n".join(sources)
    assert "forge_flash.with_kvcache" in code
    assert "clone" not in code and "copy_" not in code, code
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    for a, b in zip(compiled_caches, eager_caches, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


class _DecodeStep(torch.nn.Module):
    """A decoding step whose KV caches are the module's buffers, as engines keep them."""

    def __init__(self, caches):
        super().__init__()
        self.register_buffer("k_cache", caches[0].clone())
        self.register_buffer("v_cache", caches[1].clone())

    def forward(self, q, k, v, lengths):
        return ff.flash_attn_with_kvcache(
            q, self.k_cache, self.v_cache, k, v, cache_seqlens=lengths, causal=True
        )


@pytest.mark.parametrize("decomposed", [False, True])
def test_exported_step_appends_to_the_module_caches(decomposed):
    # torch.export: the exported program keeps the op (or, decomposed to the inference IR,
    # declares both caches as buffer mutations); either way its module writes its caches as
    # the eager module does, step after step.
    gen = torch.Generator().manual_seed(5)
    caches = torch.randn(3, 12, 2, 16, generator=gen), torch.randn(3, 12, 2, 16, generator=gen)
    q = torch.randn(3, 1, 4, 16, generator=gen)
    k, v = torch.randn(3, 1, 2, 16, generator=gen), torch.randn(3, 1, 2, 16, generator=gen)
    lengths = torch.tensor([0, 5, 10], dtype=torch.int32)
    program = torch.export.export(_DecodeStep(caches), (q, k, v, lengths))
    if decomposed:
        program = program.run_decompositions()
        mutated = [
            s.target
            for s in program.graph_signature.output_specs
            if s.kind.name == "BUFFER_MUTATION"
        ]
        assert sorted(mutated) == ["k_cache", "v_cache"]
    exported, eager = program.module(), _DecodeStep(caches)
    exported.load_state_dict(eager.state_dict())  # the same starting caches, not shared
    for step in range(2):
        got, expected = exported(q, k, v, lengths + step), eager(q, k, v, lengths + step)
        torch.testing.assert_close(got, expected, atol=0, rtol=0)
        for name in ("k_cache", "v_cache"):
            torch.testing.assert_close(
                getattr(exported, name), getattr(eager, name), atol=0, rtol=0
            )
    # And the eager caches against the reference append of both steps.
    ref_k, ref_v, _ = reference_append(*caches, k, v, lengths.tolist())
    ref_k, ref_v, _ = reference_append(ref_k, ref_v, k, v, (lengths + 1).tolist())
    torch.testing.assert_close(eager.k_cache.double(), ref_k, atol=0, rtol=0)
    torch.testing.assert_close(eager.v_cache.double(), ref_v, atol=0, rtol=0)


def test_with_kvcache_int_lengths_under_compile():
    # cache_seqlens as an int travels beside the tensors; a negative one raises the eager
    # error when the graph runs.
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 2, 4, 16, generator=gen)
    k_cache, v_cache = (
        torch.randn(2, 9, 2, 16, generator=gen),
        torch.randn(2, 9, 2, 16, generator=gen),
    )

    def fn(q, k_cache, v_cache, length):
        return ff.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=length, causal=True)

    torch._dynamo.reset()
    got = torch.compile(fn, fullgraph=True, backend="aot_eager")(q, k_cache, v_cache, 6)
    expected, _ = reference_cache_attention(
        q, k_cache.double(), v_cache.double(), [6, 6], causal=True
    )
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)
    torch._dynamo.reset()
    with pytest.raises(ValueError, match="cache_seqlens must be at least 0"):
        torch.compile(fn, fullgraph=True, backend="eager")(q, k_cache, v_cache, -1)
    torch._dynamo.reset()
    # A wrong type is found while Dynamo traces, which reports the eager TypeError as its own.
    # Dynamo of torch 2.4 and 2.11 (measured; 2.13 handles it) stops at operator.index's
    # error inside as_int's try/except, which names the type but not the argument.
    message = (
        r"cache_seqlens must be an int; got 2\.5"
        if _TORCH >= (2, 13)
        else "'float' object cannot be interpreted as an integer"
    )
    with pytest.raises(Exception, match=message):
        torch.compile(fn, fullgraph=True, backend="eager")(q, k_cache, v_cache, 2.5)


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


@pytest.mark.parametrize("seqlen_q", [1, 3])  # routed to batched decode / multi-head attention
def test_decoder_attention_under_compile_checks_its_options_when_the_graph_runs(seqlen_q):
    # Traced, decoder_attention leaves the options to the op it routes to, which checks them
    # with the eager messages; a good call gives the eager answer.
    q, k, v = _qkv(2, seqlen_q, 5)
    flat = (q.flatten(2), k.flatten(2), v.flatten(2), 4, 2, 16)

    def fn(softcap):
        return ff.decoder_attention(*flat, softcap=softcap)

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(5.0), fn(5.0), atol=0, rtol=0)
    torch._dynamo.reset()
    with pytest.raises(ValueError, match="softcap must be finite and >= 0"):
        compiled(-1.0)


def test_op_annotations_are_evaluated_for_torch_2_4():
    """torch 2.4's schema inference takes the ops' annotations as they are and rejects strings:
    with ``from __future__ import annotations`` in forge_flash.ops, ``import forge_flash``
    raised ValueError on torch 2.4 (CI's torch resolves strings, so only this catches it)."""
    import __future__

    for module in (forge_flash.ops, forge_flash.kvcache, forge_flash.merge):
        assert getattr(module, "annotations", None) is not __future__.annotations, module


def test_op_parameters_are_typed_as_torch_2_4_reads_them():
    """torch 2.4's schema inference knows typing's generics only: an op parameter annotated
    ``list[torch.Tensor]`` made ``import forge_flash`` raise there (2026-12-05, merge_states),
    while CI's torch accepts it; ``typing.List[torch.Tensor]`` works on both."""
    from torch._library.custom_ops import OPDEFS

    ops = {name: op for name, op in OPDEFS.items() if name.startswith("forge_flash::")}
    assert len(ops) == 7, sorted(ops)
    for name, op in ops.items():
        for parameter in inspect.signature(op._init_fn).parameters.values():
            assert not isinstance(parameter.annotation, types.GenericAlias), (name, parameter)
