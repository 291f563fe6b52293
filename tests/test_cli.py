"""``python -m forge_flash``: the self-check, the benchmark's bookkeeping, the commands."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import forge_flash
from forge_flash import benchmark, cli, selfcheck
from forge_flash.discovery import backend_info

from helpers.fake_plugin import CpuCudaBackend, FakeBinding


def _run_module(*args, timeout=600):
    env = dict(os.environ)
    env.pop("FORGE_FLASH_BACKEND", None)
    return subprocess.run(
        [sys.executable, "-m", "forge_flash", *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )  # fmt: skip


def test_selfcheck_passes_on_the_naive_path(fresh_discovery):
    results = selfcheck.run_checks(torch.device("cpu"))
    # The float32 layer is not cast on the naive path: checked once, in float32.
    assert len(results) == 2 * len(selfcheck.CASES) - 1
    assert all(r.passed for r in results), [r for r in results if not r.passed]
    assert {r.path for r in results} == {"naive path"}
    (layer,) = [r for r in results if r.name == "float32 model layer"]
    assert (layer.dtype, layer.cast_from) == (torch.float32, None)
    assert layer.tolerance == selfcheck.TOLERANCE[torch.float32]


def test_selfcheck_labels_the_kernel_path_and_the_cast(monkeypatch, fresh_discovery):
    # The real CUDA adapter on CPU tensors over a fake binding that computes attention.
    binding = FakeBinding()
    monkeypatch.setattr("forge_flash.discovery._active", CpuCudaBackend(binding))
    results = selfcheck.run_checks(torch.device("cpu"))
    assert len(results) == 2 * len(selfcheck.CASES)
    assert all(r.passed for r in results), [r for r in results if not r.passed]
    assert {r.path for r in results} == {"cuda kernels"}
    layers = [r for r in results if r.name == "float32 model layer"]
    assert [(r.cast_from, r.dtype) for r in layers] == [
        (torch.float32, torch.float16),
        (torch.float32, torch.bfloat16),
    ]
    # The cast really happened: the binding saw half-precision calls of the layer's shape.
    layer_calls = [c for c in binding.calls if (c.get("seqlen_q"), c["num_heads"]) == (64, 8)]
    assert sorted(c["dtype"] for c in layer_calls) == [0, 1]  # float16, then bfloat16
    assert selfcheck._dtype_text(layers[0]) == "float32 cast to float16"


def test_selfcheck_output_says_what_ran(fresh_discovery, capsys):
    assert selfcheck.main() == 0
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    path = selfcheck.ran_on(device, 64)
    lines = [line for line in capsys.readouterr().out.splitlines() if "float32 model" in line]
    kernels = path != "naive path"
    assert len(lines) == (2 if kernels else 1)
    assert all(path in line and ("float32 cast to" in line) == kernels for line in lines)


def test_selfcheck_fails_a_wrong_answer():
    assert not selfcheck.CheckResult("x", torch.float16, 0.5, 5e-3).passed
    assert not selfcheck.CheckResult("x", torch.float16, float("nan"), 5e-3).passed


def test_selfcheck_reference_matches_a_loop():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 3, 2, 8, generator=gen) for _ in range(3))
    out = selfcheck.dense_reference(q, k, v, causal=True)
    # Row 0 sees key 0 only; row 2 sees all three keys.
    torch.testing.assert_close(out[0, 0], v[0, 0])
    weights = torch.softmax((q[0, 2, 1] @ k[0, :, 1].T) * 8**-0.5, dim=0)
    torch.testing.assert_close(out[0, 2, 1], weights @ v[0, :, 1])


def test_flops_and_bytes():
    prefill = benchmark.Shape("prefill", 2, 4, 4, 128, 128, 64, False, "bf16")
    assert prefill.flops == 4 * 2 * 4 * 128 * 128 * 64
    causal = benchmark.Shape("prefill", 2, 4, 4, 128, 128, 64, True, "bf16")
    assert causal.flops == prefill.flops / 2
    decode = benchmark.Shape("decode", 1, 32, 8, 1, 4096, 128, False, "fp16")
    assert decode.kv_bytes == 2 * 4096 * 8 * 128 * 2


def test_anchor_shapes():
    shapes = benchmark.prefill_shapes([512, 16384], [64, 128], ["bf16"])
    assert {s.batch * s.seqlen_q for s in shapes} == {16384}
    assert {s.heads * s.head_dim for s in shapes} == {2048}
    assert {s.causal for s in shapes} == {False, True}
    decode = benchmark.decode_shapes([4096, 131072], ["bf16"])
    assert [(s.seqlen_q, s.heads, s.heads_k, s.head_dim) for s in decode] == [(1, 32, 8, 128)] * 2


def _selected(*argv, device="cpu"):
    args = benchmark.build_parser().parse_args([*argv, "--device", device])
    return benchmark.select_shapes(args, torch.device(device))


def test_full_selection_covers_the_anchors():
    shapes = _selected("--full")
    prefill = [s for s in shapes if s.kind == "prefill"]
    decode = [s for s in shapes if s.kind == "decode"]
    all_seqlens = {512, 1024, 2048, 4096, 8192, 16384}
    found = {(s.head_dim, s.seqlen_q, s.causal, s.dtype) for s in prefill}
    expected = {
        (d, n, causal, dtype)
        for d, seqlens in [(64, all_seqlens), (128, all_seqlens), (96, {1024, 4096, 8192}),
                           (256, {1024, 4096, 8192})]
        for n in seqlens
        for causal in (False, True)
        for dtype in ("bf16", "fp16")
    }  # fmt: skip
    assert found == expected and len(prefill) == len(expected)
    assert {s.batch * s.seqlen_q for s in prefill} == {16384}
    # heads = 2048 // head_dim: head_dim 96 has 21 heads.
    assert {(s.head_dim, s.heads, s.heads_k) for s in prefill} == {
        (64, 32, 32), (96, 21, 21), (128, 16, 16), (256, 8, 8)
    }  # fmt: skip
    assert {s.seqlen_k for s in decode} == {4096, 8192, 16384, 32768, 65536, 131072}
    one = {(s.seqlen_k, s.dtype) for s in decode if s.batch == 1}
    assert len(one) == 12 == len([s for s in decode if s.batch == 1])
    batched = [(s.batch, s.seqlen_k, s.dtype) for s in decode if s.batch > 1]
    assert sorted(batched) == sorted(
        (b, n, dtype) for b, n in benchmark.BATCHED_DECODE for dtype in ("bf16", "fp16")
    )
    assert {(s.seqlen_q, s.heads, s.heads_k, s.head_dim) for s in decode} == {(1, 32, 8, 128)}


@pytest.mark.parametrize("head_dim", [64, 96, 128, 256])
def test_hdim_selects_one_head_dim(head_dim):
    full = [s for s in _selected("--full", "--prefill", "--hdim", str(head_dim))]
    assert {s.head_dim for s in full} == {head_dim}
    assert {s.seqlen_q for s in full} == set(benchmark.ANCHOR_SEQLENS[head_dim])
    assert {s.kind for s in full} == {"prefill"}
    quick = _selected("--hdim", str(head_dim), "--prefill", device="cuda")
    assert {s.head_dim for s in quick} == {head_dim} and {s.seqlen_q for s in quick} == {1024, 4096}
    assert {s.heads for s in quick} == {2048 // head_dim}


def test_paged_adds_each_prefill_row_over_a_paged_cache():
    shapes = _selected("--full", "--paged", "16", "--hdim", "128")
    prefill = [s for s in shapes if s.kind == "prefill"]
    paged = [s for s in shapes if s.kind == "paged"]
    assert [s.page_size for s in paged] == [16] * len(prefill) and paged
    assert [dataclasses.replace(s, kind="prefill", page_size=0) for s in paged] == prefill
    assert "paged p=16 bf16 b=16 s=1024 h=16 d=128 causal" in {s.label() for s in paged}
    assert not any(s.kind == "paged" for s in _selected("--full", "--decode", "--paged", "16"))
    assert not any(s.kind == "paged" for s in _selected("--full"))
    args = benchmark.build_parser().parse_args(["--paged", "-1"])
    assert "--paged takes a page size" in benchmark.usage_problem(args)


def _paged_shape(**fields):
    shape = benchmark.Shape("paged", 2, 4, 2, 24, 40, 32, True, "bf16", page_size=16)
    return dataclasses.replace(shape, **fields)


@pytest.mark.parametrize("causal", [False, True])
def test_paged_contender_runs_our_paged_call(causal):
    # 40 keys in pages of 16: three pages a sequence, the last one partly filled.
    shape = _paged_shape(causal=causal)
    inputs = benchmark.make_inputs(shape, torch.device("cpu"))
    paged = inputs.paged
    assert paged.table.shape == (2, 3) and paged.table.dtype == torch.int32
    assert sorted(paged.table.flatten().tolist()) == list(range(6))
    found = benchmark.contenders(shape, inputs, torch.device("cpu"))
    assert list(found) == ["forge_flash", "sdpa", "sdpa_math", "naive_loop"]
    for i in range(len(inputs.ours)):
        q, k, v = inputs.ours[i]
        got = found["forge_flash"].run(i).float().view(q.shape)
        expected = selfcheck.dense_reference(q, k, v, causal=causal)
        torch.testing.assert_close(got, expected, atol=2e-2, rtol=2e-2)


def _row(backend, ms, *, seqlen=1024, kind="prefill", dtype="bf16", batch=1):
    return benchmark.Row(kind, backend, dtype, batch, 16, 16, seqlen, seqlen, 128, False, ms,
                         None if ms is None else 1.0, None)  # fmt: skip


def _summary_table(rows):
    """{(contender, kind, dtype): [geomean, min, max]} from summary()'s lines."""
    lines = benchmark.summary(rows).splitlines()[1:]
    return {tuple(line.rsplit(None, 5)[:3]): line.split()[-3:] for line in lines}


