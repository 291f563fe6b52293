#!/usr/bin/env bash
# FlashAttention-2's own forward tests on the kernels, through flash_attn_interface
# (tools/lab/fa2_upstream_tests.py; carry ${WHEELS:-.gpu/wM} .gpu/fa2 .gpu/run). Workers: one per 10 GiB.
set -u
out=${OUT:-/tmp/ff-out}; mkdir -p $out
start=$SECONDS
bash tools/lab/wheel_venv.sh /tmp/v ${WHEELS:-.gpu/wM} || exit 1
mem=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
w=${WORKERS:-$((mem / 10240))}; [ $w -gt 16 ] && w=16; [ $w -lt 1 ] && w=1
echo "workers $w"
/tmp/v/bin/python -c "import forge_flash, torch; print(forge_flash.__version__, torch.__version__, forge_flash.active_backend())" 2>&1 | tail -2
PYTHONPATH=$PWD/.gpu/fa2/einops-0.8.2-py3-none-any.whl timeout ${FA2_TIMEOUT:-400} /tmp/v/bin/python \
  tools/lab/fa2_upstream_tests.py .gpu/fa2/test_flash_attn.py --device cuda --keep ${KEEP:-0.01} \
  --seed ${SEED:-85} --workdir /tmp/fa2w -n $w > $out/fa2-upstream.txt 2>&1
echo "rc $? at $((SECONDS - start)) s"; grep -E "^FAILED|passed|failed|^fallbacks|^ +[0-9]+  " $out/fa2-upstream.txt | tail -30
