"""``python -m forge_flash check``: the active backend against a float32 reference.

A few shapes that cover the main paths (causal GQA prefill, unequal lengths, a long decode,
varlen with an empty sequence, batched decode with an empty cache, the float32 model-layer
call), in float16 and bfloat16, on the GPU when torch sees one. The reference here is the
plainest dense formula in float32, independent of the naive path's chunking and SDPA use.
Each line says what ran: the kernels or the naive path, and for the float32 model-layer call
whether it was cast to half precision (only for the kernels: on the naive path it stays
float32, so it is checked once, against float32's tolerance).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import dispatch
from .api import batched_decode_attention, flash_attn_fwd, flash_attn_varlen_fwd
from .backends.naive import NAIVE
from .call import AttentionCall
from .discovery import active_backend
from .projections import attention_fwd

# Max abs error allowed against the float32 reference (outputs are O(1) for randn inputs):
# the result's rounding to the dtype plus the half-precision probabilities the kernels use.
TOLERANCE = {torch.float16: 5e-3, torch.bfloat16: 2e-2, torch.float32: 1e-4}


@dataclass(frozen=True)
class CheckResult:
    name: str
    dtype: torch.dtype  # the precision the attention ran in
    max_error: float
    tolerance: float
    path: str = ""  # what ran: see ran_on()
    cast_from: torch.dtype | None = None  # float32 inputs cast to ``dtype`` for the kernels

    @property
    def passed(self) -> bool:
        return math.isfinite(self.max_error) and self.max_error <= self.tolerance


def dense_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool,
    key_lengths: list[int] | None = None,
) -> torch.Tensor:
    """float32 attention, (b, sq, h, d) over (b, sk, hk, d), every score materialised."""
    batch, seqlen_q, heads, head_dim = q.shape
    seqlen_k, heads_k = k.shape[1], k.shape[2]
    group = heads // heads_k
    qf = q.float().transpose(1, 2)
    kf = k.float().repeat_interleave(group, dim=2).transpose(1, 2)
    vf = v.float().repeat_interleave(group, dim=2).transpose(1, 2)
    scores = qf @ kf.transpose(-1, -2) * head_dim**-0.5
    lengths = key_lengths or [seqlen_k] * batch
    rows = torch.arange(seqlen_q, device=q.device).view(-1, 1)
    cols = torch.arange(seqlen_k, device=q.device).view(1, -1)
    visible = torch.stack(
        [(cols < n) & ((cols <= rows + n - seqlen_q) if causal else True) for n in lengths]
    ).unsqueeze(1)
    scores = scores.masked_fill(~visible, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # rows with no key: 0
    return (probs @ vf).transpose(1, 2)


def _randn(*shape: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.randn(*shape, device=device).to(dtype)


def _case_prefill(dtype, device):
    q = _randn(2, 128, 8, 64, dtype=dtype, device=device)
    k = _randn(2, 128, 2, 64, dtype=dtype, device=device)
    v = _randn(2, 128, 2, 64, dtype=dtype, device=device)
    return flash_attn_fwd(q, k, v, causal=True), dense_reference(q, k, v, causal=True)


def _case_unequal(dtype, device):
    q = _randn(1, 37, 6, 96, dtype=dtype, device=device)
    k = _randn(1, 200, 6, 96, dtype=dtype, device=device)
    v = _randn(1, 200, 6, 96, dtype=dtype, device=device)
    return flash_attn_fwd(q, k, v, causal=True), dense_reference(q, k, v, causal=True)


def _case_long_decode(dtype, device):
    q = _randn(1, 1, 32, 128, dtype=dtype, device=device)
    k = _randn(1, 4096, 8, 128, dtype=dtype, device=device)
    v = _randn(1, 4096, 8, 128, dtype=dtype, device=device)
    return flash_attn_fwd(q, k, v, causal=True), dense_reference(q, k, v, causal=True)


def _case_varlen(dtype, device):
    seqlens_q, seqlens_k = [5, 0, 33], [7, 3, 40]
    q = _randn(sum(seqlens_q), 4, 64, dtype=dtype, device=device)
    k = _randn(sum(seqlens_k), 2, 64, dtype=dtype, device=device)
    v = _randn(sum(seqlens_k), 2, 64, dtype=dtype, device=device)
    cu_q = torch.tensor([0, 5, 5, 38], dtype=torch.int32, device=device)
    cu_k = torch.tensor([0, 7, 10, 50], dtype=torch.int32, device=device)
    out = flash_attn_varlen_fwd(q, k, v, cu_q, cu_k, 33, 40, causal=True)
    parts = []
    for i in range(3):
        qs = q[cu_q[i] : cu_q[i + 1]].unsqueeze(0)
        ks, vs = (t[cu_k[i] : cu_k[i + 1]].unsqueeze(0) for t in (k, v))
        parts.append(dense_reference(qs, ks, vs, causal=True)[0])
    return out, torch.cat(parts)


def _case_batched_decode(dtype, device):
    lengths = [512, 1, 0, 300]
    q = _randn(4, 8, 64, dtype=dtype, device=device)
    k = _randn(4, 512, 1, 64, dtype=dtype, device=device)
    v = _randn(4, 512, 1, 64, dtype=dtype, device=device)
    seqlens = torch.tensor(lengths, dtype=torch.int32, device=device)
    out = batched_decode_attention(q, k, v, seqlens)
    return out, dense_reference(q.unsqueeze(1), k, v, causal=False, key_lengths=lengths)[:, 0]


def _case_float32_layer(dtype, device):
    # Model-layer call on float32 projections: cast to `dtype` for the kernels and back.
    q = torch.randn(2, 64, 8 * 64, device=device)
    k = torch.randn(2, 64, 2 * 64, device=device)
    v = torch.randn(2, 64, 2 * 64, device=device)
    out = attention_fwd(q, k, v, 8, 2, 64, None, True, cast_dtype=dtype)
    expected = dense_reference(
        q.unflatten(-1, (8, 64)), k.unflatten(-1, (2, 64)), v.unflatten(-1, (2, 64)), causal=True
    )
    return out, expected.flatten(-2)


# (name, case, head_dim, whether its inputs are float32 model-layer projections)
CASES: list[tuple[str, Callable, int, bool]] = [
    ("prefill causal GQA 128x128", _case_prefill, 64, False),
    ("causal 37 queries x 200 keys", _case_unequal, 96, False),
    ("decode 1 query x 4096 keys", _case_long_decode, 128, False),
    ("varlen with an empty sequence", _case_varlen, 64, False),
    ("batched decode, one empty cache", _case_batched_decode, 64, False),
    ("float32 model layer", _case_float32_layer, 64, True),
]


def ran_on(device: torch.device, head_dim: int) -> str:
    """What a half-precision call of this head_dim runs on here: the active backend's kernels,
    or the naive PyTorch path."""
    call = AttentionCall(
        layout="dense", batch=1, seqlen_q=1, seqlen_k=1, num_heads=1, num_heads_k=1,
        head_dim=head_dim, dtype=torch.float16, device=device, softmax_scale=head_dim**-0.5,
        causal=False,
    )  # fmt: skip
    backend = dispatch.route(call).backend
    return "naive path" if backend is NAIVE else f"{backend.name} kernels"


def run_checks(device: torch.device | None = None) -> list[CheckResult]:
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    results = []
    for dtype in (torch.float16, torch.bfloat16):
        for name, case, head_dim, float32_inputs in CASES:
            path = ran_on(device, head_dim)
            kernels = path != "naive path"
            if float32_inputs and not kernels and dtype != torch.float16:
                continue  # not cast: the float16 pass already checked this exact call
            out, expected = case(dtype, device)
            error = (out.float() - expected.float()).abs().max().item() if out.numel() else 0.0
            if float32_inputs and not kernels:  # the naive path computes it in float32
                result = CheckResult(name, torch.float32, error, TOLERANCE[torch.float32], path)
            elif float32_inputs:
                result = CheckResult(name, dtype, error, TOLERANCE[dtype], path, torch.float32)
            else:
                result = CheckResult(name, dtype, error, TOLERANCE[dtype], path)
            results.append(result)
    return results


def _dtype_text(result: CheckResult) -> str:
    dtype = str(result.dtype).removeprefix("torch.")
    if result.cast_from is None:
        return dtype
    return f"{str(result.cast_from).removeprefix('torch.')} cast to {dtype}"


def main() -> int:
    """Print one line per check and a verdict; return 0 when every check passes."""
    backend = active_backend()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"self-check: backend {backend.name!r} on {device}, against a float32 reference")
    results = run_checks(device)
    for r in results:
        verdict = "PASS" if r.passed else "FAIL"
        print(
            f"  {verdict}  {r.name:<32} {_dtype_text(r):<24} {r.path:<12} "
            f"max error {r.max_error:.2e} (tolerance {r.tolerance:.0e})"
        )
    failed = sum(not r.passed for r in results)
    print(
        f"self-check: {'PASS' if not failed else 'FAIL'} ({len(results) - failed}/{len(results)})"
    )
    return 1 if failed else 0