def test_summary_against_the_faster_of_cudnn_and_fa4():
    rows = [
        # shape 1: the best rival is cuDNN (1.6 ms): 1.6 / 2.0 = 0.8
        _row("forge_flash", 2.0, seqlen=1024), _row("sdpa_flash", 4.0, seqlen=1024),
        _row("sdpa_cudnn", 1.6, seqlen=1024), _row("fa4", 1.8, seqlen=1024),
        # shape 2: FA4 could not run: cuDNN alone, 0.5 / 1.0 = 0.5
        _row("forge_flash", 1.0, seqlen=2048), _row("sdpa_flash", 1.5, seqlen=2048),
        _row("sdpa_cudnn", 0.5, seqlen=2048), _row("fa4", None, seqlen=2048),
        # shape 3: cuDNN n/a, FA4 1.25 / 1.0 = 1.25
        _row("forge_flash", 1.0, seqlen=4096), _row("sdpa_cudnn", None, seqlen=4096),
        _row("fa4", 1.25, seqlen=4096),
        # shape 4: no rival of the target measured: no target ratio
        _row("forge_flash", 3.0, seqlen=8192), _row("sdpa_flash", 6.0, seqlen=8192),
    ]  # fmt: skip
    assert benchmark.target_ratio(rows[0:4]) == pytest.approx(0.8)
    assert benchmark.target_ratio(rows[4:8]) == pytest.approx(0.5)
    assert benchmark.target_ratio(rows[8:11]) == pytest.approx(1.25)
    assert benchmark.target_ratio(rows[11:]) is None
    table = _summary_table(rows)
    # geomean of 0.8, 0.5, 1.25 = 0.5 ** (1/3) = 0.794; min 0.5, max 1.25
    assert table[("max(sdpa_cudnn, fa4)", "prefill", "bf16")] == ["0.79x", "0.50x", "1.25x"]
    # per contender: cuDNN 0.8 and 0.5 (sqrt(0.4) = 0.632); flash 2.0, 1.5 and 2.0
    assert table[("sdpa_cudnn", "prefill", "bf16")] == ["0.63x", "0.50x", "0.80x"]
    flash = (2.0 * 1.5 * 2.0) ** (1 / 3)
    assert table[("sdpa_flash", "prefill", "bf16")] == [f"{flash:.2f}x", "1.50x", "2.00x"]
    assert table[("fa4", "prefill", "bf16")] == ["1.06x", "0.90x", "1.25x"]  # sqrt(0.9 * 1.25)
    line = benchmark.format_shape(benchmark.prefill_shapes([1024], [128], ["bf16"])[0], rows[:4])
    assert line.endswith("forge_flash / max(sdpa_cudnn, fa4) 0.80")


