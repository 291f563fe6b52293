#!/usr/bin/env bash
# Session 89's tall-decode candidate (2026-12-08s89-tall-decode-candidate.patch) before it can
# land, as candidate_ab.sh's CHECK (which has run its TESTS already): which kernels its steps of
# 8 and 5 tokens launch (the tall instance must be among them: decode_rows_ab.py --kernels), then
# the sanitizers over tools/lab/sanitize_matrix.py, whose matrix holds such steps split and
# unsplit (tests/gpu/test_tools.py, memcheck, racecheck and synccheck). Run from the repository
# root; carry WHEELS (default .gpu/wD: the candidate's sm_90a wheels).
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out; start=$SECONDS
bash tools/lab/wheel_venv.sh /tmp/vD ${WHEELS:-.gpu/wD} >/dev/null || exit 1
for queries in 8 5; do
  /tmp/vD/bin/python tools/lab/decode_rows_ab.py D 1:20000,8:4096 --queries $queries --passes 1 --kernels \
    2>&1 | grep -E "^D |decode_kernel|fwd_kernel" | cut -c1-160
done
timeout 600 /tmp/vD/bin/python -m pytest -q -p no:cacheprovider tests/gpu/test_tools.py -k sanitize_matrix \
  > $out/d-sanitizers.txt 2>&1
echo "sanitizers rc $? at $((SECONDS - start)) s: $(tail -1 $out/d-sanitizers.txt)"
grep -E "^FAILED|^E  " $out/d-sanitizers.txt | head -8
