#!/usr/bin/env bash
# wheel_venv.sh VENV WHEEL_DIR [EXTRA]: a fresh venv at VENV with 'forge-flash[EXTRA]' (default
# cuda; '' for the pure package alone) installed from the wheels in WHEEL_DIR, as a user installs
# it but without network (the GPU machine has none): the venv sees the machine's own packages
# (torch, pytest, ...) through a .pth file, so pip finds forge-flash's dependencies installed (and
# would take a forge-flash of the same version installed there for this one: the GPU machine has
# none). $PYTHON names the machine's interpreter (default python3). Used by gpu_session.sh,
# ab_variants.sh and ab_wheels.sh.
set -euo pipefail
venv=$1
wheels=$2
extra=${3-cuda}
py=${PYTHON:-python3}
purelib() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
rm -rf "$venv"
"$py" -m venv --without-pip "$venv"
purelib "$py" >"$(purelib "$venv/bin/python")/machine_site.pth"
"$py" -m pip --python "$venv/bin/python" install -q --no-index --find-links "$wheels" "forge-flash${extra:+[$extra]}"
