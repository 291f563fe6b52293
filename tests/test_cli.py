"""``python -m forge_flash``: the self-check, the benchmark's bookkeeping, the commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from forge_flash import benchmark, cli, selfcheck


def _run_module(*args, timeout=600):
    env = dict(os.environ)
    env.pop("FORGE_FLASH_BACKEND", None)
    return subprocess.run(
        [sys.executable, "-m", "forge_flash", *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )  # fmt: skip


def test_selfcheck_passes_on_the_naive_path():
    results = selfcheck.run_checks(torch.device("cpu"))
    assert len(results) == 2 * len(selfcheck.CASES)
    assert all(r.passed for r in results), [r for r in results if not r.passed]


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


def test_full_selection_covers_the_anchors():
    args = benchmark.build_parser().parse_args(["--full", "--device", "cpu"])
    shapes = benchmark.select_shapes(args, torch.device("cpu"))
    prefill = [s for s in shapes if s.kind == "prefill"]
    decode = [s for s in shapes if s.kind == "decode"]
    assert {s.seqlen_q for s in prefill} == {512, 1024, 2048, 4096, 8192, 16384}
    assert {s.head_dim for s in prefill} == {64, 128} and {s.dtype for s in prefill} == {
        "bf16",
        "fp16",
    }
    assert {s.seqlen_k for s in decode} == {4096, 8192, 16384, 32768, 65536, 131072}


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


def test_benchmark_skip_leaves_contenders_out(tmp_path, monkeypatch):
    tiny = [benchmark.Shape("prefill", 1, 2, 2, 32, 32, 32, False, "bf16")]
    monkeypatch.setattr(benchmark, "select_shapes", lambda args, device: tiny)
    path = tmp_path / "bench.json"
    skips = ["--skip", "naive_loop", "--skip", "sdpa_math"]
    benchmark.main(["--device", "cpu", *skips, "--json", str(path)])
    backends = [r["backend"] for r in json.loads(path.read_text())["rows"]]
    assert backends == ["forge_flash", "sdpa"]


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


def test_unknown_command():
    assert cli.main(["frobnicate"]) == 2


def test_info_and_check_commands():
    info = _run_module("info")
    assert info.returncode == 0 and "backend in use     naive" in info.stdout
    check = _run_module("check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "self-check: PASS (12/12)" in check.stdout


@pytest.mark.slow
def test_main_job_runs_check_and_benchmark():
    result = _run_module()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "self-check: PASS" in result.stdout
    assert "benchmark: forge_flash" in result.stdout and "speed-up of forge_flash" in result.stdout