def test_summary_keeps_each_dtype_apart():
    # the same shape in both dtypes: bf16 at 0.8 of cuDNN, fp16 at 1.25; one geomean over both
    # would read 1.0 and hide the bf16 shortfall
    rows = [
        _row("forge_flash", 2.0), _row("sdpa_cudnn", 1.6),
        _row("forge_flash", 1.0, dtype="fp16"), _row("sdpa_cudnn", 1.25, dtype="fp16"),
    ]  # fmt: skip
    table = _summary_table(rows)
    assert table[("max(sdpa_cudnn, fa4)", "prefill", "bf16")] == ["0.80x", "0.80x", "0.80x"]
    assert table[("max(sdpa_cudnn, fa4)", "prefill", "fp16")] == ["1.25x", "1.25x", "1.25x"]
    assert len(table) == 4  # cuDNN and the target, once per dtype


def test_pass_summary_gives_each_pass_its_own_target_geomean():
    # two passes of the same two bf16 shapes and one fp16 shape: pass 1 at 0.8 and 1.25 of the
    # faster rival (geomean 1.0), pass 2 at 0.5 and 0.5 (0.5); fp16 timed in pass 1 only
    def rows(a, b, fp16):
        return [
            _row("forge_flash", 1.0, seqlen=1024), _row("sdpa_cudnn", a, seqlen=1024),
            _row("forge_flash", 1.0, seqlen=2048), _row("fa4", b, seqlen=2048),
            _row("forge_flash", 1.0, dtype="fp16"), _row("sdpa_cudnn", fp16, dtype="fp16"),
        ]  # fmt: skip

    text = benchmark.pass_summary([rows(0.8, 1.25, 2.0), rows(0.5, 0.5, None)])
    lines = text.splitlines()
    assert lines[0] == "forge_flash / max(sdpa_cudnn, fa4), geomean of each pass alone"
    assert lines[1].split() == ["prefill", "bf16", "1.000", "/", "0.500"]
    assert lines[2].split() == ["prefill", "fp16", "2.000", "/", "n/a"]
    assert len(lines) == 3
    # the summary of the median rows is not the passes' geomeans: each rival's median time over
    # two passes is their mean, (0.8 + 0.5) / 2 = 0.65 and (1.25 + 0.5) / 2 = 0.875, geomean
    # sqrt(0.65 * 0.875) = 0.754
    merged = benchmark.median_rows([rows(0.8, 1.25, 2.0), rows(0.5, 0.5, 2.0)])
    table = _summary_table(merged)
    assert table[("max(sdpa_cudnn, fa4)", "prefill", "bf16")] == ["0.75x", "0.65x", "0.88x"]


