#!/usr/bin/env bash
# Session 79, call B (carry .gpu/wM2 .gpu/wK .gpu/run): K (K[i+1] issued before V[i]) against M
# over three alternating rounds: the session's A rows again plus short rows, then the band rows.
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
start=$SECONDS
OUT=$out/ab AB_VENVS=/tmp timeout 480 bash tools/lab/ab_wheels.sh 3 M=.gpu/wM2 K=.gpu/wK -- \
  "prefill_rows_ab.py 128:16384,128:8192,128:4096,128:2048,128:1024,64:8192,64:2048,96:4096,256:4096,256:8192" \
  "band_rows.py --rounds 3" > $out/ab-log.txt 2>&1
echo "ab done at $((SECONDS-start)) s"
cat $out/ab/table.txt 2>/dev/null || { tail -5 $out/ab-log.txt; python3 tools/lab/ab_table.py $out/ab/ab-*.txt || tail -30 $out/ab/ab-*.txt; }
