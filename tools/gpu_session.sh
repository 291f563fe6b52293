#!/usr/bin/env bash
# One device session, as a user would install: a fresh venv that sees the machine's torch
# through a .pth file (the GPU machine has no network), `pip install 'forge-flash[EXTRA]'` from
# the wheels in $1 (EXTRA = $3: cuda, the default, or cu12), then the step named in $2:
#   tests     GPU test suite (+ tests/integration), compute-sanitizer memcheck and racecheck
#   bench     python -m forge_flash (main job), then the full benchmark, eager and CUDA-graph
# Outputs go to $OUT. Usage: bash tools/gpu_session.sh WHEEL_DIR tests|bench [cuda|cu12]
set -uo pipefail
wheels=$1
step=$2
extra=${3:-cuda}
out=${OUT:-/tmp/ff-out}
repo=$PWD
venv=/tmp/ff-venv
rm -rf "$venv"
python3 -m venv --without-pip "$venv"
python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
    >"$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/machine_site.pth"
python3 -m pip --python "$venv/bin/python" install -q --no-index --find-links "$wheels" "forge-flash[$extra]" || exit 1
py=$venv/bin/python
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
cd /tmp && "$py" -m forge_flash info && cd "$repo" || exit 1
export PYTHONUNBUFFERED=1
case $step in
tests)
    "$py" -m pytest tests/gpu tests/integration -q -p no:cacheprovider 2>&1 | tee "$out/gpu-tests.log" | tail -15
    for tool in memcheck racecheck; do
        compute-sanitizer --tool $tool "$py" tools/sanitize_matrix.py 2>&1 | tee "$out/sanitizer-$tool.log" | tail -3
    done
    ;;
bench)
    (cd /tmp && "$py" -m forge_flash) 2>&1 | tee "$out/main-job.log" | tail -12
    "$py" -m forge_flash bench --decode --graph --json "$out/bench-decode-graph.json" 2>&1 | tee "$out/bench-decode-graph.log" | tail -9
    "$py" -m forge_flash bench --full --json "$out/bench-full.json" >"$out/bench-full.log" 2>&1
    tail -12 "$out/bench-full.log"
    ;;
esac