def test_summary_keeps_batched_decode_apart():
    # one sequence at 1.25 of cuDNN, a batch of 64 at 0.8: the one-sequence decode geomean
    # stays 1.25, the batch's rows get a group of their own
    rows = [
        _row("forge_flash", 1.0, kind="decode"), _row("sdpa_cudnn", 1.25, kind="decode"),
        _row("forge_flash", 2.0, kind="decode", batch=64),
        _row("sdpa_cudnn", 1.6, kind="decode", batch=64),
    ]  # fmt: skip
    table = _summary_table(rows)
    assert table[("max(sdpa_cudnn, fa4)", "decode", "bf16")] == ["1.25x", "1.25x", "1.25x"]
    assert table[("max(sdpa_cudnn, fa4)", "batched", "bf16")] == ["0.80x", "0.80x", "0.80x"]
    assert table[("sdpa_cudnn", "batched", "bf16")] == ["0.80x", "0.80x", "0.80x"]
    assert len(table) == 4


def test_batched_decode_contenders_agree_with_a_float32_reference():
    # a batch of 3 sequences: every contender's decode output against float32 math per sequence
    shape = benchmark.decode_shapes([40], ["bf16"], batch=3)[0]
    assert shape.label() == "decode  bf16 b=3 kv=40 h=32/8 d=128"
    inputs = benchmark.make_inputs(shape, torch.device("cpu"))
    q, k, v = inputs.ours[0]
    scores = torch.einsum("bqhd,bkhd->bhqk", q.float(), k.float().repeat_interleave(4, 2))
    weights = torch.softmax(scores * 128**-0.5, dim=-1)
    expected = torch.einsum("bhqk,bkhd->bqhd", weights, v.float().repeat_interleave(4, 2))
    for name, contender in benchmark.contenders(shape, inputs, torch.device("cpu")).items():
        got = contender.run(0).float()
        if name != "forge_flash":  # SDPA's layout (b, h, s, d)
            got = got.transpose(1, 2)
        torch.testing.assert_close(got, expected, atol=2e-2, rtol=2e-2, msg=name)


