"""Install paths in fresh virtual environments (CPU machine, no GPU); about a minute in all.

Tests named *_FAKE_plugin use FAKE plugin wheels (same distribution names, entry points and
binding surface, no kernels) so they run everywhere; *_REAL_plugin variants run when a real
plugin wheel for this Python is in dist/ or named by FORGE_FLASH_PLUGIN_WHEEL(_CU12).
"""

from __future__ import annotations

import pytest
from dist_helpers import SMOKE, version, write_fake_plugin_wheel

PLUGIN_SOURCES = ["fake_plugin_dir", "real_plugin_dir"]
IDS = ["FAKE_plugin", "REAL_plugin"]


def test_naive_wheel_alone_imports_and_runs_attention_on_cpu(fresh_venv, naive_wheel_dir):
    fresh_venv.pip("install", "--no-index", "--find-links", str(naive_wheel_dir), "forge-flash")
    assert "forge-flash-cu13" not in fresh_venv.installed()
    assert "forge-flash-cu12" not in fresh_venv.installed()
    fresh_venv.run([str(SMOKE), "--no-plugin"])


@pytest.mark.parametrize("wheels", PLUGIN_SOURCES, ids=IDS)
def test_cuda_extra_pulls_in_the_plugin_which_reports_no_gpu(fresh_venv, wheels, request):
    wheel_dir = request.getfixturevalue(wheels)
    fresh_venv.pip("install", "--no-index", "--find-links", str(wheel_dir), "forge-flash[cuda]")
    installed = fresh_venv.installed()
    assert installed.get("forge-flash") == version()
    assert installed.get("forge-flash-cu13") == version()
    assert "forge-flash-cu12" not in installed  # `cuda` is the CUDA 13 plugin
    # Found and loaded, unavailable with a reason (no GPU here), and the naive path answers.
    fresh_venv.run([str(SMOKE), "--expect-no-gpu"])


@pytest.mark.parametrize("wheels", ["fake_plugin_dir", "real_plugin_dir_cu12"], ids=IDS)
def test_cu12_extra_pulls_in_the_cuda_12_plugin_alone(fresh_venv, wheels, request):
    wheel_dir = request.getfixturevalue(wheels)
    fresh_venv.pip("install", "--no-index", "--find-links", str(wheel_dir), "forge-flash[cu12]")
    installed = fresh_venv.installed()
    assert installed.get("forge-flash") == version()
    assert installed.get("forge-flash-cu12") == version()
    assert "forge-flash-cu13" not in installed
    fresh_venv.run([str(SMOKE), "--expect-no-gpu", "--cuda", "12"])


def test_both_plugins_installed_are_both_listed_by_info_FAKE_plugin(fresh_venv, fake_plugin_dir):
    fresh_venv.pip(
        "install", "--no-index", "--find-links", str(fake_plugin_dir), "forge-flash[cu12,cu13]"
    )
    text = fresh_venv.run(["-m", "forge_flash", "info"]).stdout
    # Each is found, imported and refused (no GPU here; the FAKE binding has no kernels).
    assert f"forge-flash-cu13 {version()}: installed, not used: " in text
    assert f"forge-flash-cu12 {version()}: installed, not used: " in text
    # The cu13 plugin is listed first: it is the one tried first.
    assert text.index("forge-flash-cu13") < text.index("forge-flash-cu12")


@pytest.mark.parametrize("wheels", PLUGIN_SOURCES, ids=IDS)
def test_uninstalling_the_plugin_leaves_a_working_naive_package(fresh_venv, wheels, request):
    wheel_dir = request.getfixturevalue(wheels)
    fresh_venv.pip("install", "--no-index", "--find-links", str(wheel_dir), "forge-flash[cuda]")
    fresh_venv.pip("uninstall", "-y", "forge-flash-cu13")
    assert "forge-flash-cu13" not in fresh_venv.installed()
    fresh_venv.run([str(SMOKE), "--no-plugin"])


def test_plugin_of_another_version_is_refused_FAKE_plugin(fresh_venv, naive_wheel_dir, tmp_path):
    other = "0.0.1"
    assert other != version()
    write_fake_plugin_wheel(tmp_path / "other", other, f"forge-flash=={other}")
    fresh_venv.pip("install", "--no-index", "--find-links", str(naive_wheel_dir), "forge-flash")
    # --no-deps: the mismatched plugin's own pin would refuse it at install time; the run-time
    # check is what guards environments where pins were bypassed.
    fresh_venv.pip("install", "--no-deps", str(next((tmp_path / "other").glob("*.whl"))))
    proc = fresh_venv.run(
        [
            "-W",
            "always",
            "-c",
            "import forge_flash, torch; info = forge_flash.backend_info(); "
            "print('ACTIVE', info.active_backend); print('REASON', info.backends['cuda'].reason); "
            "q = torch.randn(1, 5, 2, 16); "
            "print('OUT', tuple(forge_flash.flash_attn_fwd(q, q, q).shape))",
        ]
    )
    assert "ACTIVE naive" in proc.stdout
    assert "OUT (1, 5, 2, 16)" in proc.stdout
    # The dispatch layer's promise: a RuntimeWarning naming both versions and the fix.
    assert "RuntimeWarning" in proc.stderr
    for text in (proc.stderr, proc.stdout):
        assert f"forge-flash {version()}" in text
        assert f"forge-flash-cu13 {other}" in text
        assert "must match exactly" in text
        assert f"pip install forge-flash-cu13=={version()}" in text
