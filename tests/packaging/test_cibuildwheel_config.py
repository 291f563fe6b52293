"""The cibuildwheel configuration selects exactly the wheels the release promises."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib import resources

import pytest
from dist_helpers import PLUGIN_DIR, ROOT, tomllib

CONFIG = PLUGIN_DIR / "cibuildwheel.toml"
EXPECTED = {
    f"cp3{minor}-manylinux_{arch}" for minor in range(10, 15) for arch in ("x86_64", "aarch64")
}


def _config() -> dict:
    return tomllib.loads(CONFIG.read_text())["tool"]["cibuildwheel"]


@pytest.mark.skipif(shutil.which("cibuildwheel") is None, reason="cibuildwheel not installed")
def test_build_identifiers_are_cp310_to_cp314_on_x86_64_and_aarch64():
    out = subprocess.run(
        [
            "cibuildwheel",
            "--print-build-identifiers",
            "--platform",
            "linux",
            "--archs",
            "x86_64,aarch64",
            "--config-file",
            str(CONFIG),
            str(PLUGIN_DIR),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert set(out) == EXPECTED
    assert len(out) == len(EXPECTED)


def test_config_matches_cibuildwheel_schema():
    jsonschema = pytest.importorskip("jsonschema")
    try:
        schema_file = resources.files("cibuildwheel") / "resources" / "cibuildwheel.schema.json"
    except ModuleNotFoundError:
        pytest.skip("cibuildwheel not installed")
    jsonschema.validate(_config(), json.loads(schema_file.read_text()))


def test_images_are_manylinux_2_28_with_cuda_13_pinned_by_tag():
    linux = _config()["linux"]
    for arch in ("x86_64", "aarch64"):
        image = linux[f"manylinux-{arch}-image"]
        match = re.fullmatch(
            rf"quay\.io/manylinux_cuda/manylinux_2_28_{arch}_cuda13_\d+:(\d{{4}}\.\d\d\.\d\d-\d+)",
            image,
        )
        assert match, f"{image}: expected a manylinux_2_28 CUDA 13 image pinned by dated tag"


def test_repair_leaves_the_driver_library_out_and_kernels_build_once():
    linux = _config()["linux"]
    repair = " ".join(linux["repair-wheel-command"])
    assert "auditwheel repair --exclude libcuda.so.1" in repair
    before_all = " ".join(linux["before-all"])
    assert "tools/build_kernels.py" in before_all
    assert "FORGE_FLASH_KERNELS_LIB" in linux["environment"]
    assert "smoke_plugin.py" in linux["test-command"]
