#!/usr/bin/env bash
# Session 83, the first call (from a checkout of w-land: main + W; carry .fa4/s1 and .gpu/wW).
# W's GPU suite passed in session 82 (H100) on wheels of the same kernel code (the plugin wheels
# are byte-for-byte the same size, 7,206,072); what W lacked is its new test and the sanitizers on
# windowed calls its instance takes: session 82's W check (2026-12-07s82-w-check-call.sh) first.
# On an H200 then check_with_fa4.sh 1 (FA4's first chunk and the wheels stashed for the figures
# of record, call 2 = `PREFILL_PASSES=2 CALL_BUDGET=560 check_with_fa4.sh 2`; the whole suite and
# sanitizers on the H200). On an H100 nothing more: the next call is 2026-12-07s83-ab-call.sh.
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out/w; start=$SECONDS
OUT=$out/w bash docs/bench-raw/2026-12-07s82-w-check-call.sh
(cd $out && tar czf w.tgz w --remove-files)
if nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; then
  OUT=$out TESTS_TIMEOUT=${TESTS_TIMEOUT:-300} CALL_BUDGET=400 bash tools/lab/check_with_fa4.sh 1 .gpu/wW
fi
echo "call done at $((SECONDS - start)) s"
