#!/usr/bin/env bash
# Session 81: SC3 (a softcap-only TMA instance at head_dim 128: three consumers, 128-key tiles,
# P through shared memory) against main K. Carry .gpu/wK .gpu/wSC .gpu/run.
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out; start=$SECONDS
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
bash tools/lab/wheel_venv.sh /tmp/vK .gpu/wK >/dev/null && bash tools/lab/wheel_venv.sh /tmp/vSC .gpu/wSC >/dev/null || exit 1
timeout ${TESTS_TIMEOUT:-150} /tmp/vSC/bin/python -m pytest -q -x -p no:cacheprovider -n 4 tests/gpu/test_variants_gpu.py \
  -k softcap > $out/sc-tests.txt 2>&1
echo "SC softcap tests rc $? at $((SECONDS - start)) s: $(tail -1 $out/sc-tests.txt)"
grep -E "^FAILED|^E  " $out/sc-tests.txt | head -6
/tmp/vSC/bin/python - <<'PY' 2>&1 | tail -3
import torch, forge_flash
from torch.profiler import profile, ProfilerActivity
q = torch.randn(2, 8192, 16, 128, device="cuda", dtype=torch.bfloat16)
k, v = torch.randn_like(q), torch.randn_like(q)
forge_flash.flash_attn_fwd(q, k, v, softcap=50.0)
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    forge_flash.flash_attn_fwd(q, k, v, softcap=50.0)
    torch.cuda.synchronize()
print("SC kernel:", [e.name[:150] for e in prof.events() if "fwd_kernel" in e.name][:1])
PY
for r in 1 2 3; do
  for b in K SC; do
    timeout 80 /tmp/v$b/bin/python tools/lab/bench_variants.py $b --parts scores --json $out/$b-$r.json > $out/$b-$r.txt 2>&1
  done
  echo "round $r at $((SECONDS - start)) s"
  [ $((SECONDS - start)) -gt ${CALL_BUDGET:-330} ] && break
done
for f in $out/K-*.txt $out/SC-*.txt; do echo "== $(basename $f)"; grep -E "hd128" $f | grep -v FA4; done
