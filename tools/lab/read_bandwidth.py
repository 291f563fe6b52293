"""The GPU's read bandwidth for a decode-sized stream: the ceiling a memory-bound decode step
can reach, measured the way the decode benchmarks time (GPU time of CUDA-graph replays over
copies rotated out of L2).

    python tools/lab/read_bandwidth.py [--mbytes 537] [--copies 4]

Reads `--mbytes` of bf16 (default: K and V of one 128k-key sequence, 8 KV heads of 128, the
anchor decode row) with a Triton kernel that streams its share of the buffer and writes one sum
per program, in a few block shapes, and with torch.sum; prints each one's time and TB/s (bytes
read once). Triton comes with torch's CUDA wheels; without it only torch.sum runs.

Measured on the H200 (2026-12-02/03, docs/bench-history/2026-12-02.md; two calls): 4.13-4.53
TB/s for the Triton reads by block shape (the best shape 4.46 and 4.53), 4.05-4.11 for
torch.sum, against the 4.8 TB/s of the datasheet.
"""

from __future__ import annotations

import argparse

import torch

from forge_flash.benchmark import time_graph

# (elements per block, blocks per program, warps): programs that stream 64-256 KB each.
TRITON_SHAPES = ((4096, 8, 8), (8192, 4, 16), (4096, 32, 8), (2048, 16, 4), (8192, 8, 8))


def triton_readers(xs: list[torch.Tensor]) -> dict:
    """A timed call per Triton block shape: program i sums its BLOCK * ITERS elements."""
    import triton
    import triton.language as tl

    @triton.jit
    def read_sum(x_ptr, out_ptr, n, BLOCK: tl.constexpr, ITERS: tl.constexpr):
        base = tl.program_id(0) * BLOCK * ITERS
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for i in range(ITERS):
            offs = base + i * BLOCK + tl.arange(0, BLOCK)
            acc += tl.load(x_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
        tl.store(out_ptr + tl.program_id(0), tl.sum(acc))

    n = xs[0].numel()
    calls = {}
    for block, iters, warps in TRITON_SHAPES:
        grid = triton.cdiv(n, block * iters)
        out = torch.empty(grid, device=xs[0].device, dtype=torch.float32)

        def call(i, block=block, iters=iters, warps=warps, grid=grid, out=out):
            read_sum[(grid,)](xs[i % len(xs)], out, n, BLOCK=block, ITERS=iters, num_warps=warps)

        calls[f"triton block {block} x {iters}, {warps} warps"] = call
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mbytes", type=float, default=2 * 131072 * 8 * 128 * 2 / 1e6)
    parser.add_argument("--copies", type=int, default=4, help="buffers rotated (L2 holds 60 MB)")
    args = parser.parse_args()
    device = torch.device("cuda")
    nbytes = int(args.mbytes * 1e6) // 2 * 2
    xs = [torch.randn(nbytes // 2, device=device, dtype=torch.bfloat16) for _ in range(args.copies)]
    calls = {}
    try:
        calls.update(triton_readers(xs))
    except ImportError as exc:
        print(f"triton: {exc}: torch.sum only")
    calls["torch.sum"] = lambda i: xs[i % len(xs)].sum(dtype=torch.float32)
    print(f"{torch.cuda.get_device_name(device)}, {nbytes / 1e6:.1f} MB read per call")
    for name, call in calls.items():
        seconds = min(time_graph(call, device, copies=args.copies) for _ in range(3))
        rate = nbytes / seconds / 1e12
        print(f"{name:34s} {seconds * 1e6:8.1f} us  {rate:5.3f} TB/s", flush=True)


if __name__ == "__main__":
    main()
