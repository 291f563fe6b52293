"""Where the packed twins' error comes from at head_dim 192 and 256 (session 65's probe).

The kPackedSeqs twins of the TMA-only instance failed two tolerance tests at head_dim 192 and 256
(non-causal) with the lazy running max and passed them without it. This asks whether the dense
TMA-only instance, which keeps the lazy max, has the same error on the same sequence: each
sequence of a varlen batch is run packed (`flash_attn_varlen_fwd`) and alone (`flash_attn_fwd`,
batch 1), and both are compared with float64 math and with PyTorch's SDPA on the same 16-bit
inputs (the tests' bar: at most 2x PyTorch's error). Per sequence it prints the largest error
of each, their ratio to PyTorch's, and where the packed call's worst element lies (query row,
its query block of 128 rows, the sequence's keys modulo the K/V tile).

    python tools/lab/lazy_max_probe.py [--head-dims 192,256] [--seeds 3]
"""

from __future__ import annotations

import argparse

import torch

import forge_flash

LENGTHS = [(1500, 1500), (1025, 3000), (2047, 1300), (700, 2049), (1111, 1111)]
SHORT = [(300, 301), (129, 500), (1000, 700), (64, 1000), (77, 77), (1, 130), (250, 1024)]


def reference(q, k, v):
    """Non-causal attention in float64, (seqlen_q, heads, head_dim) from one sequence."""
    q64, k64, v64 = (x.double().transpose(0, 1) for x in (q, k, v))
    s = q64 @ k64.transpose(1, 2) / q.shape[-1] ** 0.5
    return (s.softmax(-1) @ v64).transpose(0, 1)


def offsets(seq, device="cuda"):
    starts = [0, *torch.tensor(seq).cumsum(0).tolist()]
    return torch.tensor(starts, dtype=torch.int32, device=device)


def sdpa(q, k, v):
    """PyTorch's SDPA on the same 16-bit inputs, (seqlen_q, heads, head_dim)."""
    batched = (x.transpose(0, 1)[None] for x in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(*batched)
    return out[0].transpose(0, 1)


def one_batch(d, dtype, lengths, seed, tag):
    """Worst packed / PyTorch error ratio over one batch; a line per sequence."""
    torch.manual_seed(seed)
    sq, sk = [a for a, _ in lengths], [b for _, b in lengths]
    q = torch.randn(sum(sq), 8, d, device="cuda", dtype=dtype)
    k, v = (torch.randn(sum(sk), 8, d, device="cuda", dtype=dtype) for _ in range(2))
    cq, ck = offsets(sq), offsets(sk)
    packed = forge_flash.flash_attn_varlen_fwd(q, k, v, cq, ck, max(sq), max(sk))
    tile = 112 if d == 192 else 80  # the TMA-only instance's K/V tile
    worst = 0.0
    for i, (a, b) in enumerate(lengths):
        qs, ks = slice(int(cq[i]), int(cq[i + 1])), slice(int(ck[i]), int(ck[i + 1]))
        one = q[qs], k[ks], v[ks]
        ref = reference(*one)
        dense = forge_flash.flash_attn_fwd(*(x[None] for x in one))[0]
        err = (packed[qs].double() - ref).abs()
        e_p, e_d = err.max().item(), (dense.double() - ref).abs().max().item()
        e_t = (sdpa(*one).double() - ref).abs().max().item()
        row, head, col = (int(x) for x in torch.nonzero(err == err.max())[0])
        worst = max(worst, e_p / e_t)
        flag = " <-- past 2x" if e_p > 2 * e_t + 1e-5 else ""
        print(
            f"{tag} seed {seed} seq {a}x{b}: packed {e_p:.2e} ({e_p / e_t:.2f}x torch) "
            f"dense {e_d:.2e} ({e_d / e_t:.2f}x) torch {e_t:.2e}; worst at row {row} "
            f"(block {row // 128}) head {head} col {col}, keys mod tile {b % tile}{flag}"
        )
    return worst


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--head-dims", default="192,256")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    for d in map(int, args.head_dims.split(",")):
        for dtype in (torch.bfloat16, torch.float16):
            for name, lengths in (("plain", LENGTHS), ("short", SHORT)):
                tag = f"d{d} {str(dtype)[6:]} {name}"
                worst = max(one_batch(d, dtype, lengths, s, tag) for s in range(args.seeds))
                print(f"== {tag}: worst packed / torch {worst:.2f}")


if __name__ == "__main__":
    main()
