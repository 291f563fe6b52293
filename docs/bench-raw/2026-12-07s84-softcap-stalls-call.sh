#!/usr/bin/env bash
# Session 84: where the softcap-only instance's warps wait (carry .gpu/wW, main's sm_90a wheels).
# Nsight Compute's per-instruction stall samples (SourceCounters) over issue 14's score-variant
# rows (tools/lab/profile_rows.py --variants: head_dim 128, 8k tokens, batch 2, 16 heads, bf16;
# plain, softcap 50, ALiBi, sinks), non-causal; the source page as CSV, then tools/lab/ncu_stalls.py
# on every kernel in it (reasons, opcodes, top instructions) and the instruction mix of the first two.
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out; start=$SECONDS
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
ncu --version | tail -1
bash tools/lab/wheel_venv.sh /tmp/vW .gpu/wW >/dev/null 2>&1; P=/tmp/vW/bin/python
timeout 300 ncu --clock-control none --profile-from-start off -k regex:fwd_kernel_sm90 \
  --section SourceCounters --section WarpStateStats -o /tmp/prof $P tools/lab/profile_rows.py --variants \
  > $out/ncu-log.txt 2>&1
echo "ncu rc $? at $((SECONDS - start)) s"; tail -3 $out/ncu-log.txt
ncu -i /tmp/prof.ncu-rep --page source --csv --print-source sass > /tmp/src.csv 2> $out/src-err.txt
gzip -c /tmp/src.csv > $out/softcap-stalls-src.csv.gz
python3 tools/lab/ncu_stalls.py /tmp/src.csv > $out/stalls.txt 2>&1
n=$(grep -c "^[0-9]*:" $out/stalls.txt)
for i in $(seq 0 $((n - 1))); do
  echo "## kernel $i" >> $out/stalls.txt
  python3 tools/lab/ncu_stalls.py /tmp/src.csv $i --top 30 >> $out/stalls.txt 2>&1
done
python3 tools/lab/ncu_stalls.py /tmp/src.csv --mix 0 1 --top 25 >> $out/stalls.txt 2>&1
echo "done at $((SECONDS - start)) s"
sed -n "1,${n}p" $out/stalls.txt | cut -c1-120
for i in $(seq 0 $((n - 1))); do sed -n "/^## kernel $i\$/,/^by opcode/p" $out/stalls.txt | head -9; done
