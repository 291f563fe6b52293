"""The two distributions agree: one version, exact pins both ways, same build backend."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from dist_helpers import PLUGIN_DIR, ROOT, plugin_pyproject, root_pyproject, tomllib, version

_spec = importlib.util.spec_from_file_location("plugin_variant", ROOT / "tools/plugin_variant.py")
plugin_variant = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plugin_variant)


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
    # `cuda` is the CUDA 13 plugin (docs/building.md says why); cu12 and cu13 name theirs.
    for extra, plugin in (("cuda", "forge-flash-cu13"), ("cu13", "forge-flash-cu13")):
        assert _pin(extras[extra], plugin) == version(), extra
        assert len(extras[extra]) == 1
    assert _pin(extras["cu12"], "forge-flash-cu12") == version()
    assert len(extras["cu12"]) == 1


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
    assert project["entry-points"]["forge_flash.backends"] == {"cu13": "forge_flash_cu13"}
    assert project["requires-python"] == root_pyproject()["project"]["requires-python"]
    skb = plugin_pyproject()["tool"]["scikit-build"]
    assert skb["cmake"]["source-dir"] == "../.."
    assert skb["wheel"]["packages"] == ["forge_flash_cu13"]
    assert (PLUGIN_DIR / "forge_flash_cu13" / "__init__.py").is_file()
    # Its own import name: the plugin never ships files inside forge_flash.
    assert not (PLUGIN_DIR / "forge_flash").exists()


# --- the CUDA 12 plugin: rendered from python/plugin by tools/plugin_variant.py ---


def _cu12() -> tuple[Path, dict]:
    folder = plugin_variant.plugin_dir(12)
    return folder, tomllib.loads((folder / "pyproject.toml").read_text())


def test_cu12_plugin_is_the_same_pyproject_for_cuda_12():
    folder, cu12 = _cu12()
    project, cu13 = cu12["project"], plugin_pyproject()["project"]
    assert project["name"] == "forge-flash-cu12"
    assert project["entry-points"]["forge_flash.backends"] == {"cu12": "forge_flash_cu12"}
    assert _pin(project["dependencies"], "forge-flash") == version()  # exact pin back
    assert "Environment :: GPU :: NVIDIA CUDA :: 12" in project["classifiers"]
    assert "CUDA 12" in project["description"]
    skb = cu12["tool"]["scikit-build"]
    assert skb["wheel"]["packages"] == ["forge_flash_cu12"]
    assert skb["cmake"]["define"]["FORGE_FLASH_CUDA_MAJOR"] == "12"
    assert skb["cmake"]["source-dir"] == "../.."  # two levels below the root, like python/plugin
    assert folder.parent.parent == ROOT
    # Nothing else differs: same build requirements, metadata source and settings.
    assert cu12["build-system"] == plugin_pyproject()["build-system"]
    assert cu12["tool"]["dynamic-metadata"] == plugin_pyproject()["tool"]["dynamic-metadata"]
    for key in ("requires-python", "dynamic", "license", "readme", "keywords"):
        assert project[key] == cu13[key], key
    text = (folder / "pyproject.toml").read_text()
    assert "cu13" not in text and "CUDA 13" not in text and "CUDA :: 13" not in text


def test_cu12_plugin_folder_holds_its_own_package_and_the_single_version():
    folder, _ = _cu12()
    init = (folder / "forge_flash_cu12" / "__init__.py").read_text()
    assert "from forge_flash_cu12 import _C" in init and "cu13" not in init
    assert not (folder / "forge_flash_cu13").exists()
    link = folder / "_forge_flash_version.py"
    assert link.is_symlink()
    assert link.resolve() == (ROOT / "python" / "forge_flash" / "_version.py").resolve()
    for name in ("LICENSE", "README.md"):
        assert (folder / name).read_bytes() == (PLUGIN_DIR / name).read_bytes()
    # Every path the sdist takes from outside the folder resolves from there too.
    force = _cu12()[1]["tool"]["scikit-build"]["sdist"]["force-include"]
    for source in force:
        assert (folder / source).exists(), source


def test_the_cuda_major_defaults_agree():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert 'set(FORGE_FLASH_CUDA_MAJOR "13" CACHE STRING' in cmake
    assert "DESTINATION forge_flash_cu${FORGE_FLASH_CUDA_MAJOR}" in cmake
    define = plugin_pyproject()["tool"]["scikit-build"]["cmake"]["define"]
    assert define["FORGE_FLASH_CUDA_MAJOR"] == str(plugin_variant.SOURCE_MAJOR) == "13"
