#!/usr/bin/env bash
# Session 89's tall-decode candidate (2026-12-08s89-tall-decode-candidate.patch) before it can
# land: the GPU tests of multi-token steps and of the decode tiles, then compute-sanitizer on
# steps whose packed rows fill the tall tile (5 and 8 tokens at 32/8 heads: 20 and 32 rows),
# split (one sequence over long keys: the cluster merge and the combine kernel) and unsplit,
# causal and not, the profiler's kernel names printed (the tall instance must be among them).
# Run from a checkout of the patched tree (its tests); carry WHEELS (default .gpu/wD: its
# sm_90a wheels).
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out; start=$SECONDS
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
bash tools/lab/wheel_venv.sh /tmp/vD ${WHEELS:-.gpu/wD} >/dev/null || exit 1
timeout 200 /tmp/vD/bin/python -m pytest -q -p no:cacheprovider -n 8 tests/gpu/test_kernels.py \
  -k "multi_token or decode_tiles or design_note" > $out/d-tests.txt 2>&1
echo "tests rc $? at $((SECONDS - start)) s: $(tail -1 $out/d-tests.txt)"
grep -E "^FAILED|^E  " $out/d-tests.txt | head -8
cat > /tmp/dsan.py <<'PY'
import contextlib, os, torch, forge_flash as ff
from torch.profiler import profile, ProfilerActivity
torch.manual_seed(0)
names = set()
profiled = os.environ.get("NAMES") == "1"  # the profiler's CUPTI stays out of the sanitizer's runs
for d in (64, 128):
    for batch, sq, sk, causal in ((1, 8, 20000, True), (1, 5, 3001, False), (8, 8, 4100, True), (2, 6, 777, True)):
        q = torch.randn(batch, sq, 32, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(batch, sk, 8, d, device="cuda", dtype=torch.bfloat16); v = torch.randn_like(k)
        with profile(activities=[ProfilerActivity.CUDA]) if profiled else contextlib.nullcontext() as prof:
            ff.flash_attn_fwd(q, k, v, causal=causal)
            torch.cuda.synchronize()
        if profiled:
            names |= {e.name[:150] for e in prof.events() if "kernel" in e.name}
print("\n".join(sorted(names)) or "ran")
PY
NAMES=1 /tmp/vD/bin/python /tmp/dsan.py 2>&1 | tail -8
for t in memcheck racecheck synccheck; do
  timeout 150 compute-sanitizer --tool $t /tmp/vD/bin/python /tmp/dsan.py > $out/d-$t.txt 2>&1
  echo "$t rc $?: $(tail -1 $out/d-$t.txt)"
done
echo "done at $((SECONDS - start)) s"
