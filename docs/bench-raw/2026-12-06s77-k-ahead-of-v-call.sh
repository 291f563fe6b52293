#!/usr/bin/env bash
# Session 77's candidates (carry .gpu/wM2 .gpu/wK .gpu/wK3 .gpu/run, with
# docs/bench-raw/2026-12-06s77-k-ahead-of-v-sanitize-case.py copied to .gpu/run/k_case.py):
# K = main with the producer issuing K[i + 1] before V[i] where K and V have barriers of their
# own (2-stage instances: head_dim 96 non-causal and causal TMA-only, 128 TMA-only and BandSinks,
# 192, 256); K3 = K with head_dim 128's TMA-only tiles as 3 stages of 128 keys (split barriers,
# K ahead) instead of 2 of 176. Two alternating rounds of prefill rows; then K's Hopper kernel
# tests and memcheck/synccheck on its instances (K3's only if it is the one that wins: its tiles
# change the names tests/gpu/test_varlen_tma_gpu.py pins).
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
start=$SECONDS
OUT=$out/ab AB_VENVS=/tmp timeout 160 bash tools/lab/ab_wheels.sh 2 M=.gpu/wM2 K=.gpu/wK K3=.gpu/wK3 -- \
  "prefill_rows_ab.py 128:16384,128:4096,96:8192,256:8192" > $out/ab-log.txt 2>&1
echo "ab done at $((SECONDS-start)) s"
cat $out/ab/table.txt 2>/dev/null || { tail -5 $out/ab-log.txt; tail -30 $out/ab/ab-*.txt; }
timeout 60 /tmp/ab-venv-K/bin/python -m pytest -q -p no:cacheprovider -n 8 tests/gpu/test_kernels.py \
  -k "hopper or design_note or uneven or varlen" > $out/k-tests.txt 2>&1
echo "tests done at $((SECONDS-start)) s"; tail -2 $out/k-tests.txt; grep -E "^FAILED" $out/k-tests.txt | head -8
for tool in memcheck synccheck; do
  timeout 30 compute-sanitizer --tool $tool /tmp/ab-venv-K/bin/python .gpu/run/k_case.py > $out/k-$tool.txt 2>&1
  echo "$tool rc $? at $((SECONDS-start)) s: $(grep -E "ERROR SUMMARY" $out/k-$tool.txt | tail -1)"
done
