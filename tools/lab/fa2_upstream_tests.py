"""FlashAttention-2's own forward tests, run against ``forge_flash.flash_attn_interface``.

    python tools/lab/fa2_upstream_tests.py FA2_TESTS [--device cpu] [--keep 0.003] [-k EXPR]

FA2_TESTS is FlashAttention-2's ``tests/test_flash_attn.py`` (Dao-AILab/flash-attention; not in
this repository: pass a copy, e.g. ``git show HEAD:tests/test_flash_attn.py`` of a clone). Its
tests import ``flash_attn`` and three helpers; this tool writes, into a scratch folder, a
``flash_attn`` package that maps those imports onto forge-flash (the helpers ``pad_input``,
``unpad_input`` and ``apply_rotary_emb`` written here from their documented behaviour), a copy of
the test file changed in three ways, and a conftest that samples the cases, then runs pytest
there. The changes to the copy:

* forward only: every ``torch.autograd.grad`` returns zeros, so the gradient checks compare
  zeros and the output checks, which come first or beside them, decide;
* ``--device cpu``: the tests' ``"cuda"`` becomes ``"cpu"`` and the device queries become an
  sm_90 of 1 TiB, so they run on the naive path of a machine without a GPU;
* the cases left out are dropout (``0.17``: forge-flash raises NotImplementedError by design),
  and the backward-only tests (race, overflow, transpose, deterministic, the raw C++ entry
  points); of the rest, a fraction ``--keep`` drawn with ``--seed``.

The conftest also records every call the naive path runs while a kernel backend is active (the
test and the kernel backend's reason), and the tool prints their count and reasons last: on the
GPU, how much of the run the kernels answered.

Session 80 ran it on the CPU (docs/benchmarks.md): it found the tensor ``window_size`` of
FlashAttention's tests refused, and a paged-bound error that was not a RuntimeError. On the GPU
machine (no network) carry the test file in an ignored path and use ``--device cuda``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

# Tests of the backward pass or of FlashAttention's private entry points, and dropout cases.
LEFT_OUT = (
    "0.17",
    "race_condition",
    "bwd_",
    "deterministic",
    "generator_arg",
    "paged_kv_num_splits",
)

ADAPTER = {
    "flash_attn/__init__.py": '''"""FlashAttention-2's import names, on forge-flash."""
from forge_flash.flash_attn_interface import (  # noqa: F401
    flash_attn_func,
    flash_attn_kvpacked_func,
    flash_attn_qkvpacked_func,
    flash_attn_varlen_func,
    flash_attn_varlen_kvpacked_func,
    flash_attn_varlen_qkvpacked_func,
    flash_attn_with_kvcache,
)
''',
    "flash_attn/flash_attn_interface.py": """# FlashAttention-2's module, on forge-flash
from forge_flash.flash_attn_interface import *

USE_TRITON_ROCM = False


def _get_block_size_n(device, head_dim, is_dropout, is_causal):  # only dropout tests use it
    return 128
""",
    "flash_attn/layers/__init__.py": "",
    "flash_attn/layers/rotary.py": '''import torch


def apply_rotary_emb(
    x, cos, sin, interleaved=False, inplace=False, seqlen_offsets=0, cu_seqlens=None,
    max_seqlen=None,
):
    """Rotary embedding of x (batch, seqlen, heads, head_dim) at positions i + seqlen_offsets[b]
    over its first 2 * cos.shape[1] features: pairs (2j, 2j + 1) when interleaved, else
    (j, j + half); computed in float32."""
    if cu_seqlens is not None:
        raise NotImplementedError("the adapter's rotary takes padded batches only")
    batch, seqlen = x.shape[:2]
    width = 2 * cos.shape[-1]
    position = torch.arange(seqlen, device=x.device).expand(batch, seqlen)
    if isinstance(seqlen_offsets, torch.Tensor):
        position = position + seqlen_offsets.long().unsqueeze(1)
    else:
        position = position + int(seqlen_offsets)
    c = cos.float()[position].unsqueeze(2)
    s = sin.float()[position].unsqueeze(2)
    rotated, rest = x.float()[..., :width], x.float()[..., width:]
    if interleaved:
        a, b = rotated[..., 0::2], rotated[..., 1::2]
        rotated = torch.stack([a * c - b * s, a * s + b * c], dim=-1).flatten(-2)
    else:
        a, b = rotated[..., : width // 2], rotated[..., width // 2 :]
        rotated = torch.cat([a * c - b * s, a * s + b * c], dim=-1)
    return torch.cat([rotated, rest], dim=-1).to(x.dtype)
''',
    "flash_attn/bert_padding.py": '''import torch
import torch.nn.functional as F


def unpad_input(hidden_states, attention_mask, unused_mask=None):
    """The rows the mask keeps, packed: (rows, indices, cu_seqlens, max_seqlen, used_seqlens)."""
    kept = attention_mask if unused_mask is None else attention_mask | unused_mask
    seqlens = kept.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(kept.flatten()).flatten()
    cu_seqlens = F.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))
    rows = hidden_states.reshape(-1, *hidden_states.shape[2:])[indices]
    used = attention_mask.sum(dim=-1, dtype=torch.int32)
    return rows, indices, cu_seqlens, int(seqlens.max()), used


