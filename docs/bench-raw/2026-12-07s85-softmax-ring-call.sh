#!/usr/bin/env bash
# Session 85 (for the next GPU session): candidates SR (branch softmax-ring, .gpu/wR) and SRF
# (branch softmax-ring-fence, .gpu/wF) against main (.gpu/wM, the kernels of 657e91e).
# SR: the softcap-only instance's consumers take their softmaxes (tanh, exp2, P's stores) in
# turns, a second ring of named barriers, and pass the products' turn right after issuing.
# SRF: SR with P's proxy fence after the ring's arrival, outside the turn.
# For each candidate (CANDIDATES, default "R F"): its softcap tests (its instance against
# float64; stopped after 90 s: a ring that hangs ends the call there). Then alternating rounds
# of bench_variants.py --parts softcap-dims over main and the candidates, last session 82's W
# check on each candidate's wheels (the instance's kernel names and the three sanitizers over
# windowed calls it takes; NO_CHECK=1 skips it). Carry .gpu/wM and each candidate's wheels.
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out; start=$SECONDS
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
builds=(M=.gpu/wM)
for c in ${CANDIDATES:-R F}; do
  bash tools/lab/wheel_venv.sh /tmp/ab-venv-$c .gpu/w$c >/dev/null || exit 1
  timeout 90 /tmp/ab-venv-$c/bin/python -m pytest -q -p no:cacheprovider -n 8 tests/gpu/test_variants_gpu.py \
    -k "softcap" > $out/$c-tests.txt 2>&1
  echo "$c tests rc $? at $((SECONDS - start)) s: $(tail -1 $out/$c-tests.txt)"
  grep -E "^FAILED|^E  " $out/$c-tests.txt | head -8
  grep -q " passed" $out/$c-tests.txt && ! grep -q -E " failed|^FAILED" $out/$c-tests.txt && builds+=($c=.gpu/w$c)
done
[ ${#builds[@]} -gt 1 ] || exit 1
OUT=$out/ab AB_VENVS=/tmp bash tools/lab/ab_wheels.sh ${ROUNDS:-3} "${builds[@]}" -- \
  "bench_variants.py --parts softcap-dims" > $out/ab.log 2>&1
echo "ab done at $((SECONDS - start)) s"
tail -20 $out/ab/table.txt 2>/dev/null || tail -20 $out/ab.log
if [ -z "${NO_CHECK:-}" ]; then
  for b in "${builds[@]:1}"; do
    c=${b%%=*}
    mkdir -p $out/$c-check && WHEELS=.gpu/w$c OUT=$out/$c-check bash docs/bench-raw/2026-12-07s82-w-check-call.sh 2>&1 |
      grep -v warn | tail -9
  done
fi
echo "done at $((SECONDS - start)) s"
