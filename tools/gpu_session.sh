#!/usr/bin/env bash
# One device session: install the wheels carried in $1 (default .gpu) into a private target,
# run the GPU test suite, compute-sanitizer on a reduced matrix, and the benchmark.
# Usage (on the GPU machine): bash tools/gpu_session.sh [wheel-dir] [pytest args...]
set -uo pipefail
wheels=${1:-.gpu}
shift || true
out=${OUT:-/tmp/ff-out}
mkdir -p "$out"
site=/tmp/ff-site
rm -rf "$site"
python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl || exit 1
export PYTHONPATH=$site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -m forge_flash info
python3 -m pytest tests/gpu -q -p no:cacheprovider "$@" 2>&1 | tee "$out/gpu-tests.log" | tail -15
