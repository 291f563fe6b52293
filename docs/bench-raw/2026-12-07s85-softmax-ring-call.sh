#!/usr/bin/env bash
# Session 85: candidate SR (branch softmax-ring; .gpu/wR) against main (.gpu/wM, the kernels of 657e91e).
# SR: the softcap-only instance's consumers take their softmaxes (tanh, exp2, P's stores) in
# turns, a second ring of named barriers, and pass the products' turn right after issuing. First
# SR's softcap tests (its instance against float64; stopped after 90 s: a ring that hangs ends
# the call there), then alternating rounds of bench_variants.py --parts softcap-dims, last
# session 82's W check on SR's wheels (the instance's kernel names and the
# three sanitizers over windowed calls it takes). Carry .gpu/wM and .gpu/wR.
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out; start=$SECONDS
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
bash tools/lab/wheel_venv.sh /tmp/ab-venv-R .gpu/wR >/dev/null || exit 1
timeout 90 /tmp/ab-venv-R/bin/python -m pytest -q -p no:cacheprovider -n 8 tests/gpu/test_variants_gpu.py \
  -k "softcap" > $out/r-tests.txt 2>&1
echo "tests rc $? at $((SECONDS - start)) s: $(tail -1 $out/r-tests.txt)"
grep -E "^FAILED|^E  " $out/r-tests.txt | head -8
grep -q " passed" $out/r-tests.txt && ! grep -q -E " failed|^FAILED" $out/r-tests.txt || exit 1
OUT=$out/ab AB_VENVS=/tmp bash tools/lab/ab_wheels.sh ${ROUNDS:-3} M=.gpu/wM R=.gpu/wR -- \
  "bench_variants.py --parts softcap-dims" > $out/ab.log 2>&1
echo "ab done at $((SECONDS - start)) s"
tail -20 $out/ab/table.txt 2>/dev/null || tail -20 $out/ab.log
if [ -z "${NO_CHECK:-}" ]; then
  mkdir -p $out/rc && WHEELS=.gpu/wR OUT=$out/rc bash docs/bench-raw/2026-12-07s82-w-check-call.sh 2>&1 | grep -v warn | tail -9
fi