@pytest.fixture
def no_flash_attn(monkeypatch):
    benchmark.fa4_function.cache_clear()
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # import flash_attn fails
    yield
    benchmark.fa4_function.cache_clear()


def _sdpa_bshd(q, k, v, causal):
    """SDPA on (batch, seqlen, heads, dim) tensors, K/V heads repeated for GQA (SDPA's
    ``enable_gqa`` needs torch 2.5; the package supports 2.4)."""
    group = q.shape[2] // k.shape[2]
    k, v = (t.repeat_interleave(group, 2) for t in (k, v))
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
    return F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal).transpose(1, 2)


@pytest.fixture
def fake_fa4(monkeypatch):
    """A stand-in flash_attn.cute whose flash_attn_func computes attention with SDPA on its
    (b, s, h, d) inputs and returns (out, lse) as FA4 does."""
    calls = []

    def flash_attn_func(q, k, v, causal=False):
        calls.append((tuple(q.shape), causal))
        out = _sdpa_bshd(q, k, v, causal)
        return out, torch.zeros(q.shape[0], q.shape[2], q.shape[1])

    def flash_attn_varlen_func(
        q, k, v, cu_seqlens_q=None, max_seqlen_q=None, seqused_k=None, page_table=None,
        causal=False,
    ):  # fmt: skip
        # FA4's paged call: packed q, K/V caches (blocks, page, hk, d) read through page_table.
        calls.append(("varlen", tuple(q.shape), tuple(page_table.shape), causal))
        batch, keys = page_table.shape[0], int(seqused_k[0])
        per_seq = k.shape[1] * page_table.shape[1]
        qb = q.view(batch, -1, *q.shape[1:])
        kb, vb = (
            c[page_table.long()].reshape(batch, per_seq, *c.shape[2:])[:, :keys] for c in (k, v)
        )
        return _sdpa_bshd(qb, kb, vb, causal).reshape(q.shape), None

    package = types.ModuleType("flash_attn")
    package.cute = types.ModuleType("flash_attn.cute")
    package.cute.flash_attn_func = flash_attn_func
    package.cute.flash_attn_varlen_func = flash_attn_varlen_func
    benchmark.fa4_function.cache_clear()
    monkeypatch.setitem(sys.modules, "flash_attn", package)
    monkeypatch.setitem(sys.modules, "flash_attn.cute", package.cute)
    yield calls
    benchmark.fa4_function.cache_clear()


