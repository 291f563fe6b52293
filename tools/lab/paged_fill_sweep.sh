#!/usr/bin/env bash
# paged_fill_sweep.sh PYTHON OUT_DIR [ROUNDS]: where chunked prefill over a paged cache should
# run unsplit on the Hopper kernel (split_plan.h, hopper_prefill_unsplit's threshold for K/V
# through a block table). Each row is timed twice on one build, alternating: U forces the
# call's split count to 1 (the unsplit Hopper grid: the PagedKV TMA twin at head_dim 64-128),
# A leaves it to the dispatcher (below 0.7 of the SMs: split, on the SM80 kernel). One sequence
# over 8 heads, pages of 16, queries over 4k and 16k keys, grids of 0.36-0.67 of 132 SMs (by
# the dispatcher's count: query blocks of 128 rows, 192 at head_dim 64 and at 96 non-causal) and
# a control row at 0.73, which A too runs unsplit (its ratio is the noise); GPU time from CUDA
# graphs (prefill_rows_ab.py --graph --num-splits). Rows go to OUT_DIR/ab-*.txt; the table
# (tools/lab/ab_table.py, U against A) to standard output. PYTHON: a venv with the wheels
# under test (wheel_venv.sh); run from the repository root. About 100 s a round (estimate).
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
            128:768,128:1024,128:1280,128:1536,96:1024,96:1280,64:1536,64:2048 "${args[@]}" --keys 4096 \
            >>"$out/ab-1.txt" 2>&1
        timeout 40 "$py" tools/lab/prefill_rows_ab.py "$mode" 128:1024,128:1280,96:1024 "${args[@]}" \
            --keys 16384 >>"$out/ab-2.txt" 2>&1
    done
done
python3 tools/lab/ab_table.py --base A "$out"/ab-*.txt
