"""Python-side cost of one decode-shaped forge-flash call, eager and under a CUDA graph.

    python examples/decode_overhead.py [--cache-len 256] [--json PATH]

Needs the kernels (a GPU of SM80+ and the forge-flash-cu13 plugin). The shape is one decode
step of a 32-head / 8-KV-head model of head_dim 128 (bfloat16) over a short cache, so the GPU
finishes each call before the host issues the next and host time is what is measured: the
mean wall time of back-to-back calls, nothing synchronised in the loop.

Eager rows, from the innermost layer out (each row includes the ones above it):

* binding: ``forge_flash_cu13._C.fwd`` with its arguments prepared (the pybind11 call and
  the launch);
* adapter: ``CudaBackend.fwd`` (strides, pointers, workspace protocol, stream handle);
* public: ``batched_decode_attention`` / ``flash_attn_fwd`` / ``multi_head_attention``
  (validation, scale, backend lookup, output allocation), with the device-value checks off
  (``FORGE_FLASH_CHECK_DEVICE_VALUES=0``) and, for batched decode, on: the check reads
  ``cache_seqlens`` back, which waits for the GPU.

Under a CUDA graph: 100 ``batched_decode_attention`` calls captured once; one replay's host
time and GPU time per call. No Python runs at replay, so the eager overhead is gone.
The target for eager overhead (public call, value checks off) is under 20 us.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import forge_flash as ff
from forge_flash import discovery, validation

TARGET_US = 20.0


def host_us(fn, calls: int = 2000) -> float:
    """Mean host wall time per call of ``calls`` back-to-back calls (after a warm-up)."""
    for _ in range(100):
        fn()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / calls * 1e6


def host_once_us(fn, repeats: int = 50) -> float:
    """Mean host time of one call started on an idle GPU (for calls that queue much GPU work,
    where back-to-back calls would measure the GPU instead)."""
    fn()
    total = 0.0
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        total += time.perf_counter() - start
    torch.cuda.synchronize()
    return total / repeats * 1e6


def gpu_us(fn, calls: int = 200) -> float:
    """GPU time per call, from CUDA events around ``calls`` calls."""
    fn()
    begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    begin.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return begin.elapsed_time(end) / calls * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-len", type=int, default=256)
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args()

    backend = ff.active_backend()
    if backend.name != "cuda":
        reason = discovery.backend_info().backends["cuda"].reason
        raise SystemExit(f"needs the kernel backend; it cannot run here: {reason}")
    dev, dtype, heads, kv_heads, dim = torch.device("cuda"), torch.bfloat16, 32, 8, 128
    q = torch.randn(1, heads, dim, device=dev, dtype=dtype)
    k_cache = torch.randn(1, args.cache_len, kv_heads, dim, device=dev, dtype=dtype)
    v_cache = torch.randn_like(k_cache)
    lengths = torch.full((1,), args.cache_len, dtype=torch.int32, device=dev)
    q4, out4 = q.unsqueeze(1), torch.empty_like(q).unsqueeze(1)
    scale = dim**-0.5

    def adapter_call() -> None:
        backend.fwd(q4, k_cache, v_cache, out4, None, softmax_scale=scale, causal=False,
                    seqused_k=lengths)  # fmt: skip

    # The binding call exactly as the adapter makes it for this shape; its arguments end with
    # (workspace, workspace_bytes, device, stream), and the last call is the launching one.
    recorded = []
    real = backend._fwd
    backend._fwd = lambda *a: recorded.append(a) or real(*a)
    adapter_call()
    backend._fwd = real
    *inputs, _, needed, device_index, stream = recorded[-1]
    workspace = torch.empty(max(needed, 1), dtype=torch.uint8, device=dev)
    binding_args = (*inputs, workspace.data_ptr(), needed, device_index, stream)

    flat_q, flat_k = q.view(1, 1, heads * dim), k_cache.flatten(2)
    rows: dict[str, float] = {}
    checks = validation._CHECK_DEVICE_VALUES
    validation._CHECK_DEVICE_VALUES = False
    try:
        rows["binding (_C.fwd, arguments ready)"] = host_us(lambda: real(*binding_args))
        rows["adapter (CudaBackend.fwd)"] = host_us(adapter_call)
        rows["public batched_decode_attention"] = host_us(
            lambda: ff.batched_decode_attention(q, k_cache, v_cache, lengths)
        )
        rows["public flash_attn_fwd (seqlen_q 1)"] = host_us(
            lambda: ff.flash_attn_fwd(q4, k_cache, v_cache)
        )
        rows["public multi_head_attention (seqlen_q 1)"] = host_us(
            lambda: ff.multi_head_attention(flat_q, flat_k, flat_k, heads, kv_heads, dim)
        )
    finally:
        validation._CHECK_DEVICE_VALUES = True
    try:
        rows["public batched_decode_attention, value checks on"] = host_us(
            lambda: ff.batched_decode_attention(q, k_cache, v_cache, lengths), calls=500
        )
    finally:
        validation._CHECK_DEVICE_VALUES = checks

    eager_gpu = gpu_us(lambda: ff.batched_decode_attention(q, k_cache, v_cache, lengths))
    per_graph = 100
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        ff.batched_decode_attention(q, k_cache, v_cache, lengths)  # warm-up before capture
    torch.cuda.current_stream().wait_stream(side)
    with torch.cuda.graph(graph):
        for _ in range(per_graph):
            ff.batched_decode_attention(q, k_cache, v_cache, lengths)
    rows["CUDA graph replay, host time per call"] = host_once_us(graph.replay) / per_graph
    rows["CUDA graph replay, GPU time per call"] = gpu_us(graph.replay, calls=20) / per_graph
    rows["eager batched_decode_attention, GPU time per call"] = eager_gpu

    print(
        f"decode-shaped call: q (1, {heads}, {dim}) bf16, cache (1, {args.cache_len}, "
        f"{kv_heads}, {dim}); {torch.cuda.get_device_name(dev)}, torch {torch.__version__}"
    )
    for name, value in rows.items():
        print(f"{value:9.2f} us  {name}")
    public = rows["public batched_decode_attention"]
    adapter = rows["adapter (CudaBackend.fwd)"]
    binding = rows["binding (_C.fwd, arguments ready)"]
    print(
        f"\nvalidation + dispatch {public - adapter:.2f} us, adapter {adapter - binding:.2f} us, "
        f"binding {binding:.2f} us; eager overhead {public:.2f} us: "
        f"{'meets' if public < TARGET_US else 'MISSES'} the {TARGET_US:.0f} us target"
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"cache_len": args.cache_len, "device": torch.cuda.get_device_name(dev),
                       "torch": torch.__version__, "us": rows}, handle, indent=2)  # fmt: skip


if __name__ == "__main__":
    main()
