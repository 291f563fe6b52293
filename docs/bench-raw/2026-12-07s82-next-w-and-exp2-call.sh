#!/usr/bin/env bash
# Session 82's two next items in one device call, from a checkout of the branch
# softcap-instance-64-96-windows: W's check (2026-12-07s82-w-check-call.sh), then W against the
# FMA-pipe exp2 at head_dim 64 and 96 (2026-12-07s82-softcap-fma-exp2-64-96-candidate.patch) in
# alternating rounds. Carry .gpu/wW (the branch's sm_90a wheels), .gpu/wE4 and .gpu/wE2 (the
# branch with the patch, FF_LAB_EIGHTHS_64 and FF_LAB_EIGHTHS_96 both 4, both 2), built by
#   git worktree add --detach /tmp/wtE softcap-instance-64-96-windows && cd /tmp/wtE &&
#   git apply <the patch> && sed -i 's/^#define FF_LAB_EIGHTHS_\(64\|96\) 0/#define FF_LAB_EIGHTHS_\1 4/' \
#     csrc/kernels/sm90/fwd_kernel_sm90.cuh && bash tools/lab/lab_wheels.sh .gpu/wE4 /tmp/wtE 90a-real
# (and 2 for .gpu/wE2). About 60 s for the check and 40 s a build a round.
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out; start=$SECONDS
OUT=$out bash docs/bench-raw/2026-12-07s82-w-check-call.sh
OUT=$out/ab AB_VENVS=/tmp bash tools/lab/ab_wheels.sh ${ROUNDS:-3} W=.gpu/wW E4=.gpu/wE4 E2=.gpu/wE2 -- \
  "bench_variants.py --parts softcap-dims" > $out/ab.log 2>&1
echo "ab done at $((SECONDS - start)) s"
tail -20 $out/ab/table.txt 2>/dev/null || tail -20 $out/ab.log
