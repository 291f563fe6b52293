#!/usr/bin/env bash
# One device call for prebuilt kernel candidates against a base build. For each candidate: its
# tests first (TESTS, a pytest -k expression over TEST_FILES, stopped after TESTS_TIMEOUT
# seconds, so that a candidate that hangs the GPU ends there); a candidate whose tests fail drops
# out. Then ab_wheels.sh's alternating rounds of the scripts with the base and the candidates
# left, and last CHECK (a script, e.g. docs/bench-raw/2026-12-07s82-w-check-call.sh) once per
# candidate, with WHEELS set to its wheels and OUT to $OUT/NAME-check; the sanitizers' verdicts
# found in that folder's files are printed after it.
#
#   TESTS=softcap CHECK=docs/bench-raw/2026-12-07s82-w-check-call.sh OUT=$OUT \
#       bash tools/lab/candidate_ab.sh M=.gpu/wM R=.gpu/wR F=.gpu/wF -- \
#       "bench_variants.py --parts softcap-dims"
#
# The first build is the base. ROUNDS (default 3) and AB_VENVS (the venvs' folder, default /tmp)
# as in ab_wheels.sh. Exits 1 when no candidate passes its tests. Carry every wheel folder
# named. Run from the repository root.
set -u
out=${OUT:?set OUT}
mkdir -p "$out"
start=$SECONDS
lab=$(dirname "$(realpath "$0")")
venvs=${AB_VENVS:-/tmp}
# shellcheck source=build_args.sh
. "$lab/build_args.sh"
split_builds "$@"
[ ${#builds[@]} -gt 1 ] && [ ${#scripts[@]} -gt 0 ] || {
    echo "usage: candidate_ab.sh BASE=WHEEL_DIR NAME=WHEEL_DIR... -- 'SCRIPT ARGS'..." >&2
    exit 2
}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1
kept=("${builds[0]}")
for spec in "${builds[@]:1}"; do
    name=${spec%%=*}
    if [ -n "${TESTS:-}" ]; then
        bash "$lab/wheel_venv.sh" "$venvs/ab-venv-$name" "${spec#*=}" >/dev/null || exit 1
        # shellcheck disable=SC2086  # TEST_FILES is a list of paths
        timeout "${TESTS_TIMEOUT:-90}" "$venvs/ab-venv-$name/bin/python" -m pytest -q -p no:cacheprovider \
            -n 8 ${TEST_FILES:-tests/gpu/test_variants_gpu.py} -k "$TESTS" >"$out/$name-tests.txt" 2>&1
        echo "$name tests rc $? at $((SECONDS - start)) s: $(tail -1 "$out/$name-tests.txt")"
        grep -E "^FAILED|^E  " "$out/$name-tests.txt" | head -8
        grep -q " passed" "$out/$name-tests.txt" && ! grep -q -E " failed|^FAILED" "$out/$name-tests.txt" ||
            continue
    fi
    kept+=("$spec")
done
[ ${#kept[@]} -gt 1 ] || exit 1
OUT=$out/ab AB_VENVS=$venvs bash "$lab/ab_wheels.sh" "${ROUNDS:-3}" "${kept[@]}" -- "${scripts[@]}" >"$out/ab.log" 2>&1
echo "ab done at $((SECONDS - start)) s"
tail -20 "$out/ab/table.txt" 2>/dev/null || tail -20 "$out/ab.log"
if [ -n "${CHECK:-}" ]; then
    for spec in "${kept[@]:1}"; do
        name=${spec%%=*}
        mkdir -p "$out/$name-check"
        # Python's warnings dropped, not every line that says "warn": compute-sanitizer's
        # racecheck verdict reads "RACECHECK SUMMARY: N hazards displayed (N errors, 0
        # warnings)", so SR's went unseen in session 86 (and its file was past the 8 files a call
        # brings back). Every sanitizer verdict in the check's files is then printed too, so it
        # comes back in the call's output whatever the check script prints.
        WHEELS=${spec#*=} OUT=$out/$name-check bash "$CHECK" 2>&1 |
            grep -v -E "[A-Za-z]+Warning: |^ +warnings\.warn\(" | tail -9
        grep -H -E "(ERROR|RACECHECK) SUMMARY" "$out/$name-check"/* 2>/dev/null |
            sed "s|^$out/||"
    done
fi
echo "done at $((SECONDS - start)) s"
