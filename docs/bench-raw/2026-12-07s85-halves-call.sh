#!/usr/bin/env bash
# Session 85: candidate H (branch halves; .gpu/wH) against main (.gpu/wM, the kernels of 657e91e).
# H: the softcap-only instance issues S = Q K^T as two groups of 64 keys and runs the first
# half's tanh and exp2 (unmasked tiles) while the second half's products run. First H's softcap
# tests (its instance against float64), then alternating rounds of bench_variants.py --parts
# softcap-dims, last session 82's W check on H's wheels (the instance's kernel names and the
# three sanitizers over windowed calls it takes). Carry .gpu/wM and .gpu/wH.
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out; start=$SECONDS
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
bash tools/lab/wheel_venv.sh /tmp/ab-venv-H .gpu/wH >/dev/null || exit 1
timeout 150 /tmp/ab-venv-H/bin/python -m pytest -q -p no:cacheprovider -n 8 tests/gpu/test_variants_gpu.py \
  -k "softcap" > $out/h-tests.txt 2>&1
echo "tests rc $? at $((SECONDS - start)) s: $(tail -1 $out/h-tests.txt)"
grep -E "^FAILED|^E  " $out/h-tests.txt | head -8
OUT=$out/ab AB_VENVS=/tmp bash tools/lab/ab_wheels.sh ${ROUNDS:-3} M=.gpu/wM H=.gpu/wH -- \
  "bench_variants.py --parts softcap-dims" > $out/ab.log 2>&1
echo "ab done at $((SECONDS - start)) s"
tail -20 $out/ab/table.txt 2>/dev/null || tail -20 $out/ab.log
if [ -z "${NO_CHECK:-}" ]; then
  mkdir -p $out/hc && WHEELS=.gpu/wH OUT=$out/hc bash docs/bench-raw/2026-12-07s82-w-check-call.sh 2>&1 | grep -v warn | tail -9
fi
