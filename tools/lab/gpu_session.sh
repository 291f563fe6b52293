#!/usr/bin/env bash
# One device session, as a user would install: a fresh venv that sees the machine's torch
# through a .pth file (the GPU machine has no network), `pip install 'forge-flash[cuda]'` from
# the wheels in WHEEL_DIR, then the step named:
#   tests  pytest tests/gpu tests/integration, which includes tests/gpu/test_tools.py: the
#          wgmma self-test (built with the machine's nvcc) and tools/lab/sanitize_matrix.py
#          under compute-sanitizer memcheck, racecheck and synccheck (logs kept in $OUT).
#          Arguments after the step replace the default pytest arguments, e.g.
#          `tests -m "not slow" tests/gpu tests/integration` then `tests tests/gpu/test_tools.py`
#          to split a long run over two device calls. The default: `-n W tests/gpu
#          tests/integration`, W pytest-xdist workers by the GPU's memory (one per 9 GiB, at
#          most 16): `-n 16` on an 80 GB H100 ran out of device memory, in the suite and in
#          the sanitizers' matrix beside it (2026-12-05, session 56); 16 fit the H200's 141 GB.
#          With pytest-xdist 3.2 or later also `--dist=worksteal` (xdist_dealing says why).
#   bench  python -m forge_flash (main job), then the anchor benchmarks: prefill (bf16, or
#          PREFILL_DTYPE; `bench --full --prefill`) and decode from CUDA graphs
#          (`bench --full --decode --graph`). FA4 joins as a contender wherever
#          flash_attn.cute imports in the venv: already on the machine, or installed into the
#          venv by the script FA4_INSTALL names (it gets the venv's python as its argument;
#          docs/benchmarks.md says how to get one).
#   check  a kernel change's whole check in one device call: tests (its arguments as for
#          tests), then bench, then tools/lab/bench_variants.py (variants.json); every log is
#          then packed into $OUT/logs.tgz, so that what comes back (at most 8 files from a
#          device call) is the three JSONs and the archive. The same sequence, run as the
#          tests and bench steps and the variants one after the other before this step existed,
#          took 414 s on the H200 with `-n 16 tests/gpu tests/integration`
#          (docs/bench-history/2026-12-04.md, 16:47).
# TESTS_TIMEOUT=S (tests, check): stop the tests after S seconds and name the unfinished ones.
# EXTRA=cu12 installs 'forge-flash[cu12]' (the CUDA 12 plugin) instead of 'forge-flash[cuda]'.
# PREFILL_DTYPE=both (or fp16) times the prefill rows in both dtypes (issue 13 asks bf16 and
# fp16); default bf16, the anchor table's. PREFILL_PASSES=N (bench, check) times those rows in
# N passes and reports each row's median, so that one contender's one fast pass moves a row's
# ratio less (session 75: cuDNN ran head_dim 128 over 2k tokens at 639 TFLOP/s in a single
# pass, 553-603 on the rows beside it, which put that row at 0.89). PAGED=P (bench, check)
# adds `bench --paged P`: the bf16 prefill rows again as chunked prefill over a paged cache,
# ours and FA4's paged calls.
# Outputs go to $OUT. Usage, from the repository root:
#   bash tools/lab/gpu_session.sh WHEEL_DIR tests|bench|check [PYTEST ARGS...]
set -uo pipefail
wheels=$1
step=$2
shift 2
out=${OUT:-/tmp/ff-out}
mkdir -p "$out"
repo=$PWD
venv=/tmp/ff-venv
bash "$repo/tools/lab/wheel_venv.sh" "$venv" "$wheels" "${EXTRA:-cuda}" || exit 1
py=$venv/bin/python
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
cd /tmp && "$py" -m forge_flash info && cd "$repo" || exit 1
export PYTHONUNBUFFERED=1
# pytest-xdist workers for the GPU's memory: one per 9 GiB, 1-16.
gpu_workers() {
    local mib
    mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
    local workers=$((${mib:-0} / 9216))
    [ "$workers" -ge 1 ] || workers=1
    [ "$workers" -le 16 ] || workers=16
    echo "$workers"
}
# Where pytest-xdist can (3.2 and later), idle workers take the tests still queued on busy
# ones: the three sanitizer tests run 3-4 minutes on one worker, and with the default dealing
# its queue of other tests waited behind them (H100, session 57: 1,819 of 1,826 tests done at
# 290 s, the other workers idle).
xdist_dealing() {
    "$py" -c 'import sys, xdist; sys.exit(tuple(map(int, xdist.__version__.split(".")[:2])) < (3, 2))' \
        2>/dev/null && echo "--dist=worksteal"
}
# TESTS_TIMEOUT=S stops the tests after S seconds and then names those that started and never
# finished (tools/lab/unfinished_tests.py; the log is verbose for it): a hung kernel looks like
# a slow run otherwise (session 59: two tests hung, the other workers idle, until the call's limit).
run_tests() {
    local args=("$@") verbose=() limit=()
    [ ${#args[@]} -gt 0 ] || args=(-n "$(gpu_workers)" $(xdist_dealing) tests/gpu tests/integration)
    [ -z "${TESTS_TIMEOUT:-}" ] || { verbose=(-v -v) && limit=(timeout "$TESTS_TIMEOUT"); }
    echo "pytest ${args[*]}"
    FORGE_FLASH_TOOL_LOGS=$out "${limit[@]}" "$py" -m pytest -q "${verbose[@]}" -p no:cacheprovider -rs --durations=15 \
        "${args[@]}" >"$out/gpu-tests.log" 2>&1
    local rc=$?
    grep -v "^tests/.*::" "$out/gpu-tests.log" | grep -v "^\[gw[0-9]*\] \[" | tail -45
    if [ "$rc" = 124 ]; then
        echo "gpu_session.sh: the tests were stopped at TESTS_TIMEOUT=${TESTS_TIMEOUT} s"
        "$py" "$repo/tools/lab/unfinished_tests.py" "$out/gpu-tests.log"
    fi
    grep -h "SUMMARY" "$out"/sanitizer-*.log 2>/dev/null
}
run_bench() {
    if [ -n "${FA4_INSTALL:-}" ]; then
        bash "$FA4_INSTALL" "$py" 2>&1 | tail -3
    fi
    if "$py" -c 'import flash_attn.cute' 2>/dev/null; then
        echo "fa4: flash_attn.cute imports, FA4 is a contender"
    else
        echo "fa4: flash_attn.cute does not import, FA4 is left out"
    fi
    (cd /tmp && "$py" -m forge_flash) 2>&1 | tee "$out/main-job.log" | tail -12
    "$py" -m forge_flash bench --full --prefill --dtype "${PREFILL_DTYPE:-bf16}" \
        --passes "${PREFILL_PASSES:-1}" --json "$out/bench-prefill.json" >"$out/bench-prefill.log" 2>&1
    tail -12 "$out/bench-prefill.log"
    "$py" -m forge_flash bench --full --decode --graph --json "$out/bench-decode-graph.json" 2>&1 |
        tee "$out/bench-decode-graph.log" | tail -9
    if [ -n "${PAGED:-}" ]; then  # the bf16 prefill rows again, and over pages of PAGED keys
        "$py" -m forge_flash bench --full --prefill --dtype bf16 --paged "$PAGED" \
            --json "$out/bench-paged.json" >"$out/bench-paged.log" 2>&1
        sed -n '/^speed-up of forge_flash/,$p' "$out/bench-paged.log"  # the whole summary: fa4 paged sorts first
    fi
}
case $step in
tests)
    run_tests "$@"
    ;;
bench)
    run_bench
    ;;
check)
    start=$SECONDS
    run_tests "$@"
    echo "gpu_session.sh: tests done at $((SECONDS - start)) s"
    run_bench
    echo "gpu_session.sh: bench done at $((SECONDS - start)) s"
    "$py" tools/lab/bench_variants.py --json "$out/variants.json" >"$out/variants.log" 2>&1
    grep -v -i "warn\|exe_args" "$out/variants.log" | tail -24
    echo "gpu_session.sh: variants done at $((SECONDS - start)) s"
    (cd "$out" && find . -maxdepth 1 -type f ! -name '*.json' ! -name logs.tgz -printf '%f\n' |
        tar czf logs.tgz -T - --remove-files)
    ;;
*)
    echo "gpu_session.sh: unknown step '$step' (tests, bench or check)" >&2
    exit 2
    ;;
esac
