#!/usr/bin/env bash
# Session 81: batched decode split counts (session 76's item 4; carry .gpu/wK .gpu/run): batch
# 64-256 over 4k keys and 64 over 16k, each split count forced, cuDNN's layout too, every
# kernel's grid and registers (tools/lab/decode_rows_ab.py).
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out
start=$SECONDS
[ -x /tmp/v/bin/python ] || bash tools/lab/wheel_venv.sh /tmp/v .gpu/wK || exit 1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1
FORGE_FLASH_CHECK_DEVICE_VALUES=0 timeout ${DECODE_TIMEOUT:-300} /tmp/v/bin/python tools/lab/decode_rows_ab.py M \
  64:4096,96:4096,128:4096,160:4096,256:4096,64:16384 --splits 1,2,3,4 --head-major --passes 3 --kernels \
  > $out/decode-batched.txt 2>&1
echo "rc $? at $((SECONDS - start)) s"
grep -v "^\s*$" $out/decode-batched.txt | grep -v -i warn | tail -45
