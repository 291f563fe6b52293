"""Fixtures for the install tests: the naive wheel built from this tree, a torch-only site, venvs.

The install tests need a torch wheel that pip can install without a multi-GB download: on the
dev/CI machine that is torch 2.13.0 for Python 3.11 (a file on local disk). Elsewhere, set
FORGE_FLASH_TEST_TORCH to a pip requirement (e.g. "torch==2.13.0" with a CPU index configured).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from dist_helpers import ROOT, Venv, real_plugin_wheel, version, write_fake_plugin_wheel

LOCAL_TORCH = {(3, 11): "torch==2.13.0"}  # what pip finds on this machine's disk


def _torch_requirement() -> str | None:
    explicit = os.environ.get("FORGE_FLASH_TEST_TORCH")
    if explicit:
        return explicit
    return LOCAL_TORCH.get(sys.version_info[:2])


@pytest.fixture(scope="session")
def torch_site(tmp_path_factory) -> Path:
    """site-packages of a venv holding only torch (and its dependencies)."""
    requirement = _torch_requirement()
    if requirement is None:
        pytest.skip(
            f"no torch wheel known to be local for Python {sys.version_info[0]}."
            f"{sys.version_info[1]}; set FORGE_FLASH_TEST_TORCH to a pip requirement"
        )
    path = tmp_path_factory.mktemp("torch-only")
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    python = str(path / "bin" / "python")
    proc = subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", requirement],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"could not install {requirement} into a venv: {proc.stderr[-500:]}")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Path(site)


@pytest.fixture(scope="session")
def naive_wheel_dir(tmp_path_factory) -> Path:
    """A folder holding only the forge-flash wheel built from this tree (no plugin)."""
    out = tmp_path_factory.mktemp("wheels-naive")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
    )
    (wheel,) = out.glob("forge_flash-*.whl")
    assert wheel.name == f"forge_flash-{version()}-py3-none-any.whl"
    return out


@pytest.fixture(scope="session")
def fake_plugin_dir(tmp_path_factory, naive_wheel_dir) -> Path:
    """The naive wheel plus FAKE plugin wheels (CUDA 13 and 12) of the same version."""
    out = tmp_path_factory.mktemp("wheels-fake")
    for wheel in naive_wheel_dir.iterdir():
        (out / wheel.name).write_bytes(wheel.read_bytes())
    for major in (13, 12):
        write_fake_plugin_wheel(out, version(), f"forge-flash=={version()}", major)
    return out


def _real_plugin_dir(tmp_path_factory, naive_wheel_dir, cuda_major: int) -> Path:
    wheel = real_plugin_wheel(cuda_major)
    if wheel is None:
        pytest.skip(
            f"no real forge-flash-cu{cuda_major} wheel for this Python in dist/ (build one with "
            f"`python tools/build_dists.py --cuda {cuda_major} --pythons 3.11`) and "
            f"FORGE_FLASH_PLUGIN_WHEEL{'' if cuda_major == 13 else '_CU12'} unset"
        )
    out = tmp_path_factory.mktemp(f"wheels-real-cu{cuda_major}")
    for src in [*naive_wheel_dir.iterdir(), wheel]:
        (out / src.name).write_bytes(src.read_bytes())
    return out


@pytest.fixture(scope="session")
def real_plugin_dir(tmp_path_factory, naive_wheel_dir) -> Path:
    """The naive wheel plus the real CUDA 13 plugin wheel (dist/ or $FORGE_FLASH_PLUGIN_WHEEL)."""
    return _real_plugin_dir(tmp_path_factory, naive_wheel_dir, 13)


@pytest.fixture(scope="session")
def real_plugin_dir_cu12(tmp_path_factory, naive_wheel_dir) -> Path:
    """The naive wheel plus the real CUDA 12 plugin wheel (dist/ or its environment variable)."""
    return _real_plugin_dir(tmp_path_factory, naive_wheel_dir, 12)


@pytest.fixture
def fresh_venv(tmp_path, torch_site) -> Venv:
    return Venv(tmp_path / "venv", torch_site)
