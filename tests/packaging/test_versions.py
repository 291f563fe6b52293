"""The two distributions agree: one version, exact pins both ways, same build backend."""

from __future__ import annotations

import re

from dist_helpers import PLUGIN_DIR, ROOT, plugin_pyproject, root_pyproject, version


def _pin(requirements: list[str], name: str) -> str:
    """The exact version a requirement list pins `name` to (fails unless it is `==X`)."""
    pattern = re.compile(rf"^{re.escape(name)}\s*==\s*([^\s;,]+)$")
    matches = [m.group(1) for r in requirements if (m := pattern.match(r.strip()))]
    assert len(matches) == 1, f"expected one exact pin of {name} in {requirements}"
    return matches[0]


def test_plugin_pins_forge_flash_to_the_single_version():
    deps = plugin_pyproject()["project"]["dependencies"]
    assert _pin(deps, "forge-flash") == version()


def test_cuda_extras_pin_the_plugin_to_the_single_version():
    extras = root_pyproject()["project"]["optional-dependencies"]
    for extra in ("cuda", "cu13"):
        assert _pin(extras[extra], "forge-flash-cu13") == version(), extra


def test_both_pyprojects_use_the_same_exact_scikit_build_core():
    root = root_pyproject()["build-system"]["requires"]
    plugin = plugin_pyproject()["build-system"]["requires"]
    assert _pin(root, "scikit-build-core") == _pin(plugin, "scikit-build-core")
    assert _pin(plugin, "pybind11")  # pinned exactly too


def test_both_versions_come_from_version_py():
    for pyproject in (root_pyproject(), plugin_pyproject()):
        assert "version" in pyproject["project"]["dynamic"]
        assert "version" not in pyproject["project"]
    # The plugin reads _version.py through a symlink that also works inside its sdist.
    link = PLUGIN_DIR / "_forge_flash_version.py"
    assert link.is_symlink()
    assert link.resolve() == (ROOT / "python" / "forge_flash" / "_version.py").resolve()
    entries = plugin_pyproject()["tool"]["dynamic-metadata"]
    assert {
        "provider": "scikit_build_core.metadata.regex",
        "field": "version",
        "input": link.name,
    } in entries


def test_plugin_layout_and_entry_point():
    project = plugin_pyproject()["project"]
    assert project["name"] == "forge-flash-cu13"
    assert project["entry-points"]["forge_flash.backends"] == {"cuda": "forge_flash_cu13"}
    assert project["requires-python"] == root_pyproject()["project"]["requires-python"]
    skb = plugin_pyproject()["tool"]["scikit-build"]
    assert skb["cmake"]["source-dir"] == "../.."
    assert skb["wheel"]["packages"] == ["forge_flash_cu13"]
    assert (PLUGIN_DIR / "forge_flash_cu13" / "__init__.py").is_file()
    # Its own import name: the plugin never ships files inside forge_flash.
    assert not (PLUGIN_DIR / "forge_flash").exists()
