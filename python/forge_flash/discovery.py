"""Which backend runs: plugin discovery, the version and GPU checks, ``FORGE_FLASH_BACKEND``.

The kernel plugin (distribution ``forge-flash-cu13``) registers ``cuda = "forge_flash_cu13"``
in the entry point group ``forge_flash.backends``. Discovery runs once, on first use, and is
cached: the hot path is one global read. It refuses a plugin whose version differs from ours
(with a ``RuntimeWarning`` that names both versions and the fix), and uses it only when torch
sees a CUDA GPU of compute capability 8.0 or newer for which the plugin holds code.

``FORGE_FLASH_BACKEND`` (read at discovery): ``auto`` (default) takes the kernels when they can
run, else the naive path; ``naive`` never loads the plugin; ``cuda`` raises ``RuntimeError``
saying why when the kernels cannot run.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import threading
import warnings
from dataclasses import asdict, dataclass, field
from types import ModuleType

import torch

from ._version import __version__
from .backends.base import Backend
from .backends.cuda import CudaBackend, kernel_device_reason
from .backends.naive import NAIVE

ENTRY_POINT_GROUP = "forge_flash.backends"
PLUGIN_ENTRY_POINT = "cuda"
PLUGIN_DISTRIBUTION = "forge-flash-cu13"
BACKEND_ENV = "FORGE_FLASH_BACKEND"
BACKEND_CHOICES = ("auto", "naive", "cuda")


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can run here, and if not, why."""

    name: str
    available: bool
    reason: str


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    capability: str
    kernels: str  # "yes", or why the plugin's kernels cannot run on it


@dataclass(frozen=True)
class BackendInfo:
    """What ``backend_info()`` reports; ``as_dict()`` gives plain data, ``format()`` text."""

    forge_flash_version: str
    torch_version: str
    torch_cuda_version: str | None
    requested_backend: str
    active_backend: str | None
    active_error: str | None
    backends: dict[str, BackendStatus]
    plugin_version: str | None = None
    plugin_cuda_version: str | None = None
    plugin_cuda_archs: list[int] = field(default_factory=list)
    plugin_ptx_archs: list[int] = field(default_factory=list)
    gpus: list[GpuInfo] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        lines = [
            f"forge-flash        {self.forge_flash_version}",
            f"torch              {self.torch_version} (CUDA {self.torch_cuda_version or 'none'})",
            f"plugin             {PLUGIN_DISTRIBUTION} {self.plugin_version or '(not loaded)'}",
        ]
        if self.plugin_version:
            lines.append(f"plugin built with  CUDA {self.plugin_cuda_version or '?'}")
            lines.append(
                f"plugin archs       SASS {self.plugin_cuda_archs or '[]'}, "
                f"PTX {self.plugin_ptx_archs or '[]'}"
            )
        lines.append(f"{BACKEND_ENV} {self.requested_backend}")
        lines.append(
            f"backend in use     {self.active_backend or 'none: ' + str(self.active_error)}"
        )
        for status in self.backends.values():
            state = "available" if status.available else "unavailable"
            lines.append(f"  {status.name:<6} {state}: {status.reason}")
        if not self.gpus:
            lines.append("GPUs               none visible to torch")
        for gpu in self.gpus:
            lines.append(
                f"GPU {gpu.index}              {gpu.name}, compute capability {gpu.capability}, "
                f"kernels: {gpu.kernels}"
            )
        return "\n".join(lines)


@dataclass
class _Plugin:
    module: ModuleType | None = None
    binding: ModuleType | None = None
    version: str | None = None
    problem: str | None = None  # why it is not usable, when it is not


@dataclass
class _State:
    requested: str
    plugin: _Plugin
    statuses: dict[str, BackendStatus]
    active: Backend | None
    error: str | None


_lock = threading.Lock()
_state: _State | None = None
_active: Backend | None = None  # the hot path reads only this


def _install_hint() -> str:
    return (
        f"pip install {PLUGIN_DISTRIBUTION}=={__version__} (or pip install -U 'forge-flash[cuda]')"
    )


def _load_plugin() -> _Plugin:
    found = [
        ep
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        if ep.name == PLUGIN_ENTRY_POINT
    ]
    if not found:
        return _Plugin(
            problem=f"no kernel plugin is installed (no {PLUGIN_ENTRY_POINT!r} entry point in "
            f"group {ENTRY_POINT_GROUP!r}); install it with: pip install 'forge-flash[cuda]'"
        )
    entry_point = found[0]
    try:
        module = entry_point.load()
        binding = importlib.import_module(module.__name__ + "._C")
    except Exception as exc:  # any import failure just disables the plugin
        return _Plugin(
            problem=f"the kernel plugin {entry_point.value!r} failed to import: "
            f"{type(exc).__name__}: {exc}"
        )
    version = getattr(module, "__version__", None)
    binding_version = getattr(binding, "__version__", version)
    if version != __version__ or binding_version != __version__:
        shown = version if version == binding_version else f"{version} (binding {binding_version})"
        problem = (
            f"forge-flash {__version__} found the kernel plugin {PLUGIN_DISTRIBUTION} {shown}; "
            f"the versions must match exactly, so the plugin is disabled and the naive path "
            f"is used. Fix: {_install_hint()}"
        )
        warnings.warn(problem, RuntimeWarning, stacklevel=4)
        return _Plugin(module=module, version=version, problem=problem)
    return _Plugin(module=module, binding=binding, version=version)


def _cuda_version_text(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10}"


