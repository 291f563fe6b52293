#!/usr/bin/env bash
# check_with_fa4.sh 1 WHEEL_DIR | 2: a kernel build's whole check beside FA4 in two device calls,
# back to back on one machine (it goes back 30 s after a call ends). FA4's wheels are too large
# for one call beside the tree (tools/lab/fa4_chunks.sh cuts them in two: .fa4/s1, .fa4/s2).
#   call 1, carrying .fa4/s1 and WHEEL_DIR: stash FA4's first chunk and the wheels (STASH),
#     then the whole GPU suite with the sanitizers (gpu_session.sh tests; stopped at
#     TESTS_TIMEOUT, default 340 s: about 190 s on the H200; on an H100 250 s stopped it inside
#     racecheck, session 69); with SWEEP=1 then one round of
#     tools/lab/paged_fill_sweep.sh while the call has time left (CALL_BUDGET, default 420 s).
#   call 2, carrying .fa4/s2: FA4 from the stash, gpu_session.sh bench on the stashed wheels
#     (PAGED=16 PREFILL_DTYPE=both unless set), then tools/lab/bench_variants.py while time is
#     left. Exits 3 on a fresh machine (no stash): start again from call 1.
# Each call leaves its JSONs and one logs.tgz under $OUT (a call brings back at most 8 files) and
# prints a short summary last. Run from the repository root. STASH names the stash folder
# (default /root/stash; FA4's install.sh reads its c1 there). REQUIRE_GPU=H200: either call exits
# 4 at once, running nothing, where nvidia-smi's GPU name lacks that text (a figures-of-record
# call that was lent another GPU then costs seconds, not its whole run). SUITE=0: call 1 only
# stashes (seconds), for figures of kernels whose suite has passed on another call or GPU.
set -uo pipefail
out=${OUT:-/tmp/ff-out}
mkdir -p "$out"
start=$SECONDS
budget=${CALL_BUDGET:-420}
stash=${STASH:-/root/stash}
pack() {  # every file but the JSONs into logs.tgz (after copying what the summary shows to /tmp)
    (cd "$out" && find . -type f ! -name '*.json' ! -name logs.tgz -printf '%P\n' |
        tar czf logs.tgz -T - --remove-files)
}
if [ -n "${REQUIRE_GPU:-}" ]; then
    gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
    case $gpu in
    *"$REQUIRE_GPU"*) ;;
    *)
        echo "this machine's GPU is '${gpu:-none found}', not $REQUIRE_GPU: nothing ran"
        exit 4
        ;;
    esac
fi
case ${1:-} in
1)
    wheels=${2:?check_with_fa4.sh 1 WHEEL_DIR}
    rm -rf "$stash/wheels" && mkdir -p "$stash" && cp .fa4/s1/c1 "$stash/" &&
        cp -r "$wheels" "$stash/wheels" || exit 1
    if [ "${SUITE:-1}" = 0 ]; then  # the stash alone: these kernels' suite ran on another call
        echo "stashed at $((SECONDS - start)) s; SUITE=0: no tests"
        exit 0
    fi
    OUT=$out TESTS_TIMEOUT=${TESTS_TIMEOUT:-340} bash tools/lab/gpu_session.sh "$stash/wheels" tests \
        >"$out/suite.txt" 2>&1
    echo "tests done at $((SECONDS - start)) s"
    if [ -n "${SWEEP:-}" ] && [ $((SECONDS - start)) -lt $((budget - 120)) ]; then
        bash tools/lab/paged_fill_sweep.sh /tmp/ff-venv/bin/python "$out/fill" >"$out/fill-table.txt" 2>&1
        echo "sweep done at $((SECONDS - start)) s"
    fi
    cp "$out/suite.txt" /tmp/summary-suite.txt
    cp "$out/fill-table.txt" /tmp/summary-fill.txt 2>/dev/null || : >/tmp/summary-fill.txt
    grep -E "^FAILED|^ERROR" "$out/gpu-tests.log" | head -12 >/tmp/summary-failed.txt
    pack
    grep -E " passed| failed|SUMMARY|stopped at" /tmp/summary-suite.txt | tail -6
    cat /tmp/summary-failed.txt
    tail -24 /tmp/summary-fill.txt
    ;;
2)
    [ -f "$stash/c1" ] || { echo "no stash on this machine: run call 1 again"; exit 3; }
    OUT=$out FA4_INSTALL=.fa4/s2/install.sh PAGED=${PAGED:-16} PREFILL_DTYPE=${PREFILL_DTYPE:-both} \
        bash tools/lab/gpu_session.sh "$stash/wheels" bench >"$out/bench.txt" 2>&1
    echo "bench done at $((SECONDS - start)) s"
    if [ $((SECONDS - start)) -lt $((budget - 90)) ]; then
        /tmp/ff-venv/bin/python tools/lab/bench_variants.py --json "$out/variants.json" >"$out/variants.log" 2>&1
        echo "variants done at $((SECONDS - start)) s"
    fi
    cp "$out/bench.txt" /tmp/summary-bench.txt
    cp "$out/variants.log" /tmp/summary-variants.txt 2>/dev/null || : >/tmp/summary-variants.txt
    pack
    grep -v -i "warn\|exe_args" /tmp/summary-variants.txt | tail -22
    grep -v "^\s*$" /tmp/summary-bench.txt | tail -40
    ;;
*)
    echo "check_with_fa4.sh: call 1 WHEEL_DIR or call 2" >&2
    exit 2
    ;;
esac
