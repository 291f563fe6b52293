"""Backend discovery with fake ``forge-flash-cu13``/``forge-flash-cu12`` plugins installed in a
temporary folder, and a faked GPU and NVIDIA driver."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

import forge_flash as ff
from forge_flash import discovery
from forge_flash.backends.cuda import CudaBackend, kernel_device_reason

from helpers.fake_plugin import install_fake_plugin

pytestmark = pytest.mark.usefixtures("fresh_discovery")
PLUGIN_PACKAGES = ("forge_flash_cu12", "forge_flash_cu13")


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """Puts a folder on sys.path where tests install a fake plugin; unloads it afterwards."""
    root = tmp_path / "site"
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [m for m in sys.modules if m.split(".")[0] in PLUGIN_PACKAGES]:
        del sys.modules[name]


@pytest.fixture
def fake_gpu(monkeypatch):
    """Makes torch report one GPU; the test sets its compute capability."""
    capability = {"value": (9, 0)}
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability["value"])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Fake GPU")
    return capability


@pytest.fixture
def driver(monkeypatch):
    """The NVIDIA driver's release, as /proc/driver/nvidia/version would give it."""
    release = {"value": "550.54.15"}
    monkeypatch.setattr(discovery, "_driver_release", lambda: release["value"])
    return release


def test_without_plugin_the_naive_path_runs(plugin_dir):
    assert ff.active_backend().name == "naive"
    info = ff.backend_info()
    assert info.active_backend == "naive"
    assert info.plugin_version is None
    cuda = info.backends["cuda"]
    assert not cuda.available
    assert "no kernel plugin is installed" in cuda.reason
    assert "pip install 'forge-flash[cuda]'" in cuda.reason


def test_plugin_found_but_no_gpu(plugin_dir, monkeypatch):
    install_fake_plugin(plugin_dir)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    info = ff.backend_info()
    assert info.plugin_version == "0.1.0"
    assert info.plugin_cuda_archs == [80, 90] and info.plugin_ptx_archs == [80]
    assert info.plugin_cuda_version == "13.0"
    assert info.active_backend == "naive"
    assert "torch sees no CUDA GPU" in info.backends["cuda"].reason


def test_plugin_found_with_cpu_only_torch(plugin_dir, monkeypatch):
    install_fake_plugin(plugin_dir)
    monkeypatch.setattr(torch.version, "cuda", None)
    info = ff.backend_info()
    assert info.plugin_version == "0.1.0"
    assert "has no CUDA support" in info.backends["cuda"].reason
    assert ff.active_backend().name == "naive"


def test_plugin_found_and_used_on_a_supported_gpu(plugin_dir, fake_gpu):
    install_fake_plugin(plugin_dir)
    backend = ff.active_backend()
    assert isinstance(backend, CudaBackend) and backend.name == "cuda"
    info = ff.backend_info()
    assert info.active_backend == "cuda" and info.backends["cuda"].available
    assert [(g.name, g.capability, g.kernels) for g in info.gpus] == [("Fake GPU", "9.0", "yes")]
    text = info.format()
    assert "backend in use     cuda" in text and "SASS [80, 90]" in text


@pytest.mark.parametrize(
    "capability,sass,ptx,usable",
    [
        ((7, 5), (80, 90), (80,), False),  # too old
        ((8, 0), (80, 90), (), True),
        ((8, 6), (80,), (), True),  # 8.x runs the sm_80 SASS
        ((8, 9), (80, 90), (), True),
        ((9, 0), (80,), (), False),  # sm_90 needs 90 SASS or PTX to JIT
        ((9, 0), (80,), (80,), True),  # ... and the PTX is there
        ((12, 0), (80, 90), (80,), True),  # newer GPUs JIT the PTX
        ((12, 0), (80, 90), (), False),
    ],
)
def test_compute_capability_and_archs(plugin_dir, fake_gpu, capability, sass, ptx, usable):
    install_fake_plugin(plugin_dir, sass=sass, ptx=ptx)
    fake_gpu["value"] = capability
    assert (ff.active_backend().name == "cuda") is usable
    reason = ff.backend_info().backends["cuda"].reason
    if not usable:
        assert f"{capability[0]}.{capability[1]}" in reason


def test_a_driver_older_than_the_runtime_is_refused(plugin_dir, fake_gpu, driver):
    install_fake_plugin(plugin_dir, driver_version=12080)
    assert ff.active_backend().name == "naive"
    reason = ff.backend_info().backends["cuda"].reason
    assert "driver 550.54.15 supports CUDA 12.8" in reason and "CUDA 13.0" in reason
    assert "update the driver" in reason


def test_kernel_device_reason_table():
    assert kernel_device_reason((7, 0), [80], [80]).startswith("compute capability 7.0")
    assert kernel_device_reason((8, 6), [80], []) is None
    assert kernel_device_reason((9, 0), [80, 90], []) is None
    assert "none of which runs" in kernel_device_reason((9, 0), [80], [])


