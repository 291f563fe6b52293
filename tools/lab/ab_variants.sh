#!/usr/bin/env bash
# A/B of kernel variants on the GPU machine: each variant is a Hopper-only plugin build of
# this tree with sed edits applied, installed into its own venv beside the pure wheel in
# WHEEL_DIR; the benchmark then runs with every variant in turn, for two alternating rounds
# (drift between rounds shows up as disagreement). Results: $OUT/<name>-<round>.json/.log
# and a table of forge_flash vs torch flash TFLOP/s (prefill) or us (decode) per variant.
#
#   OUT=/tmp/ab bash tools/lab/ab_variants.sh WHEEL_DIR "bench args" \
#       'g1|csrc/kernels/cta_work.cuh|s/kCausalHeadGroup = [0-9]*;/kCausalHeadGroup = 1;/' \
#       'g8|csrc/kernels/cta_work.cuh|s/kCausalHeadGroup = [0-9]*;/kCausalHeadGroup = 8;/'
#
# A variant is 'name|file|sed expression' (repeat '|file|expr' pairs for more edits). Needs
# the machine's nvcc, cmake, ninja, pybind11 and scikit-build-core (no network).
set -u
wheels=$(realpath "$1")
bench_args=$2
shift 2
out=${OUT:?set OUT}
repo=$PWD
names=()

build() {  # variant spec
    local spec=$1 name dir
    name=${spec%%|*}
    dir=/tmp/ab-$name
    rm -rf "$dir" && cp -r "$repo" "$dir" || return 1
    local rest=${spec#*|}
    while [ -n "$rest" ]; do
        local file=${rest%%|*}
        rest=${rest#*|}
        local expr=${rest%%|*}
        [ "$rest" = "$expr" ] && rest="" || rest=${rest#*|}
        sed -i "$expr" "$dir/$file"
        cmp -s "$repo/$file" "$dir/$file" && echo "ab_variants: $name: '$expr' changed nothing in $file" >&2
    done
    # The machine's scikit-build-core may be older than the pin; the build itself is the same.
    sed -i 's/^minimum-version = .*/minimum-version = "1.1"/' "$dir/python/plugin/pyproject.toml"
    rm -rf "$dir/python/plugin/build"
    (cd "$dir" && FORGE_FLASH_CUDA_ARCHS=90a-real CMAKE_BUILD_PARALLEL_LEVEL=6 python3 -m pip wheel -q \
        --no-build-isolation --no-deps python/plugin -w "$dir/wheels") >"$dir.build.log" 2>&1 ||
        { tail -20 "$dir.build.log"; return 1; }
    cp "$wheels"/forge_flash-*.whl "$dir/wheels/"
    bash "$repo/tools/lab/wheel_venv.sh" "$dir-venv" "$dir/wheels"
}

for spec in "$@"; do
    names+=("${spec%%|*}")
    build "$spec" &
done
wait
for round in 1 2; do
    for name in "${names[@]}"; do
        # shellcheck disable=SC2086  # bench_args is a list of options
        /tmp/ab-$name-venv/bin/python -m forge_flash bench $bench_args \
            --json "$out/$name-$round.json" >"$out/$name-$round.log" 2>&1
    done
done
python3 - "$out" "${names[@]}" <<'PY'
import json
import sys

out, names = sys.argv[1], sys.argv[2:]
table: dict = {}
for name in names:
    for rnd in (1, 2):
        for r in json.load(open(f"{out}/{name}-{rnd}.json"))["rows"]:
            if r["backend"] not in ("forge_flash", "sdpa_flash") or r["ms"] is None:
                continue
            prefill = r["kind"] == "prefill"
            key = (r["kind"], r["dtype"], r["d"], r["causal"], r["sq"] if prefill else r["sk"])
            value = r["tflops"] if prefill else r["ms"] * 1e3
            table.setdefault(key, {}).setdefault((r["backend"], name), []).append(value)
print("kind dtype d causal seqlen | forge_flash per variant (min-max of 2 rounds) | sdpa_flash")
print("(prefill: TFLOP/s, decode: us)  variants:", " ".join(names))
for key in sorted(table):
    v = table[key]
    ours = " ".join(
        f"{min(v[('forge_flash', n)]):.1f}-{max(v[('forge_flash', n)]):.1f}" for n in names
    )
    flash = [x for n in names for x in v.get(("sdpa_flash", n), [])]
    print(*key, "|", ours, "|", f"{min(flash):.1f}-{max(flash):.1f}" if flash else "n/a")
PY
