# Per-kernel GPU time of a call under torch's profiler (tail split diagnosis), one build.
import sys, torch, forge_flash
tag = sys.argv[1]
for spec in ("1x2048x28x128", "1x16384x16x128", "1x2048x16x256", "8x2048x16x128"):
    b, s, h, d = (int(x) for x in spec.split("x"))
    ins = [tuple(torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16) for _ in "qkv") for _ in range(3)]
    for i in range(6): forge_flash.flash_attn_fwd(*ins[i % 3])
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for i in range(30): forge_flash.flash_attn_fwd(*ins[i % 3])
        torch.cuda.synchronize()
    ev = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    ev.sort(key=lambda e: e.time_range.start)
    kinds = {}
    for e in ev:
        k = "sm90" if "fwd_kernel_sm90" in e.name else "combine" if "combine" in e.name else e.name[:30]
        kinds.setdefault(k, []).append(e.time_range.elapsed_us())
    # span of each call: from a sm90 kernel's start to the next sm90 kernel's start
    starts = [e.time_range.start for e in ev if "fwd_kernel_sm90" in e.name]
    ends = {}
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    gaps.sort()
    msg = "  ".join(f"{k} n={len(v)} med {sorted(v)[len(v)//2]:.1f}us" for k, v in kinds.items())
    print(f"{tag} {spec:16s} {msg}  call-to-call med {gaps[len(gaps)//2]:.1f}us", flush=True)
