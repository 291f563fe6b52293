#!/usr/bin/env bash
# Session 80, call 3 (carry .gpu/wK .gpu/wN .gpu/run): session 79's Nsight Compute traffic call
# (main M = .gpu/wK against session 77's N probe at head_dim 128 over 16k non-causal), then
# session 76's item 4: batched decode at batch 96-256 over 4k keys with each split count forced,
# cuDNN's layout too, and each kernel's grid and registers.
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out
start=$SECONDS
OUT=$out timeout 330 bash .gpu/run/s79n.sh > $out/ncu-table.txt 2>&1
echo "ncu done at $((SECONDS-start)) s"
FORGE_FLASH_CHECK_DEVICE_VALUES=0 timeout 200 /tmp/vK/bin/python tools/lab/decode_rows_ab.py M \
  128:4096,96:4096,160:4096,256:4096 --splits 1,2,4 --head-major --passes 3 --kernels \
  > $out/decode-b128.txt 2>&1
echo "decode done at $((SECONDS-start)) s"
rm -f $out/*.ncu-rep.gz; (cd $out && tar czf reps.tgz prof-*.ncu-rep details-*.csv ncu-*.log 2>/dev/null && rm -f prof-*.ncu-rep details-*.csv ncu-*.log)
grep -v "^\s*$" $out/decode-b128.txt | grep -v -i warn | tail -30
cat $out/ncu-table.txt | tail -150
