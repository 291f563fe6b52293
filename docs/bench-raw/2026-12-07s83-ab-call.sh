#!/usr/bin/env bash
# Session 83: W (main + W, branch w-land; .gpu/wW) against three candidates for the softcap-only
# instance at head_dim 64 and 96, in alternating rounds (carry .gpu/wW, .gpu/wE4, .gpu/wE2,
# .gpu/wS4, each sm_90a wheels built with tools/lab/lab_wheels.sh from a worktree of w-land):
#   E4, E2: 4 or 2 of every 8 exponentials on the FMA pipe at head_dim 64 and 96
#           (2026-12-07s82-softcap-fma-exp2-64-96-candidate.patch, then FF_LAB_EIGHTHS_64/_96 set);
#   S4:     at head_dim 64, P in registers and 4 K/V stages instead of P through shared memory
#           and 2 stages (tile_config.cuh: kPFromSmem = ... || (kSoftcap3 && kHeadDim > 64)).
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out; start=$SECONDS
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
OUT=$out/ab AB_VENVS=/tmp bash tools/lab/ab_wheels.sh ${ROUNDS:-2} W=.gpu/wW E4=.gpu/wE4 E2=.gpu/wE2 S4=.gpu/wS4 -- \
  "bench_variants.py --parts softcap-dims" > $out/ab.log 2>&1
echo "ab done at $((SECONDS - start)) s"
tail -20 $out/ab/table.txt 2>/dev/null || tail -20 $out/ab.log
