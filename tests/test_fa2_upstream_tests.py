"""tools/lab/fa2_upstream_tests.py: the test file's changes, and the helpers its adapter writes
(pad_input, unpad_input, apply_rotary_emb) against float64 math written here."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

LAB = Path(__file__).resolve().parents[1] / "tools" / "lab"
spec = importlib.util.spec_from_file_location("fa2_upstream_tests", LAB / "fa2_upstream_tests.py")
fa2_upstream_tests = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fa2_upstream_tests)

# The shape of FlashAttention-2's test file where the tool changes it.
SOURCE = """import torch
from flash_attn import flash_attn_func

MAX_HEADDIM_SM8x = 192


is_sm80 = torch.cuda.get_device_capability("cuda") == (8, 0)


def test_one():
    device = "cuda"
    if torch.cuda.get_device_properties("cuda").total_memory <= 16:
        pass
    (dq,) = torch.autograd.grad(out, q, g)
"""


def _load(name: str, tmp_path: Path):
    fa2_upstream_tests.write_workdir(tmp_path, SOURCE, "cpu")
    path = tmp_path / "flash_attn" / name
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_copy_is_forward_only_and_on_the_device_asked(device):
    text = fa2_upstream_tests.adapt_tests(SOURCE, device)
    assert "torch.autograd.grad(" not in text and "_forward_only_grads(out, q, g)" in text
    assert text.index("def _forward_only_grads") > text.index("MAX_HEADDIM_SM8x = 192")
    assert ('device = "cpu"' in text) == (device == "cpu")
    assert ("get_device_capability" in text) == (device == "cuda")
    namespace = {"torch": torch}
    exec(text[text.index("def _forward_only_grads") : text.index("\n\n\nis_sm80")], namespace)
    x = torch.ones(2, 3)
    (grad,) = namespace["_forward_only_grads"](x.sum(), x, None)
    assert torch.equal(grad, torch.zeros(2, 3))


def test_another_file_is_refused():
    with pytest.raises(ValueError, match="FA2_TESTS must be"):
        fa2_upstream_tests.adapt_tests("import torch\n", "cpu")


def test_unpad_then_pad_gives_back_the_kept_rows(tmp_path):
    padding = _load("bert_padding.py", tmp_path)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 2, 4, generator=gen)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    rows, indices, cu_seqlens, max_seqlen, used = padding.unpad_input(x, mask)
    assert rows.shape == (7, 2, 4) and max_seqlen == 5
    assert cu_seqlens.tolist() == [0, 2, 7, 7] and used.tolist() == [2, 5, 0]
    assert torch.equal(rows[:2], x[0, :2]) and torch.equal(rows[2:], x[1])
    back = padding.pad_input(rows, indices, 3, 5)
    assert torch.equal(back, x * mask[:, :, None, None])


@pytest.mark.parametrize("interleaved", [False, True])
def test_rotary_rotates_each_pair_by_its_position_angle(interleaved, tmp_path):
    rotary = _load("layers/rotary.py", tmp_path)
    gen = torch.Generator().manual_seed(1)
    batch, seqlen, heads, head_dim, width = 2, 3, 2, 8, 4
    x = torch.randn(batch, seqlen, heads, head_dim, generator=gen, dtype=torch.float64)
    angle = torch.rand(10, width // 2, generator=gen, dtype=torch.float64) * 2 * math.pi
    offsets = torch.tensor([0, 5])
    out = rotary.apply_rotary_emb(
        x, angle.cos(), angle.sin(), interleaved=interleaved, seqlen_offsets=offsets
    )
    for b in range(batch):
        for i in range(seqlen):
            theta = angle[i + offsets[b]]
            for j in range(width // 2):
                first, second = (2 * j, 2 * j + 1) if interleaved else (j, j + width // 2)
                pair = torch.complex(x[b, i, :, first], x[b, i, :, second])
                turned = pair * torch.polar(torch.ones((), dtype=torch.float64), theta[j])
                assert torch.allclose(out[b, i, :, first], turned.real, atol=1e-6)
                assert torch.allclose(out[b, i, :, second], turned.imag, atol=1e-6)
    assert torch.equal(out[..., width:], x[..., width:].float().to(x.dtype))


def test_a_fallback_is_recorded_with_its_test_and_reason(tmp_path, monkeypatch):
    namespace: dict = {}
    exec(fa2_upstream_tests.CONFTEST, namespace)  # FA2_FALLBACKS unset: nothing is patched
    record = namespace["record_fallback"]

    class Kernels:
        def unsupported(self, call):
            return None if call == "taken" else f"head_dim {call}\n  not served"

    naive, kernels = object(), Kernels()
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "test_x.py::test_y[1-2] (call)")
    record(naive, naive, 7, str(tmp_path))  # the naive path is the active one: not a fallback
    assert list(tmp_path.iterdir()) == []
    record(kernels, naive, 7, str(tmp_path))
    record(kernels, naive, "taken", str(tmp_path))
    lines = next(tmp_path.iterdir()).read_text().splitlines()
    assert lines == [
        "test_x.py::test_y[1-2]\thead_dim 7 not served",
        "test_x.py::test_y[1-2]\trouted to the naive path by its caller",
    ]


def test_the_fallback_summary_counts_calls_tests_and_reasons(tmp_path):
    assert "none" in fa2_upstream_tests.summarize_fallbacks(tmp_path)
    (tmp_path / "1.tsv").write_text("t::a\twhy one\nt::a\twhy two\n")
    (tmp_path / "2.tsv").write_text("t::b\twhy two\n")
    summary = fa2_upstream_tests.summarize_fallbacks(tmp_path).splitlines()
    assert summary[0] == "fallbacks: 3 calls on the naive path in 2 tests"
    assert [line.split(None, 1) for line in summary[1:]] == [["2", "why two"], ["1", "why one"]]
