#!/usr/bin/env bash
# Next session (carry .gpu/wK .gpu/fa2 .gpu/run): FlashAttention-2's own forward tests on the
# kernels, through flash_attn_interface (tools/lab/fa2_upstream_tests.py; einops from its wheel).
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out
bash tools/lab/wheel_venv.sh /tmp/v .gpu/wK || exit 1
PYTHONPATH=$PWD/.gpu/fa2/einops-0.8.2-py3-none-any.whl timeout ${FA2_TIMEOUT:-420} /tmp/v/bin/python \
  tools/lab/fa2_upstream_tests.py .gpu/fa2/test_flash_attn.py --device cuda --keep ${KEEP:-0.01} \
  --workdir /tmp/fa2w -n 16 > $out/fa2-upstream.txt 2>&1
echo "rc $?"; grep -E "^FAILED|passed|failed" $out/fa2-upstream.txt | tail -25
