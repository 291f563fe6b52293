#!/usr/bin/env bash
# Session 78, call A (carry .gpu/wM2 .gpu/wK .gpu/wK3 .gpu/wNW .gpu/wR .gpu/run): two alternating rounds
# of prefill rows. M = main; K = the producer issues K[i + 1] before V[i] (split barriers);
# K3 = K with head_dim 128's TMA-only tiles as 3 stages of 128 keys; NW = probe (wrong answers):
# the TMA-only plain launch's K/V loads after the first ring go out as usual, but their bytes
# complete a barrier nobody waits on, and the consumers' full barriers get plain arrivals: the
# same traffic without the wait. NW near session 77's N (no loads at all): the waits cost; NW near
# M: the traffic itself does. R = main whose plain non-causal calls (TMA-only plain launch) walk
# their K/V tiles from a start rotated by the query block, so that a head's CTAs, which run
# together, read different tiles at any moment (correct answers: the rows' error column checks).
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
start=$SECONDS
OUT=$out/ab AB_VENVS=/tmp timeout 360 bash tools/lab/ab_wheels.sh 2 M=.gpu/wM2 K=.gpu/wK K3=.gpu/wK3 NW=.gpu/wNW R=.gpu/wR -- \
  "prefill_rows_ab.py 128:16384,128:4096,96:8192,256:8192,64:16384" > $out/ab-log.txt 2>&1
echo "ab done at $((SECONDS-start)) s"
cat $out/ab/table.txt 2>/dev/null || { tail -5 $out/ab-log.txt; python3 tools/lab/ab_table.py $out/ab/ab-*.txt || tail -30 $out/ab/ab-*.txt; }
