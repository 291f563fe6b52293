#!/usr/bin/env bash
# lab_wheels.sh OUT_DIR [SRC_TREE] [ARCHS]: the pure wheel and the CUDA 13 plugin wheel of a
# source tree (a git worktree of a candidate branch; default this one) into OUT_DIR, for the GPU
# machine's A/B rounds and checks (tools/lab/ab_wheels.sh, gpu_session.sh): Python 3.12's
# (the GPU machine's), linux_x86_64 and not repaired (tools/build_dists.py makes the release
# wheels). ARCHS: FORGE_FLASH_CUDA_ARCHS, default the release's "80-real;90a-real;80-virtual";
# "90a-real" halves the build for Hopper-only rounds. KEEP=1 keeps the tree's CMake build folder
# (python/plugin/build), so a second build of the same tree after a commit recompiles only what
# changed (a dispatch-only change still recompiles the kernels that include its headers). From
# clean on two cores, 2026-12-05: 140-152 s with "90a-real", 196 s with the default set (this
# machine's pace moves 2-3x between hours: docs/building.md). PYTHON names the 3.12 interpreter.
set -euo pipefail
out=$(realpath -m "$1")
src=$(realpath "${2:-$(dirname "$0")/../..}")
archs=${3:-80-real;90a-real;80-virtual}
py=${PYTHON:-/root/.pyenv/versions/3.12.1/bin/python3}
rm -rf "$out"
mkdir -p "$out"
start=$(date +%s)
"$py" -m pip wheel -q --no-deps -w "$out" "$src"
[ -n "${KEEP:-}" ] || rm -rf "$src/python/plugin/build"
FORGE_FLASH_CUDA_ARCHS="$archs" CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
    "$py" -m pip wheel --no-deps -w "$out" "$src/python/plugin" >"$out.log" 2>&1 ||
    { tail -30 "$out.log" >&2; exit 1; }
ls -la "$out"
echo "lab_wheels: built in $(($(date +%s) - start)) s (log $out.log)"