def pad_input(hidden_states, indices, batch, seqlen):
    """unpad_input's inverse: rows back at their indices of (batch, seqlen, ...), zeros between."""
    out = hidden_states.new_zeros(batch * seqlen, *hidden_states.shape[1:])
    out[indices] = hidden_states
    return out.reshape(batch, seqlen, *hidden_states.shape[1:])
''',
}

CONFTEST = f"""import os
import random

LEFT_OUT = {LEFT_OUT!r}


def record_fallback(active, naive, call, folder):
    \"\"\"One line (test, reason) in this worker's file when the naive path runs a call that a
    kernel backend is active for.\"\"\"
    if active is naive:
        return
    reason = active.unsupported(call) or "routed to the naive path by its caller"
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
    with open(os.path.join(folder, f"{{os.getpid()}}.tsv"), "a") as f:
        f.write(test + "\\t" + " ".join(reason.split()) + "\\n")


if os.environ.get("FA2_FALLBACKS"):
    from forge_flash import active_backend
    from forge_flash.backends.naive import NaiveBackend

    _naive_run = NaiveBackend.run

    def _recorded_run(self, call, t):
        record_fallback(active_backend(), self, call, os.environ["FA2_FALLBACKS"])
        return _naive_run(self, call, t)

    NaiveBackend.run = _recorded_run


def pytest_collection_modifyitems(config, items):
    keep = float(os.environ["FA2_KEEP"])
    draw = random.Random(int(os.environ["FA2_SEED"]))
    items[:] = [
        item for item in items
        if not any(word in item.nodeid for word in LEFT_OUT) and draw.random() < keep
    ]
"""

ZERO_GRADS = '''

def _forward_only_grads(out, inputs, grad_outputs=None, **kwargs):
    """fa2_upstream_tests.py: forge-flash is forward-only; gradients are zeros."""
    inputs = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    return tuple(torch.zeros_like(x) for x in inputs)
'''


def adapt_tests(source: str, device: str) -> str:
    """FlashAttention-2's test file, forward only, on ``device`` ("cpu" or "cuda")."""
    if "torch.autograd.grad(" not in source or "from flash_attn import" not in source:
        raise ValueError("FA2_TESTS must be FlashAttention-2's tests/test_flash_attn.py")
    text = source.replace("torch.autograd.grad(", "_forward_only_grads(")
    head, sep, tail = text.partition("\n\n\n")  # after the imports
    text = head + ZERO_GRADS + sep + tail
    if device == "cpu":
        text = text.replace('torch.cuda.get_device_capability("cuda")', "(9, 0)")
        text = text.replace('torch.cuda.get_device_properties("cuda").total_memory', "(1 << 40)")
        text = text.replace('device = "cuda"', 'device = "cpu"')
    return text


def write_workdir(workdir: Path, source: str, device: str) -> Path:
    for name, text in ADAPTER.items():
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (workdir / "conftest.py").write_text(CONFTEST)
    tests = workdir / "test_fa2_upstream.py"
    tests.write_text(adapt_tests(source, device))
    return tests


def summarize_fallbacks(folder: Path, top: int = 12) -> str:
    """What the conftest recorded: calls the naive path ran while a kernel backend was active,
    how many tests made them, and the most frequent reasons."""
    files = sorted(folder.glob("*.tsv"))
    lines = [line.split("\t", 1) for f in files for line in f.read_text().splitlines()]
    if not lines:
        return "fallbacks: none (every call ran on the active backend)"
    reasons = Counter(reason for _, reason in lines)
    tests = {test for test, _ in lines}
    ranked = sorted(reasons.items(), key=lambda item: (-item[1], item[0]))[:top]
    return "\n".join(
        [f"fallbacks: {len(lines)} calls on the naive path in {len(tests)} tests"]
        + [f"  {count:6d}  {reason}" for reason, count in ranked]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fa2_tests", type=Path, help="FlashAttention-2's tests/test_flash_attn.py")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--keep", type=float, default=0.003, help="fraction of cases run")
    parser.add_argument("--seed", type=int, default=0, help="which cases (with --keep)")
    parser.add_argument("-k", dest="expr", default=None, help="pytest -k expression")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    args, rest = parser.parse_known_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fa2-upstream-"))
    tests = write_workdir(workdir, args.fa2_tests.read_text(), args.device)
    python_path = os.pathsep.join(p for p in (str(workdir), os.environ.get("PYTHONPATH")) if p)
    fallbacks = workdir / "fallbacks"
    shutil.rmtree(fallbacks, ignore_errors=True)
    fallbacks.mkdir()
    env = dict(os.environ, PYTHONPATH=python_path, FA2_KEEP=str(args.keep), FA2_SEED=str(args.seed))
    env["FA2_FALLBACKS"] = str(fallbacks)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", str(tests)]
    command += ["-k", args.expr] if args.expr else []
    returncode = subprocess.call(command + rest, cwd=workdir, env=env)
    print(summarize_fallbacks(fallbacks))
    return returncode


if __name__ == "__main__":
    sys.exit(main())
