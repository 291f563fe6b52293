#!/usr/bin/env bash
# A/B rounds of prebuilt plugin builds (built on another machine, carried in with their pure
# wheel): a venv per build (wheel_venv.sh), then every script run once per build per round, the
# builds alternating within a round (M A B M A B ...) so that drift between rounds shows up as
# disagreement between a build's runs; last, ab_table.py's table, the first build the base.
#
#   OUT=/tmp/ab bash tools/lab/ab_wheels.sh 3 M=wheels/main T=wheels/cand -- \
#       "prefill_rows_ab.py 64:2048,128:4096" wave_tail_rows.py "decode_rows_ab.py 1:4096"
#
# A script is a tools/lab script and its arguments after the tag (the build's name, which it
# prints first on each row: prefill_rows_ab.py, wave_tail_rows.py, decode_rows_ab.py,
# band_rows.py, bench_variants.py). Outputs: $OUT/ab-<script's index>.txt, and the table in
# $OUT/table.txt; the venvs: $AB_VENVS/ab-venv-<name> (default /tmp, outside $OUT, which comes
# back from the GPU).
set -uo pipefail
rounds=$1
shift
lab=$(dirname "$(realpath "$0")")
# shellcheck source=build_args.sh
. "$lab/build_args.sh"
split_builds "$@"
[ ${#builds[@]} -gt 0 ] && [ ${#scripts[@]} -gt 0 ] || {
    echo "usage: ab_wheels.sh ROUNDS NAME=WHEEL_DIR... -- 'SCRIPT ARGS'..." >&2
    exit 2
}
out=${OUT:?set OUT}
mkdir -p "$out"
rm -f "$out"/ab-*.txt "$out/table.txt"  # a run's rows only: the scripts append
venvs=${AB_VENVS:-/tmp}
for spec in "${builds[@]}"; do
    bash "$lab/wheel_venv.sh" "$venvs/ab-venv-${spec%%=*}" "${spec#*=}" || {
        echo "ab_wheels: venv ${spec%%=*} failed" >&2
        exit 1
    }
done
index=0
for script in "${scripts[@]}"; do
    index=$((index + 1))
    read -r -a words <<<"$script"
    for ((round = 1; round <= rounds; round++)); do
        for spec in "${builds[@]}"; do
            name=${spec%%=*}
            "$venvs/ab-venv-$name/bin/python" "$lab/${words[0]}" "$name" "${words[@]:1}" \
                >>"$out/ab-$index.txt" 2>&1 || echo "ab_wheels: $name: ${words[0]} failed" >&2
        done
    done
done
python3 "$lab/ab_table.py" "$out"/ab-*.txt | tee "$out/table.txt"