def test_version_mismatch_disables_the_plugin_with_a_warning(plugin_dir, fake_gpu):
    install_fake_plugin(plugin_dir, version="0.0.9")
    with pytest.warns(RuntimeWarning) as record:
        backend = ff.active_backend()
    assert backend.name == "naive"
    message = str(record[0].message)
    assert "0.0.9" in message and ff.__version__ in message
    assert f"pip install forge-flash-cu13=={ff.__version__}" in message
    assert "pip install -U 'forge-flash[cu13]'" in message
    info = ff.backend_info()
    assert info.plugin_version == "0.0.9" and not info.backends["cuda"].available


def test_binding_version_mismatch_is_refused_too(plugin_dir, fake_gpu):
    install_fake_plugin(plugin_dir, binding_version="0.2.0")
    with pytest.warns(RuntimeWarning, match="binding 0.2.0"):
        assert ff.active_backend().name == "naive"


def test_the_warning_is_given_once(plugin_dir, fake_gpu):
    install_fake_plugin(plugin_dir, version="0.0.9")
    with pytest.warns(RuntimeWarning):
        ff.active_backend()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ff.active_backend()
        ff.backend_info()


def test_plugin_that_fails_to_import(plugin_dir, fake_gpu):
    install_fake_plugin(plugin_dir, import_error="libcudart.so.13: cannot open shared object")
    assert ff.active_backend().name == "naive"
    reason = ff.backend_info().backends["cuda"].reason
    assert "failed to import" in reason and "libcudart.so.13" in reason


def test_forced_naive_never_loads_the_plugin(plugin_dir, fake_gpu, monkeypatch):
    install_fake_plugin(plugin_dir)
    monkeypatch.setenv("FORGE_FLASH_BACKEND", "naive")
    assert ff.active_backend().name == "naive"
    assert "forge_flash_cu13" not in sys.modules
    info = ff.backend_info()
    assert info.requested_backend == "naive"
    assert "FORGE_FLASH_BACKEND=naive" in info.backends["cuda"].reason


def test_forced_cuda_when_the_plugin_is_missing_says_why(plugin_dir, monkeypatch):
    monkeypatch.setenv("FORGE_FLASH_BACKEND", "cuda")
    with pytest.raises(RuntimeError, match=r"FORGE_FLASH_BACKEND=cuda .*no kernel plugin"):
        ff.active_backend()
    q = torch.randn(1, 2, 2, 8)
    with pytest.raises(RuntimeError, match=r"pip install 'forge-flash\[cuda\]'"):
        ff.flash_attn_fwd(q, q, q)
    info = ff.backend_info()  # reports instead of raising
    assert info.active_backend is None and "no kernel plugin" in info.active_error


def test_forced_cuda_without_a_gpu_says_why(plugin_dir, monkeypatch):
    install_fake_plugin(plugin_dir)
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setenv("FORGE_FLASH_BACKEND", "cuda")
    with pytest.raises(RuntimeError, match="has no CUDA support"):
        ff.active_backend()


def test_forced_cuda_on_a_supported_gpu(plugin_dir, fake_gpu, monkeypatch):
    install_fake_plugin(plugin_dir)
    monkeypatch.setenv("FORGE_FLASH_BACKEND", "CUDA ")
    assert ff.active_backend().name == "cuda"


def test_forced_backend_holds_for_the_block_and_restores(plugin_dir, fake_gpu, monkeypatch):
    install_fake_plugin(plugin_dir)
    monkeypatch.setenv("FORGE_FLASH_BACKEND", "auto")
    assert ff.active_backend().name == "cuda"
    with discovery.forced_backend("naive") as backend:
        assert backend.name == "naive" and ff.active_backend().name == "naive"
    assert os.environ["FORGE_FLASH_BACKEND"] == "auto"
    assert ff.active_backend().name == "cuda"  # discovered again on leaving
    monkeypatch.delenv("FORGE_FLASH_BACKEND")
    refused = pytest.raises(ValueError, match="FORGE_FLASH_BACKEND must be one of")
    with refused, discovery.forced_backend("triton"):
        pass
    assert "FORGE_FLASH_BACKEND" not in os.environ  # unset again, also after the error
    assert ff.active_backend().name == "cuda"


def test_unknown_backend_value_is_refused(monkeypatch):
    monkeypatch.setenv("FORGE_FLASH_BACKEND", "triton")
    with pytest.raises(ValueError, match=r"^FORGE_FLASH_BACKEND must be one of auto, naive, cuda"):
        ff.active_backend()
    assert "triton" in ff.backend_info().active_error


