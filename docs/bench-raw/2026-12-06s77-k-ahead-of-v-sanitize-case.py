"""Calls of the 2-stage (split K/V barrier) Hopper instances for compute-sanitizer (session 77)."""
import os
os.environ.setdefault("FORGE_FLASH_BACKEND", "cuda")
import torch
import forge_flash

def run(d, sq, sk, causal, **kw):
    q = torch.randn(2, sq, 4, d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(2, sk, 2, d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn(2, sk, 2, d, device="cuda", dtype=torch.bfloat16)
    forge_flash.flash_attn_fwd(q, k, v, causal=causal, **kw)

for d in (96, 128, 192, 256):
    for causal in (False, True):
        run(d, 1300, 1300, causal)
run(128, 2100, 2100, True, window_size=(1024, 0))
torch.cuda.synchronize()
print("k cases done")
