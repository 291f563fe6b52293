#!/usr/bin/env bash
# Session 83's Nsight Compute call (carry .gpu/wW): each pipe's share of its peak in issue 14's
# score-variant rows (head_dim 128, 8k tokens, batch 2, 16 heads, bf16: plain, softcap 50, ALiBi,
# sinks; tools/lab/profile_rows.py --variants, non-causal then causal), as the raw page's CSV.
bash tools/lab/wheel_venv.sh /tmp/vW .gpu/wW >/dev/null 2>&1; P=/tmp/vW/bin/python
for c in "" "--causal"; do
  timeout 200 ncu --clock-control none --profile-from-start off --section SpeedOfLight \
    --section ComputeWorkloadAnalysis --section WarpStateStats --section InstructionStats \
    --page raw --csv $P tools/lab/profile_rows.py --variants $c > $OUT/ncu-raw$c.csv 2> $OUT/ncu-err$c.txt
done