def test_discovery_is_cached_until_reset(plugin_dir, fake_gpu):
    assert ff.active_backend().name == "naive"
    install_fake_plugin(plugin_dir)
    assert ff.active_backend().name == "naive"  # cached
    discovery.reset()
    assert ff.active_backend().name == "cuda"


def test_info_command_shows_the_plugin(tmp_path):
    root = install_fake_plugin(tmp_path / "site")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), *sys.path]))
    env.pop("FORGE_FLASH_BACKEND", None)
    result = subprocess.run(
        [sys.executable, "-m", "forge_flash", "info"],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    assert "forge-flash-cu13 0.1.0" in result.stdout
    assert f"forge-flash        {ff.__version__}" in result.stdout
    assert "backend in use     naive" in result.stdout


# --- two plugins (CUDA 12 and 13) and the driver that decides between them ---


def _states(info) -> dict[str, tuple[str, str]]:
    return {p.distribution: (p.state, p.reason) for p in info.plugins}


def test_a_driver_for_cuda_13_uses_cu13_and_never_imports_cu12(plugin_dir, fake_gpu, driver):
    driver["value"] = "580.65.06"
    install_fake_plugin(plugin_dir, cuda_major=12, driver_version=13000)
    install_fake_plugin(plugin_dir, cuda_major=13, driver_version=13000)
    assert ff.active_backend().plugin.__name__ == "forge_flash_cu13"
    assert "forge_flash_cu12" not in sys.modules
    info = ff.backend_info()
    assert info.backends["cuda"].reason == "forge-flash-cu13 0.1.0"
    assert info.plugin_cuda_version == "13.0" and info.driver == "580.65.06 (CUDA 13.0)"
    assert _states(info) == {
        "forge-flash-cu13": ("in use", "CUDA 13.0"),
        "forge-flash-cu12": (
            "not loaded",
            "forge-flash-cu13 is newer and the driver 580.65.06 (CUDA 13.0) runs it",
        ),
    }
    text = info.format()
    assert "NVIDIA driver      580.65.06 (CUDA 13.0)" in text
    assert "forge-flash-cu13 0.1.0: in use (CUDA 13.0)" in text
    assert (
        "forge-flash-cu12: installed, not loaded: forge-flash-cu13 is newer and the driver "
        "580.65.06 (CUDA 13.0) runs it"
    ) in text


def test_a_driver_for_cuda_12_only_uses_cu12_and_says_why_not_cu13(plugin_dir, fake_gpu, driver):
    install_fake_plugin(plugin_dir, cuda_major=13, driver_version=12040)
    install_fake_plugin(plugin_dir, cuda_major=12, driver_version=12040)
    backend = ff.active_backend()
    assert backend.name == "cuda" and backend.plugin.__name__ == "forge_flash_cu12"
    assert discovery.plugin_binding() is sys.modules["forge_flash_cu12._C"]
    info = ff.backend_info()
    assert info.backends["cuda"].reason == "forge-flash-cu12 0.1.0"
    assert info.plugin_cuda_version == "12.0" and info.driver == "550.54.15 (CUDA 12.4)"
    states = _states(info)
    assert states["forge-flash-cu12"] == ("in use", "CUDA 12.0")
    state, reason = states["forge-flash-cu13"]
    assert state == "not used"
    assert "driver 550.54.15 supports CUDA 12.4, older than the plugin's CUDA 13.0" in reason
    assert "CUDA 13 needs R580 or newer" in reason
    text = info.format()
    assert "backend in use     cuda" in text
    assert "forge-flash-cu12 0.1.0: in use (CUDA 12.0)" in text
    assert "forge-flash-cu13 0.1.0: installed, not used: the NVIDIA driver 550.54.15" in text


def test_a_newer_driver_runs_the_cuda_12_plugin_alone(plugin_dir, fake_gpu, driver):
    install_fake_plugin(plugin_dir, cuda_major=12, driver_version=13010)
    assert ff.active_backend().plugin.__name__ == "forge_flash_cu12"
    assert [p.state for p in ff.backend_info().plugins] == ["in use"]


def test_cu13_alone_on_an_old_driver_points_to_cu12(plugin_dir, fake_gpu, driver):
    install_fake_plugin(plugin_dir, cuda_major=13, driver_version=12080)
    assert ff.active_backend().name == "naive"
    reason = ff.backend_info().backends["cuda"].reason
    assert "driver 550.54.15 supports CUDA 12.8" in reason
    assert "use forge-flash-cu12 (pip install 'forge-flash[cu12]')" in reason


def test_a_driver_too_old_for_both_refuses_both_and_says_why(plugin_dir, fake_gpu, driver):
    driver["value"] = "520.61.05"
    install_fake_plugin(plugin_dir, cuda_major=13, driver_version=11080)
    install_fake_plugin(plugin_dir, cuda_major=12, driver_version=11080)
    assert ff.active_backend().name == "naive"
    info = ff.backend_info()
    assert [p.state for p in info.plugins] == ["not used", "not used"]
    reason = info.backends["cuda"].reason
    assert "forge-flash-cu13: the NVIDIA driver 520.61.05 supports CUDA 11.8" in reason
    assert "forge-flash-cu12: the NVIDIA driver 520.61.05 supports CUDA 11.8" in reason
    assert "CUDA 12 needs R525 or newer" in reason
    assert info.driver == "520.61.05 (CUDA 11.8)"


def test_cu12_takes_over_when_cu13_fails_to_import(plugin_dir, fake_gpu, driver):
    install_fake_plugin(plugin_dir, cuda_major=13, import_error="libfoo.so: cannot open")
    install_fake_plugin(plugin_dir, cuda_major=12)
    assert ff.active_backend().plugin.__name__ == "forge_flash_cu12"
    state, reason = _states(ff.backend_info())["forge-flash-cu13"]
    assert state == "not used" and "failed to import" in reason and "libfoo.so" in reason


def test_cu12_takes_over_from_a_cu13_of_another_version(plugin_dir, fake_gpu, driver):
    install_fake_plugin(plugin_dir, cuda_major=13, version="0.0.9")
    install_fake_plugin(plugin_dir, cuda_major=12)
    with pytest.warns(RuntimeWarning, match=r"forge-flash-cu13 0\.0\.9"):
        assert ff.active_backend().plugin.__name__ == "forge_flash_cu12"
    info = ff.backend_info()
    assert info.plugin_version == "0.1.0"  # the plugin in use, not the refused one
    assert _states(info)["forge-flash-cu13"][0] == "not used"


def test_a_cu12_version_mismatch_names_its_own_fix(plugin_dir, fake_gpu, driver):
    install_fake_plugin(plugin_dir, cuda_major=12, version="0.0.9")
    with pytest.warns(RuntimeWarning) as record:
        assert ff.active_backend().name == "naive"
    message = str(record[0].message)
    assert f"pip install forge-flash-cu12=={ff.__version__}" in message
    assert "pip install -U 'forge-flash[cu12]'" in message


def test_without_a_gpu_both_plugins_give_one_reason(plugin_dir, monkeypatch):
    install_fake_plugin(plugin_dir, cuda_major=13)
    install_fake_plugin(plugin_dir, cuda_major=12)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    info = ff.backend_info()
    assert info.backends["cuda"].reason.startswith("torch sees no CUDA GPU")
    assert "forge-flash-cu12" not in info.backends["cuda"].reason
    assert [p.state for p in info.plugins] == ["not used", "not used"]


def test_info_tells_not_installed_from_installed_but_not_loaded(plugin_dir, monkeypatch):
    text = ff.backend_info().format()
    assert "plugins            none installed; pip install 'forge-flash[cuda]'" in text
    assert "'forge-flash[cu12]' (CUDA 12, driver R525 or newer)" in text
    install_fake_plugin(plugin_dir, cuda_major=12)
    monkeypatch.setenv("FORGE_FLASH_BACKEND", "naive")
    discovery.reset()
    info = ff.backend_info()
    assert _states(info) == {
        "forge-flash-cu12": ("not loaded", "FORGE_FLASH_BACKEND=naive"),
    }
    assert "forge-flash-cu12: installed, not loaded: FORGE_FLASH_BACKEND=naive" in info.format()
    assert "none installed" not in info.format()


def test_driver_release_is_read_from_the_kernel_module_version(tmp_path, monkeypatch):
    proc = tmp_path / "version"
    monkeypatch.setattr(discovery, "_DRIVER_VERSION_FILE", proc)
    assert discovery._driver_release() is None  # no NVIDIA kernel module
    proc.write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
        "GCC version:  gcc version 12.3.0\n"
    )
    assert discovery._driver_release() == "550.54.15"
    proc.write_text(
        "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  "
        "(dvs-builder@U16-I3-B03-4-3)  Sun Jul 27 06:54:38 UTC 2025\n"
    )
    assert discovery._driver_release() == "580.65.06"


def test_info_command_names_the_plugin_in_use_and_why_not_the_other(tmp_path):
    root = tmp_path / "site"
    install_fake_plugin(root, cuda_major=13)
    install_fake_plugin(root, cuda_major=12)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), *sys.path]))
    env.pop("FORGE_FLASH_BACKEND", None)
    result = subprocess.run(
        [sys.executable, "-m", "forge_flash", "info"],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    lines = result.stdout.splitlines()
    cu13 = next(line for line in lines if "forge-flash-cu13 0.1.0: installed, not used" in line)
    cu12 = next(line for line in lines if "forge-flash-cu12 0.1.0: installed, not used" in line)
    # No GPU here: both are refused for that one reason.
    assert "torch" in cu13 and "torch" in cu12
