#!/usr/bin/env bash
# fa4_chunks.sh DIR: FA4's wheels (a benchmark contender only) in three chunks a device call can
# carry beside the working tree and a wheel or two (64 MiB per call in all). The shared
# prepare.sh (../shared/anchors/fa4/) downloads them into DIR/dl and makes two chunks, of which
# the first (58 MB) leaves too little room for the tree (about 11 MB); this makes DIR/s1 (28 MB),
# DIR/s2 (56 MB) and DIR/s3 (the rest, the other wheels and install.sh). On the GPU machine:
#   call with .fa4/s1 carried:  mkdir -p /root/stash && cp .fa4/s1/c1 /root/stash/
#   call with .fa4/s2 carried:  cp .fa4/s2/c2 /root/stash/
#   call with .fa4/s3 carried:  FA4_INSTALL=.fa4/s3/install.sh bash tools/lab/gpu_session.sh WHEELS bench
# (the machine must stay warm between them: make each call at once after the last). Used so in
# sessions 55-58 (docs/benchmarks.md).
set -euo pipefail
dir=${1:-.fa4}
big=$(ls "$dir"/dl/nvidia_cutlass_dsl_libs_cu13-*.whl)
rm -rf "$dir/s1" "$dir/s2" "$dir/s3"
mkdir -p "$dir/s1" "$dir/s2" "$dir/s3"
chunk() { dd if="$big" of="$1" bs=1000000 skip="$2" ${3:+count=$3} status=none; }  # whole MBs
chunk "$dir/s1/c1" 0 28
chunk "$dir/s2/c2" 28 56
chunk "$dir/s3/c3" 84
for f in "$dir"/dl/*.whl; do [ "$f" = "$big" ] || cp "$f" "$dir/s3/"; done
basename "$big" >"$dir/s3/big-name"
cat >"$dir/s3/install.sh" <<'INSTALL'
#!/bin/bash
# install.sh PYTHON: rejoin the big wheel from /root/stash/c1, c2 and this folder's c3, install FA4.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
py=${1:-python3}
for c in c1 c2; do [ -f /root/stash/$c ] || { echo "no /root/stash/$c: run the first two calls again"; exit 3; }; done
cat /root/stash/c1 /root/stash/c2 "$here/c3" >"/tmp/$(cat "$here/big-name")"
if "$py" -m pip --version >/dev/null 2>&1; then pip=("$py" -m pip); else pip=(python3 -m pip --python "$py"); fi
"${pip[@]}" install -q --no-index --no-deps --no-compile "$here"/*.whl "/tmp/$(cat "$here/big-name")"
"$py" -c "import flash_attn.cute as f; print('flash-attn-4 ready:', f.flash_attn_func.__module__)"
INSTALL
chmod +x "$dir/s3/install.sh"
cat "$dir/s1/c1" "$dir/s2/c2" "$dir/s3/c3" | cmp -s - "$big" || { echo "fa4_chunks: the chunks do not rejoin" >&2; exit 1; }
du -sh "$dir/s1" "$dir/s2" "$dir/s3"