# The GPU's contender set, built on CPU tensors: SDPA pinned to flash/cuDNN cannot run there
# and comes back as None, which is all these tests need of it.
_CUDA = torch.device("cuda")


def test_missing_flash_attn_leaves_fa4_out(no_flash_attn):
    shape = benchmark.Shape("prefill", 1, 4, 2, 16, 16, 32, True, "bf16")
    inputs = benchmark.make_inputs(shape, torch.device("cpu"))
    assert benchmark.fa4_function() is None
    found = benchmark.contenders(shape, inputs, _CUDA)
    assert list(found) == ["forge_flash", "sdpa_flash", "sdpa_cudnn", "naive_loop"]
    assert "fa4" not in benchmark.environment(torch.device("cpu"))


def test_fa4_contender_calls_flash_attn_func_on_our_layout(fake_fa4):
    shape = benchmark.Shape("prefill", 2, 4, 2, 16, 16, 32, True, "bf16")
    inputs = benchmark.make_inputs(shape, torch.device("cpu"))
    found = benchmark.contenders(shape, inputs, _CUDA)
    assert list(found) == ["forge_flash", "sdpa_flash", "sdpa_cudnn", "fa4", "naive_loop"]
    # Set-up made one untimed call (FA4 compiles on its first call of a configuration).
    assert fake_fa4 == [((2, 16, 4, 32), True)]
    q, k, v = inputs.ours[0]
    expected = selfcheck.dense_reference(q, k, v, causal=True)
    torch.testing.assert_close(found["fa4"].run(0).float(), expected, atol=2e-2, rtol=2e-2)


def test_fa4_contender_on_a_paged_shape_calls_its_varlen_function(fake_fa4):
    # SDPA's is_causal is top-left: the fake's causal answer matches ours only with sq == sk.
    shape = _paged_shape(seqlen_k=24)
    inputs = benchmark.make_inputs(shape, torch.device("cpu"))
    found = benchmark.contenders(shape, inputs, _CUDA)
    assert fake_fa4 == [("varlen", (48, 4, 32), (2, 2), True)]
    q, k, v = inputs.ours[0]
    expected = selfcheck.dense_reference(q, k, v, causal=True)
    got = found["fa4"].run(0).float().view(q.shape)
    torch.testing.assert_close(got, expected, atol=2e-2, rtol=2e-2)


def test_skip_fa4_never_sets_it_up(fake_fa4):
    shape = benchmark.Shape("prefill", 1, 4, 4, 16, 16, 32, False, "bf16")
    inputs = benchmark.make_inputs(shape, torch.device("cpu"))
    args = benchmark.build_parser().parse_args(["--skip", "fa4"])
    found = benchmark.contenders(shape, inputs, _CUDA, frozenset(args.skip))
    assert "fa4" not in found and fake_fa4 == []


def test_fa4_that_cannot_run_a_shape_gives_no_time(monkeypatch, capsys):
    def refuses(q, k, v, causal=False):
        raise NotImplementedError("head_dim 96 not supported")

    benchmark.fa4_function.cache_clear()
    monkeypatch.setattr(benchmark, "fa4_function", lambda name="flash_attn_func": refuses)
    shape = benchmark.Shape("prefill", 1, 2, 2, 16, 16, 96, False, "bf16")
    inputs = benchmark.make_inputs(shape, torch.device("cpu"))
    assert benchmark.contenders(shape, inputs, _CUDA)["fa4"] is None
    assert "fa4: cannot run prefill bf16" in capsys.readouterr().out


