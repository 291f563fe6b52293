#!/usr/bin/env bash
# Session 83: candidate OVS (branch softcap-softmax-before-pv-wait; .gpu/wO) against W (main
# ec487c8; .gpu/wW): the softcap-only instance's whole softmax before the wait for the consumer's
# own P V. Its softcap tests first (the instance's calls against float64), then alternating
# rounds of bench_variants.py --parts softcap-dims, last session 82's W check on OVS's wheels (the
# instance's kernel names and the three sanitizers over windowed calls it takes). Carry .gpu/wW and .gpu/wO.
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out; start=$SECONDS
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
bash tools/lab/wheel_venv.sh /tmp/ab-venv-O .gpu/wO >/dev/null || exit 1
timeout 150 /tmp/ab-venv-O/bin/python -m pytest -q -p no:cacheprovider -n 8 tests/gpu/test_variants_gpu.py \
  -k "softcap" > $out/o-tests.txt 2>&1
echo "tests rc $? at $((SECONDS - start)) s: $(tail -1 $out/o-tests.txt)"
grep -E "^FAILED|^E  " $out/o-tests.txt | head -8
OUT=$out/ab AB_VENVS=/tmp bash tools/lab/ab_wheels.sh ${ROUNDS:-3} W=.gpu/wW O=.gpu/wO -- \
  "bench_variants.py --parts softcap-dims" > $out/ab.log 2>&1
echo "ab done at $((SECONDS - start)) s"
tail -20 $out/ab/table.txt 2>/dev/null || tail -20 $out/ab.log
if [ -z "${NO_CHECK:-}" ]; then
  mkdir -p $out/oc && WHEELS=.gpu/wO OUT=$out/oc bash docs/bench-raw/2026-12-07s82-w-check-call.sh 2>&1 | grep -v warn | tail -9
fi
