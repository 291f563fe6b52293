#!/usr/bin/env bash
# Session 82: the softcap-only instance's two candidates against main M: W (the instance at
# head_dim 64 and 96 too, and taking windows) and E (4 of every 8 of its exponentials on the FMA
# pipe). Carry .gpu/wM .gpu/wW .gpu/wE .gpu/run.
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out; start=$SECONDS
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
for b in W E; do
  bash tools/lab/wheel_venv.sh /tmp/ab-venv-$b .gpu/w$b >/dev/null || exit 1
  timeout ${TESTS_TIMEOUT:-90} /tmp/ab-venv-$b/bin/python -m pytest -q -x -p no:cacheprovider -n 6 \
    tests/gpu/test_variants_gpu.py -k "softcap or window" > $out/$b-tests.txt 2>&1
  echo "$b variant tests rc $? at $((SECONDS - start)) s: $(tail -1 $out/$b-tests.txt)"
  grep -E "^FAILED|^E  " $out/$b-tests.txt | head -6
done
OUT=$out/ab AB_VENVS=/tmp bash tools/lab/ab_wheels.sh ${ROUNDS:-2} M=.gpu/wM W=.gpu/wW E=.gpu/wE -- \
  "bench_variants.py --parts scores softcap-dims gemma" > $out/ab.log 2>&1
echo "ab done at $((SECONDS - start)) s"
cat $out/ab/table.txt 2>/dev/null | tail -40 || tail -20 $out/ab.log