def test_benchmark_run_writes_rows(tmp_path, monkeypatch, capsys):
    tiny = [
        benchmark.Shape("prefill", 2, 4, 2, 64, 64, 32, True, "bf16"),
        benchmark.Shape("decode", 1, 8, 2, 1, 256, 64, False, "fp16"),
    ]
    monkeypatch.setattr(benchmark, "select_shapes", lambda args, device: tiny)
    path = tmp_path / "bench.json"
    benchmark.main(["--device", "cpu", "--json", str(path)])
    data = json.loads(path.read_text())
    assert data["env"]["device"] == "cpu" and data["env"]["backend"] == "naive"
    backends = [r["backend"] for r in data["rows"]]
    assert backends == ["forge_flash", "sdpa", "sdpa_math", "naive_loop"] * 2
    assert all(r["ms"] > 0 and r["tflops"] > 0 and r["gbps"] > 0 for r in data["rows"])
    text = capsys.readouterr().out
    assert "prefill bf16 b=2 s=64 h=4 d=32 causal" in text and "speed-up of forge_flash" in text


def test_benchmark_run_writes_paged_rows(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(benchmark, "select_shapes", lambda args, device: [_paged_shape()])
    path = tmp_path / "bench.json"
    benchmark.main(["--device", "cpu", "--skip", "naive_loop", "--json", str(path)])
    rows = json.loads(path.read_text())["rows"]
    assert [(r["kind"], r["backend"], r["page_size"]) for r in rows] == [
        ("paged", "forge_flash", 16), ("paged", "sdpa", 16), ("paged", "sdpa_math", 16)
    ]  # fmt: skip
    assert all(r["ms"] > 0 for r in rows)
    text = capsys.readouterr().out
    assert "paged p=16 bf16 b=2 s=24 h=4 d=32 causal" in text
    assert "paged" in text.split("speed-up of forge_flash")[1]


def test_benchmark_skip_leaves_contenders_out(tmp_path, monkeypatch):
    tiny = [benchmark.Shape("prefill", 1, 2, 2, 32, 32, 32, False, "bf16")]
    monkeypatch.setattr(benchmark, "select_shapes", lambda args, device: tiny)
    path = tmp_path / "bench.json"
    skips = ["--skip", "naive_loop", "--skip", "sdpa_math"]
    benchmark.main(["--device", "cpu", *skips, "--json", str(path)])
    backends = [r["backend"] for r in json.loads(path.read_text())["rows"]]
    assert backends == ["forge_flash", "sdpa"]


def test_median_rows_take_each_rows_median_time():
    def timed(ms, tflops):
        return benchmark.Row("prefill", "forge_flash", "bf16", 1, 2, 2, 8, 8, 32, False, ms,
                             tflops, None if ms is None else 2.0 / ms)  # fmt: skip

    passes = [
        [timed(1.0, 6.0), timed(None, None), timed(4.0, 1.0)],
        [timed(3.0, 2.0), timed(None, None), timed(None, None)],
        [timed(2.0, 3.0), timed(None, None), timed(2.0, 2.0)],
    ]
    first, never, some = benchmark.median_rows(passes)
    # Times 1, 3, 2 -> 2; the throughput of the 1 ms pass (6) scaled to 2 ms: 3.
    assert (first.ms, first.tflops, first.gbps) == pytest.approx((2.0, 3.0, 1.0))
    assert never.ms is None and never.tflops is None
    # Only the passes that timed the row: 4 and 2 -> 3.
    assert (some.ms, some.tflops) == pytest.approx((3.0, 4.0 / 3.0))
    with pytest.raises(ValueError):
        benchmark.median_rows([passes[0], passes[1][:2]])


def test_benchmark_passes_report_median_rows(tmp_path, monkeypatch, capsys):
    tiny = [benchmark.Shape("prefill", 1, 2, 2, 32, 32, 32, False, "bf16")]
    monkeypatch.setattr(benchmark, "select_shapes", lambda args, device: tiny)
    path = tmp_path / "bench.json"
    argv = ["--device", "cpu", "--passes", "3", "--skip", "naive_loop", "--json", str(path)]
    benchmark.main(argv)
    data = json.loads(path.read_text())
    assert len(data["passes"]) == 3
    for i, row in enumerate(data["rows"]):
        times = sorted(p[i]["ms"] for p in data["passes"])
        assert row["backend"] == data["passes"][0][i]["backend"]
        assert row["ms"] == pytest.approx(times[1])
    text = capsys.readouterr().out
    assert "pass 3 of 3" in text and "median of 3 passes" in text
    assert "geomean of each pass alone" in text  # pass_summary, after the summary
    assert benchmark.main(["--device", "cpu", "--passes", "0"]) == 2
    assert "--passes takes a count of at least 1, got 0" in capsys.readouterr().err


def test_every_contender_computes_attention():
    shape = benchmark.Shape("prefill", 1, 4, 2, 16, 16, 32, True, "bf16")
    inputs = benchmark.make_inputs(shape, torch.device("cpu"))
    found = benchmark.contenders(shape, inputs, torch.device("cpu"))
    expected = found.pop("forge_flash").run(0).float()
    for name, contender in found.items():
        with contender.context():
            result = contender.run(0)
        # SDPA contenders return (b, h, s, d); ours is (b, s, h, d).
        torch.testing.assert_close(
            result.float().transpose(1, 2), expected, atol=2e-2, rtol=2e-2, msg=name
        )


@pytest.mark.parametrize(
    "argv,message",
    [
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["--frobnicate"], "unknown option '--frobnicate'"),
        (["check", "extra"], "check takes no arguments, got 'extra'"),
        (["info", "--json", "extra"], "info takes only --json"),
        (["info", "--verbose"], "info takes only --json"),
        (["--version", "extra"], "--version takes no arguments"),
        (["help", "me"], "help takes no arguments"),
    ],
)
def test_usage_mistakes_exit_2_with_the_usage_line(argv, message, capsys):
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    usage_line, error_line = err.splitlines()
    assert usage_line.startswith("usage: forge-flash ")
    assert error_line.startswith("forge-flash: error: ") and message in error_line


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag, capsys):
    assert cli.main([flag]) == 0
    assert capsys.readouterr().out == f"forge-flash {forge_flash.__version__}\n"


