#!/usr/bin/env bash
# paged_fill_sweep.sh PYTHON OUT_DIR [ROUNDS]: where chunked prefill over a paged cache should
# run unsplit on the Hopper kernel (split_plan.h, hopper_prefill_unsplit's threshold for K/V
# through a block table). Each row is timed twice on one build, alternating: U forces the
# call's split count to 1 (the unsplit Hopper grid: the PagedKV TMA twin at head_dim 64-128),
# A leaves it to the dispatcher (split on the SM80 kernel below split_plan.h's fill for the
# twin: 0.3 above head_dim 96, 0.5 at 96, 0.35 at 64). One sequence over 8 heads, pages of 16,
# queries over 4k and 16k keys, grids of 0.24-0.61 of 132 SMs (the dispatcher's count: the
# twin's query blocks of 128 rows), on both sides of each threshold (where A runs unsplit too,
# the ratio is the noise); GPU time from CUDA graphs (prefill_rows_ab.py --graph --num-splits).
# Rows go to OUT_DIR/ab-*.txt; the table (tools/lab/ab_table.py, U against A) to standard output.
# PYTHON: a venv with the wheels under test (wheel_venv.sh); run from the repository root. A
# round of the 11 rows before these took 20 s on the H100 (session 64).
set -uo pipefail
py=$1
out=$2
rounds=${3:-1}
mkdir -p "$out"
for ((round = 1; round <= rounds; ++round)); do
    for mode in U A; do
        split=()
        [ "$mode" = U ] && split=(--num-splits 1)
        args=(--batch 1 --heads 8 --graph --page-size 16 "${split[@]}")
        timeout 60 "$py" tools/lab/prefill_rows_ab.py "$mode" \
            128:512,128:640,128:768,96:1024,96:1152,96:1280,64:640,64:768,64:1024,64:1280 "${args[@]}" --keys 4096 \
            >>"$out/ab-1.txt" 2>&1
        timeout 40 "$py" tools/lab/prefill_rows_ab.py "$mode" 128:768,128:1024,96:1024,96:1280 "${args[@]}" \
            --keys 16384 >>"$out/ab-2.txt" 2>&1
    done
done
python3 tools/lab/ab_table.py --base A "$out"/ab-*.txt