def _driver_problem(binding: ModuleType) -> str | None:
    """The plugin links the CUDA runtime statically; the driver must support its major version
    (minor versions are compatible)."""
    driver, runtime = binding.driver_version(), binding.runtime_version()
    if driver // 1000 >= runtime // 1000:
        return None
    return (
        f"the NVIDIA driver supports CUDA {_cuda_version_text(driver)}, older than the "
        f"plugin's CUDA {_cuda_version_text(runtime)}; update the driver (CUDA 13 needs R580 "
        f"or newer)"
    )


def _cuda_problem(backend: CudaBackend) -> str | None:
    """Why no GPU here can run the kernels, or None when at least one can."""
    if torch.version.cuda is None:
        return f"this torch build ({torch.__version__}) has no CUDA support"
    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU (torch.cuda.is_available() is False)"
    driver_problem = _driver_problem(backend.binding)
    if driver_problem:
        return driver_problem
    reasons = []
    for index in range(torch.cuda.device_count()):
        reason = backend.device_reason(index)
        if reason is None:
            return None
        reasons.append(f"GPU {index} ({torch.cuda.get_device_name(index)}): {reason}")
    return "; ".join(reasons) or "torch sees no CUDA GPU"


def _discover() -> _State:
    requested = os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"
    statuses = {"naive": BackendStatus("naive", True, "plain PyTorch, runs everywhere")}
    if requested not in BACKEND_CHOICES:
        error = f"{BACKEND_ENV} must be one of {', '.join(BACKEND_CHOICES)}; got {requested!r}"
        statuses["cuda"] = BackendStatus("cuda", False, f"not loaded: {error}")
        return _State(requested, _Plugin(), statuses, None, error)
    if requested == "naive":
        statuses["cuda"] = BackendStatus("cuda", False, f"not loaded: {BACKEND_ENV}=naive")
        return _State(requested, _Plugin(), statuses, NAIVE, None)

    plugin = _load_plugin()
    cuda_backend: CudaBackend | None = None
    problem = plugin.problem
    if plugin.binding is not None:
        try:
            cuda_backend = CudaBackend(plugin.module, plugin.binding)  # type: ignore[arg-type]
            problem = _cuda_problem(cuda_backend)
        except Exception as exc:  # a broken binding disables the plugin, never the package
            problem = f"the kernel plugin failed its checks: {type(exc).__name__}: {exc}"
    if problem is None:
        statuses["cuda"] = BackendStatus("cuda", True, f"{PLUGIN_DISTRIBUTION} {plugin.version}")
        active, error = cuda_backend, None
    else:
        statuses["cuda"] = BackendStatus("cuda", False, problem)
        if requested == "cuda":
            active, error = None, f"{BACKEND_ENV}=cuda but the cuda backend cannot run: {problem}"
        else:
            active, error = NAIVE, None
    if active is not None and active is not NAIVE:
        statuses["naive"] = BackendStatus(
            "naive", True, "plain PyTorch; used for inputs the kernels do not take"
        )
    return _State(requested, plugin, statuses, active, error)


def _current_state() -> _State:
    global _state, _active
    with _lock:
        if _state is None:
            _state = _discover()
            _active = _state.active
        return _state


def active_backend() -> Backend:
    """The backend the public API uses (discovered on first call, then cached).

    Raises ``RuntimeError`` when ``FORGE_FLASH_BACKEND=cuda`` and the kernels cannot run, and
    ``ValueError`` when ``FORGE_FLASH_BACKEND`` holds an unknown value.
    """
    backend = _active
    if backend is not None:
        return backend
    state = _current_state()
    if state.active is None:
        if state.requested not in BACKEND_CHOICES:
            raise ValueError(state.error)
        raise RuntimeError(state.error)
    return state.active


def discovered_backend() -> Backend | None:
    """The active backend if discovery has already run, else None; never discovers or raises
    (the repeated-call shortcut uses it, so that bad input is reported before discovery)."""
    return _active


def reset() -> None:
    """Forget the cached discovery (re-reads the environment and entry points next time)."""
    global _state, _active
    with _lock:
        _state = None
        _active = None


def _gpu_infos(state: _State) -> list[GpuInfo]:
    if torch.version.cuda is None or not torch.cuda.is_available():
        return []
    binding = state.plugin.binding
    gpus = []
    for index in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(index)
        if binding is None:
            kernels = "no usable plugin (see the cuda backend's reason)"
        else:
            reason = kernel_device_reason(
                (major, minor), list(binding.cuda_archs()), list(binding.ptx_archs())
            )
            kernels = reason or "yes"
        gpus.append(GpuInfo(index, torch.cuda.get_device_name(index), f"{major}.{minor}", kernels))
    return gpus


def backend_info() -> BackendInfo:
    """Versions, the backend in use, why each other backend is not, the GPUs and plugin archs."""
    state = _current_state()
    binding = state.plugin.binding
    return BackendInfo(
        forge_flash_version=__version__,
        torch_version=torch.__version__,
        torch_cuda_version=torch.version.cuda,
        requested_backend=state.requested,
        active_backend=None if state.active is None else state.active.name,
        active_error=state.error,
        backends=dict(state.statuses),
        plugin_version=state.plugin.version,
        plugin_cuda_version=None if binding is None else str(binding.cuda_version()),
        plugin_cuda_archs=[] if binding is None else list(binding.cuda_archs()),
        plugin_ptx_archs=[] if binding is None else list(binding.ptx_archs()),
        gpus=_gpu_infos(state),
    )
