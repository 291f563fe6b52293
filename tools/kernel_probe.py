"""Kernel developer's probe: drives forge_flash_cu13._C directly (no dispatch layer), checks
a few shapes against float64 and times prefill/decode beside torch SDPA's flash and cuDNN
backends. For quick device iterations; the user-facing benchmark is `python -m forge_flash bench`.

    python tools/kernel_probe.py [--check] [--bench] [--sanitize]
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from forge_flash_cu13 import _C


def ff_attention(q, k, v, causal, lse=None, seqused_k=None):
    out = torch.empty_like(q)
    strides = [s for t in (q, k, v, out) for s in t.stride()[:3]]
    b, sq, h, d = q.shape
    args = [q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(),
            0 if lse is None else lse.data_ptr(), 0 if seqused_k is None else seqused_k.data_ptr(),
            strides, b, sq, k.shape[1], h, k.shape[2], d, 1 / math.sqrt(d), causal,
            0 if q.dtype == torch.float16 else 1]
    dev, stream = q.device.index, torch.cuda.current_stream().cuda_stream
    need = _C.fwd(*args, 0, 0, dev, stream)
    if need:
        ws = torch.empty(need, dtype=torch.uint8, device=q.device)
        _C.fwd(*args, ws.data_ptr(), need, dev, stream)
    return out


def reference(q, k, v, causal):
    b, sq, h, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    qd, kd, vd = (x.double().transpose(1, 2) for x in (q, k, v))
    kd, vd = kd.repeat_interleave(h // hk, 1), vd.repeat_interleave(h // hk, 1)
    s = qd @ kd.transpose(-1, -2) / math.sqrt(d)
    if causal:
        i = torch.arange(sq, device=q.device)[:, None]
        j = torch.arange(sk, device=q.device)[None, :]
        s = s.masked_fill(j > i + sk - sq, float("-inf"))
    p = torch.softmax(s, -1).nan_to_num(0.0)
    return (p @ vd).transpose(1, 2)


def sdpa(q, k, v, causal):
    h, hk = q.shape[2], k.shape[2]
    return F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal,
        enable_gqa=h != hk).transpose(1, 2)


def check():
    cases = [  # b, sq, sk, h, hk, d, causal, dtype
        (2, 128, 128, 8, 8, 64, False, torch.float16), (2, 128, 128, 8, 8, 64, True, torch.bfloat16),
        (2, 113, 1023, 32, 8, 128, True, torch.bfloat16), (2, 1023, 113, 32, 8, 128, True, torch.float16),
        (1, 1, 4096, 32, 8, 128, False, torch.bfloat16), (3, 1, 70000, 32, 8, 128, False, torch.float16),
        (2, 2048, 2048, 16, 16, 128, True, torch.bfloat16), (2, 77, 300, 8, 2, 40, True, torch.float16),
        (2, 77, 300, 8, 2, 256, True, torch.bfloat16), (2, 77, 300, 8, 2, 96, False, torch.bfloat16),
        (2, 77, 300, 8, 2, 160, True, torch.float16), (2, 300, 300, 8, 1, 32, True, torch.bfloat16),
        (2, 5, 5, 4, 4, 8, True, torch.float16), (1, 16, 9000, 32, 2, 224, False, torch.bfloat16),
    ]
    worst = 0.0
    for b, sq, sk, h, hk, d, causal, dt in cases:
        q = torch.randn(b, sq, h, d, device="cuda", dtype=dt)
        k = torch.randn(b, sk, hk, d, device="cuda", dtype=dt)
        v = torch.randn(b, sk, hk, d, device="cuda", dtype=dt)
        got = ff_attention(q, k, v, causal)
        torch.cuda.synchronize()
        ref = reference(q, k, v, causal)
        ours = (got.double() - ref).abs().max().item()
        theirs = (sdpa(q, k, v, causal and sq == sk).double() - ref).abs().max().item() if (not causal or sq == sk) else float("nan")
        ok = ours <= 1e-2 and not math.isnan(ours)
        worst = max(worst, ours)
        print(f"check b={b} sq={sq} sk={sk} h={h}/{hk} d={d} causal={causal} {str(dt)[6:]}: "
              f"err {ours:.2e} (sdpa {theirs:.2e}) {'OK' if ok else 'FAIL'}")
    print(f"check worst error {worst:.3e}")


def time_ms(fn, iters=30, graph=False):
    """Median GPU time of one call. graph=True replays a CUDA graph of 10 calls, so that
    small (decode) kernels are timed without the host's launch overhead."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    if graph:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(10):
                fn()
        return time_ms(g.replay, iters) / 10
    times = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def bench(dtypes, hdims):
    rows = []
    for dt in dtypes:
        for d in hdims:
            h = 2048 // d
            for sq in (1024, 4096, 8192, 16384):
                b = 16384 // sq
                for causal in (False, True):
                    q, k, v = (torch.randn(b, sq, h, d, device="cuda", dtype=dt) for _ in range(3))
                    flops = 4 * b * h * sq * sq * d / (2 if causal else 1)
                    r = {"kind": "prefill", "dtype": str(dt)[6:], "d": d, "sq": sq, "causal": causal}
                    r["ours"] = flops / time_ms(lambda: ff_attention(q, k, v, causal)) / 1e9
                    for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
                        try:
                            with sdpa_kernel(be):
                                r[name] = flops / time_ms(lambda: sdpa(q, k, v, causal)) / 1e9
                        except RuntimeError:
                            r[name] = float("nan")
                    rows.append(r)
                    print(f"prefill {r['dtype']} d={d} sq={sq} causal={causal}: ours {r['ours']:.0f} "
                          f"flash {r['flash']:.0f} cudnn {r['cudnn']:.0f} TFLOP/s", flush=True)
    for sk in (4096, 16384, 32768, 131072):
        q = torch.randn(1, 1, 32, 128, device="cuda", dtype=torch.bfloat16)
        k, v = (torch.randn(1, sk, 8, 128, device="cuda", dtype=torch.bfloat16) for _ in range(2))
        r = {"kind": "decode", "sk": sk}
        r["ours"] = time_ms(lambda: ff_attention(q, k, v, False), 50, graph=True) * 1e3
        r["ours_eager"] = time_ms(lambda: ff_attention(q, k, v, False), 50) * 1e3
        for name, be in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)):
            try:
                with sdpa_kernel(be):
                    r[name] = time_ms(lambda: sdpa(q, k, v, False), 50, graph=True) * 1e3
            except RuntimeError:
                r[name] = float("nan")
        gbs = 2 * sk * 8 * 128 * 2 / (r["ours"] * 1e-6) / 1e9
        print(f"decode sk={sk}: ours {r['ours']:.1f} us ({gbs:.0f} GB/s; eager {r['ours_eager']:.1f}) flash {r['flash']:.1f} us "
              f"cudnn {r['cudnn']:.1f} us", flush=True)
        rows.append(r)
    print("\n| kind | shape | ours | flash | cudnn | ours/flash | ours/cudnn |")
    for r in rows:
        if r["kind"] == "prefill":
            shape = f"{r['dtype']} d{r['d']} s{r['sq']} {'causal' if r['causal'] else 'full'}"
            print(f"| prefill TFLOP/s | {shape} | {r['ours']:.0f} | {r['flash']:.0f} | {r['cudnn']:.0f} | "
                  f"{r['ours'] / r['flash']:.2f} | {r['ours'] / r['cudnn']:.2f} |")
        else:
            print(f"| decode us | sk{r['sk']} | {r['ours']:.1f} | {r['flash']:.1f} | {r['cudnn']:.1f} | "
                  f"{r['flash'] / r['ours']:.2f}x | {r['cudnn'] / r['ours']:.2f}x |")