def test_usage_names_the_program(capsys):
    assert cli.main(["--help"]) == 0  # the console script's default name
    assert capsys.readouterr().out.startswith("usage: forge-flash [")
    assert cli.main(["-h"], prog="python -m forge_flash") == 0
    assert capsys.readouterr().out.startswith("usage: python -m forge_flash [")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "--hdim", "32"])
    assert exit_info.value.code == 2
    assert "usage: forge-flash bench " in capsys.readouterr().err


def test_console_script_points_at_main():
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    assert '\nforge-flash = "forge_flash.cli:main"\n' in pyproject.read_text()
    assert cli.DEFAULT_PROG == "forge-flash"


def test_info_json_is_backend_info(fresh_discovery, capsys):
    assert cli.main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(backend_info().as_dict()))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("argv", [["--device", "cuda"], ["--graph"], ["--decode", "--graph"]])
def test_bench_on_the_gpu_without_one_is_one_line(argv, capsys):
    assert cli.main(["bench", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("forge-flash bench: error: ") and "sees none" in line


def test_bench_graph_on_the_cpu_is_an_error(capsys):
    assert benchmark.main(["--graph", "--device", "cpu"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "--graph" in line and "--device cpu" in line


def test_info_and_check_commands():
    info = _run_module("info")
    assert info.returncode == 0 and "backend in use     naive" in info.stdout
    check = _run_module("check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "self-check: PASS (11/11)" in check.stdout
    mistake = _run_module("check", "extra")
    assert mistake.returncode == 2 and "Traceback" not in mistake.stderr
    assert mistake.stderr.startswith("usage: python -m forge_flash ")


@pytest.mark.slow
def test_main_job_runs_check_and_benchmark():
    result = _run_module()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "self-check: PASS" in result.stdout
    assert "benchmark: forge_flash" in result.stdout and "speed-up of forge_flash" in result.stdout
