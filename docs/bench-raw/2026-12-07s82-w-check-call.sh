#!/usr/bin/env bash
# Session 82's W (branch softcap-instance-64-96-windows) before it lands: the tests that run its
# instance at head_dim 64, 96 and 128 with and without windows (they assert it ran), then
# compute-sanitizer on windowed calls long enough for it (a query block sees more than 1,024 keys,
# so not the persistent kernel), the profiler's kernel name printed. Run from a checkout of the
# branch; carry WHEELS (default .gpu/wW: the branch's sm_90a wheels).
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out; start=$SECONDS
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
bash tools/lab/wheel_venv.sh /tmp/vW ${WHEELS:-.gpu/wW} >/dev/null || exit 1
timeout 200 /tmp/vW/bin/python -m pytest -q -p no:cacheprovider -n 8 tests/gpu/test_variants_gpu.py \
  -k "softcap_alone or softcap_only" > $out/w-tests.txt 2>&1
echo "tests rc $? at $((SECONDS - start)) s: $(tail -1 $out/w-tests.txt)"
grep -E "^FAILED|^E  " $out/w-tests.txt | head -8
cat > /tmp/wsan.py <<'PY'
import contextlib, os, torch, forge_flash as ff
from torch.profiler import profile, ProfilerActivity
torch.manual_seed(0)
names = set()
profiled = os.environ.get("NAMES") == "1"  # the profiler's CUPTI stays out of the sanitizer's runs
for d in (64, 96, 128):
    for sq, sk, causal, win in ((1500, 2601, False, (1200, 400)), (2345, 2345, True, (1500, 0))):
        q = torch.randn(2, sq, 16, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(2, sk, 4, d, device="cuda", dtype=torch.bfloat16); v = torch.randn_like(k)
        with profile(activities=[ProfilerActivity.CUDA]) if profiled else contextlib.nullcontext() as prof:
            ff.flash_attn_fwd(q, k, v, causal=causal, softcap=30.0, window_size=win)
            torch.cuda.synchronize()
        if profiled:
            names |= {e.name[:150] for e in prof.events() if "fwd_kernel" in e.name}
print("\n".join(sorted(names)) or "ran")
PY
NAMES=1 /tmp/vW/bin/python /tmp/wsan.py 2>&1 | tail -4
for t in memcheck racecheck synccheck; do
  timeout 150 compute-sanitizer --tool $t /tmp/vW/bin/python /tmp/wsan.py > $out/w-$t.txt 2>&1
  echo "$t rc $?: $(tail -1 $out/w-$t.txt)"
done
echo "done at $((SECONDS - start)) s"
