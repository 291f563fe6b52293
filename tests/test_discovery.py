"""Backend discovery with a fake ``forge-flash-cu13`` installed in a temporary folder."""

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


@pytest.fixture
def plugin_dir(tmp_path, monkeypatch):
    """Puts a folder on sys.path where tests install a fake plugin; unloads it afterwards."""
    root = tmp_path / "site"
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [m for m in sys.modules if m.split(".")[0] == "forge_flash_cu13"]:
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


def test_a_driver_older_than_the_runtime_is_refused(plugin_dir, fake_gpu):
    install_fake_plugin(plugin_dir, driver_version=12080)
    assert ff.active_backend().name == "naive"
    reason = ff.backend_info().backends["cuda"].reason
    assert "driver supports CUDA 12.8" in reason and "CUDA 13.0" in reason
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
    assert "pip install -U 'forge-flash[cuda]'" in message
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
