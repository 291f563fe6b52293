#!/usr/bin/env bash
# Session 84: candidate T (branch turn-after-s; .gpu/wT) against main (.gpu/wW, the kernels of
# ec487c8 = c7d61c9). T: in every non-persistent Hopper instance a consumer passes the turn once
# its S = Q K^T has landed, not right after issuing it. First T's kernel tests (the Hopper
# instances, the variants, varlen and paged through TMA), then alternating rounds: softcap at
# 64/96/128 beside plain (both timed), the score-variant and window rows, and prefill rows.
# Carry .gpu/wW and .gpu/wT.
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out; start=$SECONDS
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
bash tools/lab/wheel_venv.sh /tmp/ab-venv-T .gpu/wT >/dev/null || exit 1
timeout ${TESTS_TIMEOUT:-200} /tmp/ab-venv-T/bin/python -m pytest -q -p no:cacheprovider -n 8 -x \
  tests/gpu/test_kernels.py tests/gpu/test_variants_gpu.py tests/gpu/test_varlen_tma_gpu.py \
  tests/gpu/test_paged_tma_gpu.py > $out/t-tests.txt 2>&1
echo "tests rc $? at $((SECONDS - start)) s: $(tail -1 $out/t-tests.txt)"
grep -E "^FAILED|^E  " $out/t-tests.txt | head -8
OUT=$out/ab AB_VENVS=/tmp bash tools/lab/ab_wheels.sh ${ROUNDS:-3} W=.gpu/wW T=.gpu/wT -- \
  "bench_variants.py --parts softcap-dims scores window" \
  "prefill_rows_ab.py 64:1024,64:8192,96:4096,128:2048,128:16384,256:4096" > $out/ab.log 2>&1
echo "ab done at $((SECONDS - start)) s"
tail -50 $out/ab/table.txt 2>/dev/null || tail -20 $out/ab.log
