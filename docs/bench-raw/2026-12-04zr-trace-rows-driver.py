# DIAGNOSTIC driver for the trace candidate: one steady-state call per row with clock64 stamps
# per CTA, work tile and event; prints where a work tile's time goes and saves the raw stamps.
import os, sys, torch, numpy as np, forge_flash
from forge_flash.benchmark import prefill_shapes
out = os.environ["OUT"]
rows = sys.argv[1].split(",")
buf = torch.zeros(4096 * 32 * 16, dtype=torch.int64, device="cuda")
names = ["Qissue", "K0issue"] + [f"c{c}_{e}" for c in range(2) for e in ("Qwait", "K0wait", "turn", "S0", "lastPV", "epi")]
for spec in rows:
    d, s, causal = spec.split(":"); d, s, causal = int(d), int(s), causal == "c"
    shape = prefill_shapes([s], [d], ["bf16"])[0]
    size = (shape.batch, s, shape.heads, d)
    copies = [[torch.randn(size, device="cuda", dtype=torch.bfloat16) for _ in range(3)] for _ in range(4)]
    for i in range(6): forge_flash.flash_attn_fwd(*copies[i % 4], causal=causal)
    torch.cuda.synchronize()
    buf.zero_(); os.environ["FF_TRACE_PTR"] = str(buf.data_ptr())
    forge_flash.flash_attn_fwd(*copies[1], causal=causal)
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record(); forge_flash.flash_attn_fwd(*copies[2], causal=causal); e1.record()
    torch.cuda.synchronize(); del os.environ["FF_TRACE_PTR"]
    ms = e0.elapsed_time(e1)
    e0.record(); forge_flash.flash_attn_fwd(*copies[3], causal=causal); e1.record(); torch.cuda.synchronize()
    ms_plain = e0.elapsed_time(e1)
    t = buf.view(4096, 32, 16).cpu().numpy().astype(np.int64)
    np.save(f"{out}/trace-d{d}-s{s}-{'c' if causal else 'n'}.npy", t)
    ctas = [c for c in range(4096) if t[c, 0, 2] != 0]
    print(f"== d{d} s{s} {'causal' if causal else 'full'}: {len(ctas)} CTAs stamped, traced call {ms*1e3:.1f} us, untraced {ms_plain*1e3:.1f} us")
    # per work tile phases (cycles), consumer 0 and 1, over all CTAs and tiles j >= 1
    ph = {k: [] for k in ("Q wait after prev epi", "K0 wait after Q", "turn wait", "S0 after turn", "loop (S0 -> last PV)", "epilogue", "tile period", "Qissue before Qwait")}
    for c in ctas:
        for cn in range(2):
            b = 2 + cn * 6
            for j in range(1, 32):
                r, q = t[c, j], t[c, j - 1]
                if r[b] == 0 or q[b + 5] == 0: continue
                ph["Q wait after prev epi"].append(r[b] - q[b + 5])
                ph["K0 wait after Q"].append(r[b + 1] - r[b])
                ph["turn wait"].append(r[b + 2] - r[b + 1])
                ph["S0 after turn"].append(r[b + 3] - r[b + 2])
                ph["loop (S0 -> last PV)"].append(r[b + 4] - r[b + 3])
                ph["epilogue"].append(r[b + 5] - r[b + 4])
                ph["tile period"].append(r[b + 5] - q[b + 5])
                if r[0]: ph["Qissue before Qwait"].append(r[b] - r[0])
                if cn == 0 and r[14] and r[15]:
                    ph.setdefault("c0 epi -> body top (cta_work)", []).append(r[14] - q[b + 5])
                    ph.setdefault("c0 body top -> before Q wait", []).append(r[15] - r[14])
                    ph.setdefault("c0 Q wait itself", []).append(r[b] - r[15])
    for k, v in ph.items():
        if v: print(f"  {k:24s} median {np.median(v):8.0f}  mean {np.mean(v):8.0f}  p90 {np.percentile(v, 90):8.0f} cycles")
    # first tile of each CTA: launch -> Q
    f = [t[c, 0, 2] - t[c, 0, 0] for c in ctas if t[c, 0, 0]]
    if f: print(f"  first tile: Qissue->Qwait median {np.median(f):.0f} cycles")
