"""Host-side cost of one decode-shaped call, piece by piece (run on the GPU machine).

python tools/host_overhead.py
"""

from __future__ import annotations

import time

import torch

import forge_flash
from forge_flash.discovery import active_backend
from forge_flash.validation import check_fwd, resolve_scale


def per_call_us(fn, n=2000):
    for _ in range(50):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return (t1 - t0) / n * 1e6


def main():
    q = torch.randn(1, 1, 32, 128, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(1, 1024, 8, 128, device="cuda", dtype=torch.bfloat16)  # tiny GPU work
    v = torch.randn_like(k)
    out = torch.empty_like(q)
    backend = active_backend()
    binding = backend.binding
    strides = (4096, 4096, 128, 1048576, 1024, 128, 1048576, 1024, 128, 4096, 4096, 128)
    stream = torch.cuda.current_stream().cuda_stream
    args = (
        q.data_ptr(),
        k.data_ptr(),
        v.data_ptr(),
        out.data_ptr(),
        0,
        0,
        strides,
        1,
        1,
        1024,
        32,
        8,
        128,
        0.088,
        False,
        1,
    )
    need = binding.fwd(*args, 0, 0, 0, stream)
    ws = torch.empty(max(need, 1), dtype=torch.uint8, device="cuda")
    rows = {
        "empty kernel-free torch op (torch.empty 16 B)": lambda: torch.empty(16, device="cuda"),
        "binding fwd, workspace given (1 or 2 launches)": lambda: binding.fwd(
            *args, ws.data_ptr(), need, 0, stream
        ),
        "check_fwd + resolve_scale": lambda: (
            check_fwd(q, k, v, None),
            resolve_scale("s", None, 128),
        ),
        "backend.fwd (adapter + binding)": lambda: backend.fwd(
            q, k, v, out, None, softmax_scale=0.088, causal=False
        ),
        "forge_flash.flash_attn_fwd": lambda: forge_flash.flash_attn_fwd(q, k, v),
        "torch SDPA (default backend)": lambda: torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), enable_gqa=True
        ),
    }
    print(f"split-KV workspace for this shape: {need} bytes")
    for name, fn in rows.items():
        print(f"{per_call_us(fn):8.1f} us  {name}")


if __name__ == "__main__":
    main()
