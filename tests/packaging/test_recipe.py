"""The conda recipe renders offline for every variant and agrees with the pyprojects.

Rendering uses py-rattler-build's Python API (no solve, no channel access).
"""

from __future__ import annotations

import re

import pytest
from dist_helpers import ROOT, plugin_pyproject, root_pyproject, version

rattler_build = pytest.importorskip("rattler_build", reason="py-rattler-build not installed")

RECIPE = ROOT / "recipe" / "recipe.yaml"
VARIANTS = ROOT / "recipe" / "variants.yaml"
PLATFORMS = ["linux-64", "linux-aarch64"]


def _render(platform: str) -> list:
    from rattler_build.render import RenderConfig
    from rattler_build.tool_config import PlatformConfig

    recipe = rattler_build.Stage0Recipe.from_file(str(RECIPE))
    variants = rattler_build.VariantConfig.from_file(str(VARIANTS))
    config = RenderConfig(platform=PlatformConfig(target_platform=platform))
    return [v.recipe.to_dict() for v in recipe.render(variants, config)]


@pytest.fixture(scope="module", params=PLATFORMS)
def outputs(request) -> dict[str, list[dict]]:
    """Rendered outputs by package name, one entry per distinct build (name, string)."""
    by_name: dict[str, dict[str, dict]] = {}
    for out in _render(request.param):
        key = out["build"]["string"]
        by_name.setdefault(out["package"]["name"], {})[key] = out
    return {name: list(builds.values()) for name, builds in by_name.items()}


def _specs(out: dict, kind: str) -> list[str]:
    """Requirement specs as strings (pin_subpackage entries rendered as 'name ==pin')."""
    specs = []
    for spec in out.get("requirements", {}).get(kind, []):
        if isinstance(spec, dict) and "pin_subpackage" in spec:
            pin = spec["pin_subpackage"]
            specs.append(f"{pin['name']} =={'exact' if pin.get('exact') else 'range'}")
        else:
            specs.append(str(spec))
    return specs


def _names(specs: list[str]) -> set[str]:
    return {re.split(r"[\s=<>!]", s, maxsplit=1)[0] for s in specs}


def test_every_variant_renders_with_the_single_version(outputs):
    assert set(outputs) == {
        "forge-flash",
        "forge-flash-cu13",
        "forge-flash-cu12",
        "forge-flash-backend",
    }
    for builds in outputs.values():
        for out in builds:
            assert out["package"]["version"] == version()


def test_pure_package_is_one_noarch_build_matching_pyproject(outputs):
    (pure,) = outputs["forge-flash"]  # one build for all variants
    assert pure["build"]["noarch"] == "python"
    run = _specs(pure, "run")
    # pyproject: requires-python >=3.10, dependencies torch>=2.4 (conda name: pytorch)
    requires_python = root_pyproject()["project"]["requires-python"]
    assert f"python {requires_python}" in run
    (torch_dep,) = root_pyproject()["project"]["dependencies"]
    assert torch_dep.startswith("torch")
    assert "pytorch " + torch_dep.removeprefix("torch") in run
    for plugin in ("forge-flash-cu13", "forge-flash-cu12"):
        assert f"{plugin} =={version()}" in _specs(pure, "run_constraints")


@pytest.mark.parametrize("major,cuda", [(13, "13.0"), (12, "12.9")])
def test_plugin_is_cuda_only_pins_pure_package_and_needs_a_gpu(outputs, major, cuda):
    builds = outputs[f"forge-flash-cu{major}"]
    assert {b["build"]["string"].split("_")[1] for b in builds} == {
        "py310",
        "py311",
        "py312",
        "py313",
        "py314",
    }
    pure_number = outputs["forge-flash"][0]["build"]["number"]
    for out in builds:
        assert out["build"]["string"].startswith(f"cuda{cuda.replace('.', '')}_")
        assert out["build"]["number"] == pure_number + 200
        run = _specs(out, "run")
        assert "forge-flash ==exact" in run
        assert f"__cuda >={major}" in run
        assert "cuda-arch >=8.0" in run
        host = _specs(out, "host")
        assert f"cuda-version {cuda}.*" in host
        # Built from python/plugin (13) or its rendering (12): the script (templated at build
        # time) asks tools/plugin_variant.py for the folder of the variant's major.
        script = str(out["build"]["script"])
        assert 'tools/plugin_variant.py ${{ (cuda_compiler_version | split("."))[0] }}' in script
        for dep in plugin_pyproject()["build-system"]["requires"]:
            name, pin = dep.split("==")
            assert f"{name} =={pin}" in host


def test_backend_selector_has_cpu_and_cuda_builds(outputs):
    builds = {b["build"]["string"]: b for b in outputs["forge-flash-backend"]}
    assert set(builds) == {"cpu_0", "cuda129_100", "cuda130_200"}
    cpu, cu12, cu13 = builds["cpu_0"], builds["cuda129_100"], builds["cuda130_200"]
    # The solver prefers cu13, then cu12 (each where __cuda allows it), then cpu.
    numbers = [b["build"]["number"] for b in (cpu, cu12, cu13)]
    assert numbers == sorted(numbers) and len(set(numbers)) == 3
    assert _names(_specs(cpu, "run")) == {"forge-flash"}  # a cpu-only install stays possible
    assert {"forge-flash", "forge-flash-cu13", "__cuda"} <= _names(_specs(cu13, "run"))
    assert "__cuda >=13" in _specs(cu13, "run")
    assert {"forge-flash", "forge-flash-cu12", "__cuda"} <= _names(_specs(cu12, "run"))
    assert "__cuda >=12" in _specs(cu12, "run")
    assert "forge-flash-cu13" not in _names(_specs(cu12, "run"))


def test_recipe_tests_import_the_packages_pyproject_builds(outputs):
    def imports(out: dict) -> set[str]:
        return {m for t in out.get("tests", []) for m in t.get("python", {}).get("imports", [])}

    root_packages = root_pyproject()["tool"]["scikit-build"]["wheel"]["packages"]
    assert imports(outputs["forge-flash"][0]) == {p.rsplit("/", 1)[-1] for p in root_packages}
    plugin_packages = plugin_pyproject()["tool"]["scikit-build"]["wheel"]["packages"]
    assert plugin_packages == ["forge_flash_cu13"]
    for major in (13, 12):
        for out in outputs[f"forge-flash-cu{major}"]:
            assert imports(out) == {f"forge_flash_cu{major}"}
            # pip_check defaults to true; rendered dicts omit defaults.
            assert all(t["python"].get("pip_check", True) for t in out["tests"] if "python" in t)