def sanitize():
    """A reduced matrix for compute-sanitizer: every code path, small sizes."""
    for (b, sq, sk, h, hk, d, causal) in [(2, 70, 130, 4, 2, 64, True), (1, 1, 3000, 8, 2, 128, False),
                                          (2, 33, 17, 2, 2, 40, True), (1, 20, 200, 4, 4, 256, True)]:
        q = torch.randn(b, sq, h, d, device="cuda", dtype=torch.float16)
        k = torch.randn(b, sk, hk, d, device="cuda", dtype=torch.float16)
        v = torch.randn(b, sk, hk, d, device="cuda", dtype=torch.float16)
        lse = torch.empty(b, h, sq, device="cuda")
        ff_attention(q, k, v, causal, lse=lse)
        lens = torch.tensor([min(sk, 5)] * b, dtype=torch.int32, device="cuda")
        ff_attention(q, k, v, causal, seqused_k=lens)
    torch.cuda.synchronize()
    print("sanitize run done")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--sanitize", action="store_true")
    ap.add_argument("--hdims", default="64,128")
    ap.add_argument("--dtypes", default="bfloat16")
    a = ap.parse_args()
    if a.check:
        check()
    if a.sanitize:
        sanitize()
    if a.bench:
        bench([getattr(torch, x) for x in a.dtypes.split(",")], [int(x) for x in a.hdims.split(",") if x])
