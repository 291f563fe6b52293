"""Python-side cost of one decode-shaped forge-flash call, eager and under a CUDA graph.

    python examples/decode_overhead.py [--cache-len 256] [--json PATH]

Needs the kernels (a GPU of SM80+ and the forge-flash-cu13 plugin). The shape is one decode
step of a 32-head / 8-KV-head model of head_dim 128 (bfloat16) over a short cache. Each eager
row is the host time of one call, from call to return, started with the GPU idle (synchronised
before, outside the timing), median of many: the cost of the launch path alone. Back-to-back
calls would measure the GPU instead whenever its time per call exceeds the host's.

Eager rows, from the innermost layer out (each row includes the ones above it):

* binding, planning only: ``forge_flash_cu13._C.FwdCall`` called without the workspace a
  split-KV plan needs: the pybind11 call, the C API's checks and the plan, no launch (shown
  when the shape splits);
* binding: the same call with its workspace (pybind11, checks, plan and the launches);
* adapter: ``CudaBackend.run``, the general path (strides, pointers, workspace protocol,
  stream handle);
* public: ``batched_decode_attention`` / ``flash_attn_fwd`` / ``multi_head_attention``, a
  signature seen before (``forge_flash.call_cache``: no validation or planning, just the
  output allocation and the prepared launch), with the device-value checks off
  (``FORGE_FLASH_CHECK_DEVICE_VALUES=0``); and for batched decode also the first call of a
  signature (full validation), and with the checks on: the check reads ``cache_seqlens``
  back, which waits for the GPU.

Under a CUDA graph: 100 ``batched_decode_attention`` calls captured once; one replay's host
time and GPU time per call. No Python runs at replay, so the eager overhead is gone.
The target for eager overhead (public call, value checks off) is under 20 us.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import forge_flash as ff
from forge_flash import call_cache, discovery, validation
from forge_flash.call import AttentionTensors

TARGET_US = 20.0
BINDING = "binding (FwdCall, arguments ready)"
ADAPTER = "adapter (CudaBackend.run, general path)"
PUBLIC = "public batched_decode_attention"


def host_us(fn, calls: int = 1000) -> float:
    """Median host time of one call started on an idle GPU (after a warm-up)."""
    for _ in range(20):
        fn()
    samples = []
    for _ in range(calls):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    torch.cuda.synchronize()
    return statistics.median(samples) * 1e6


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

    call = validation.with_options(
        validation.check_decode(q, k_cache, v_cache, lengths), validation.Options(), q
    )
    tensors = AttentionTensors(q4, k_cache, v_cache, out4, seqused_k=lengths)

    def adapter_call() -> None:
        backend.run(call, tensors)

    # The binding call exactly as the adapter makes it for this shape: a FwdCall, called with
    # (pointers..., workspace, workspace_bytes, device, stream); the last call launches.
    recorded = []
    real = backend._fwd

    def recording(*static):
        call = real(*static)
        return lambda *a: recorded.append((call, a)) or call(*a)

    backend._fwd = recording
    adapter_call()
    backend._fwd = real
    bound, (*pointers, _, needed, device_index, stream) = recorded[-1]
    workspace = torch.empty(max(needed, 1), dtype=torch.uint8, device=dev)

    flat_q, flat_k = q.view(1, 1, heads * dim), k_cache.flatten(2)
    rows: dict[str, float] = {}
    checks = validation._CHECK_DEVICE_VALUES
    validation._CHECK_DEVICE_VALUES = False
    try:
        if needed:
            rows["binding, planning only (no workspace given: no launch)"] = host_us(
                lambda: bound(*pointers, 0, 0, device_index, stream)
            )
        rows[BINDING] = host_us(
            lambda: bound(*pointers, workspace.data_ptr(), needed, device_index, stream)
        )
        rows[ADAPTER] = host_us(adapter_call)
        rows[PUBLIC] = host_us(lambda: ff.batched_decode_attention(q, k_cache, v_cache, lengths))

        def first_call() -> None:
            call_cache.clear()
            ff.batched_decode_attention(q, k_cache, v_cache, lengths)

        rows["public batched_decode_attention, signature not seen before"] = host_us(first_call)
        rows["public flash_attn_fwd (seqlen_q 1)"] = host_us(
            lambda: ff.flash_attn_fwd(q4, k_cache, v_cache)
        )
        rows["public multi_head_attention (seqlen_q 1)"] = host_us(
            lambda: ff.multi_head_attention(flat_q, flat_k, flat_k, heads, kv_heads, dim)
        )
    finally:
        validation._CHECK_DEVICE_VALUES = True
    call_cache.clear()  # a prepared call decides once whether its value checks can run
    try:
        rows["public batched_decode_attention, value checks on"] = host_us(
            lambda: ff.batched_decode_attention(q, k_cache, v_cache, lengths), calls=300
        )
    finally:
        validation._CHECK_DEVICE_VALUES = False
        call_cache.clear()
    try:  # back-to-back eager calls, value checks off: the GPU's time once the host keeps up
        eager_gpu = gpu_us(lambda: ff.batched_decode_attention(q, k_cache, v_cache, lengths))
    finally:
        validation._CHECK_DEVICE_VALUES = checks
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
    rows["CUDA graph replay, host time per call"] = host_us(graph.replay, calls=50) / per_graph
    rows["CUDA graph replay, GPU time per call"] = gpu_us(graph.replay, calls=20) / per_graph
    rows["eager batched_decode_attention, GPU time per call"] = eager_gpu

    print(
        f"decode-shaped call: q (1, {heads}, {dim}) bf16, cache (1, {args.cache_len}, "
        f"{kv_heads}, {dim}); {torch.cuda.get_device_name(dev)}, torch {torch.__version__}"
    )
    for name, value in rows.items():
        print(f"{value:9.2f} us  {name}")
    public, binding = rows[PUBLIC], rows[BINDING]
    print(
        f"\npublic call above the binding {public - binding:.2f} us, binding {binding:.2f} us; "
        f"eager overhead {public:.2f} us: "
        f"{'meets' if public < TARGET_US else 'MISSES'} the {TARGET_US:.0f} us target"
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"cache_len": args.cache_len, "device": torch.cuda.get_device_name(dev),
                       "torch": torch.__version__, "us": rows}, handle, indent=2)  # fmt: skip


if __name__ == "__main__":
    main()
