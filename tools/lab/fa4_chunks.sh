#!/usr/bin/env bash
# fa4_chunks.sh DIR: FA4's wheels (a benchmark contender only) in two chunks a device call can
# carry beside the working tree and our wheels (64 MiB per call in all). The shared prepare.sh
# (../shared/anchors/fa4/) downloads them into DIR/dl; its first chunk (58 MB) leaves too
# little room for the tree, and splitting the big wheel as it is took three calls (sessions
# 55-60). Its two libraries are 237 MB deflated to 92 MB in the wheel; xz -9 of the same wheel
# stored without compression is 61.4 MB (2026-12-05, nvidia-cutlass-dsl-libs-cu13 4.8.1). So this
# re-zips the big wheel stored (the same files: pip checks them against its RECORD), xz's it and
# cuts that into DIR/s1/c1 (C1_MB, default 32 MB) and DIR/s2 (the rest, the other wheels and
# install.sh; 40 MB). With the tree (16.1 MB on 2026-12-08; its raw benchmark files grow it by
# about 0.5 MB a session), a first chunk of 38 MB (sessions 79-87) left room for one 90a plugin
# wheel (7 MB) but not two: a call that stashed FA4 could not also carry a second build (session
# 88: the trace wheels beside main's). 32 MB leaves room for two wheels and the tree's growth
# (about 63 of the 67.1 MB, 64 MiB, a call carries), and the second call (the rest) still
# carries far less. So the first call carries the wheels too and does real work (the GPU suite,
# an A/B) beside the stash; with a first chunk of 50 MB (sessions 61-62) it could only stash.
# On the GPU machine:
#   call with .fa4/s1 and WHEELS carried:  mkdir -p /root/stash && cp .fa4/s1/c1 /root/stash/ &&
#                                         cp -r WHEELS /root/stash/  (then, e.g., the tests step)
#   call with .fa4/s2 carried:  FA4_INSTALL=.fa4/s2/install.sh bash tools/lab/gpu_session.sh /root/stash/W bench
# (the machine must stay warm between them: it goes back 30 s after a call ends, so make the
# second call at once after the first). tools/lab/check_with_fa4.sh is those two calls.
# xz -9 takes 3-5 minutes on two cores.
set -euo pipefail
dir=${1:-.fa4}
big=$(ls "$dir"/dl/nvidia_cutlass_dsl_libs_cu13-*.whl)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$dir/s1" "$dir/s2" "$dir/s3"
mkdir -p "$dir/s1" "$dir/s2"
python3 - "$big" "$work/stored.whl" <<'PY'
import sys
import zipfile

src, dst = sys.argv[1:]
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
    for info in zin.infolist():
        stored = zipfile.ZipInfo(info.filename, info.date_time)
        stored.external_attr, stored.create_system = info.external_attr, info.create_system
        zout.writestr(stored, zin.read(info), compress_type=zipfile.ZIP_STORED)
PY
xz -9 -T2 -c "$work/stored.whl" >"$work/big.xz"
c1_mb=${C1_MB:-32}
dd if="$work/big.xz" of="$dir/s1/c1" bs=1000000 count="$c1_mb" status=none
dd if="$work/big.xz" of="$dir/s2/c2" bs=1000000 skip="$c1_mb" status=none
for f in "$dir"/dl/*.whl; do [ "$f" = "$big" ] || cp "$f" "$dir/s2/"; done
basename "$big" >"$dir/s2/big-name"
cat >"$dir/s2/install.sh" <<'INSTALL'
#!/bin/bash
# install.sh PYTHON: rejoin the big wheel from /root/stash/c1 and this folder's c2, install FA4.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
py=${1:-python3}
[ -f /root/stash/c1 ] || { echo "no /root/stash/c1: run the first call again"; exit 3; }
cat /root/stash/c1 "$here/c2" | xz -d >"/tmp/$(cat "$here/big-name")"
if "$py" -m pip --version >/dev/null 2>&1; then pip=("$py" -m pip); else pip=(python3 -m pip --python "$py"); fi
"${pip[@]}" install -q --no-index --no-deps --no-compile "$here"/*.whl "/tmp/$(cat "$here/big-name")"
"$py" -c "import flash_attn.cute as f; print('flash-attn-4 ready:', f.flash_attn_func.__module__)"
INSTALL
chmod +x "$dir/s2/install.sh"
cat "$dir/s1/c1" "$dir/s2/c2" | xz -d | cmp -s - "$work/stored.whl" || { echo "fa4_chunks: the chunks do not rejoin" >&2; exit 1; }
python3 - "$big" "$work/stored.whl" <<'PY' || { echo "fa4_chunks: the stored wheel's files differ" >&2; exit 1; }
import sys
import zipfile

a, b = (zipfile.ZipFile(p) for p in sys.argv[1:])
assert a.namelist() == b.namelist()
assert all(a.read(n) == b.read(n) for n in a.namelist())
PY
du -sh "$dir/s1" "$dir/s2"
