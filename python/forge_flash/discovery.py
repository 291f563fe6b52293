"""Which backend runs: plugin discovery; the version, driver and GPU checks; the env override.

Kernel plugins register in the entry point group ``forge_flash.backends`` under their CUDA
major: ``cu13 = "forge_flash_cu13"`` (distribution ``forge-flash-cu13``, driver R580+) and
``cu12 = "forge_flash_cu12"`` (``forge-flash-cu12``, built with CUDA 12.4, driver R525+).
Discovery runs once, on first use, and is cached: the hot path is one global read. It tries the
installed plugins newest CUDA major first and uses the first that imports, has exactly our
version (else a ``RuntimeWarning`` that names both versions and the fix), whose CUDA runtime
the NVIDIA driver supports, and for which torch sees a GPU of compute capability 8.0 or newer
that the plugin holds code for. The plugins after it are not imported.

``FORGE_FLASH_BACKEND`` (read at discovery): ``auto`` (default) takes the kernels when they can
run, else the naive path; ``naive`` never loads a plugin; ``cuda`` raises ``RuntimeError``
saying why when the kernels cannot run.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import os
import re
import threading
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType

import torch

from ._version import __version__
from .backends.base import Backend
from .backends.cuda import CudaBackend, kernel_device_reason
from .backends.naive import NAIVE

ENTRY_POINT_GROUP = "forge_flash.backends"
BACKEND_ENV = "FORGE_FLASH_BACKEND"
BACKEND_CHOICES = ("auto", "naive", "cuda")
# The plugins there are, by CUDA major, with the oldest driver branch that runs each.
PLUGIN_MIN_DRIVER = {13: "R580", 12: "R525"}
_ENTRY_POINT_NAME = re.compile(r"^cu(\d+)$")
_DRIVER_VERSION_FILE = Path("/proc/driver/nvidia/version")


def plugin_distribution(cuda_major: int) -> str:
    return f"forge-flash-cu{cuda_major}"


def _install_any_hint() -> str:
    return (
        "pip install 'forge-flash[cuda]' (CUDA 13, NVIDIA driver R580 or newer) or "
        "pip install 'forge-flash[cu12]' (CUDA 12, driver R525 or newer)"
    )


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can run here, and if not, why."""

    name: str
    available: bool
    reason: str


@dataclass(frozen=True)
class PluginStatus:
    """One installed kernel plugin: whether discovery loaded and uses it, and if not, why."""

    distribution: str  # forge-flash-cu13
    cuda_major: int
    version: str | None  # None when it was not imported
    state: str  # "in use", "not used" (imported, then refused) or "not loaded" (never imported)
    reason: str  # why not, or what it was built with when in use


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    capability: str
    kernels: str  # "yes", or why the plugin's kernels cannot run on it


@dataclass(frozen=True)
class BackendInfo:
    """What ``backend_info()`` reports; ``as_dict()`` gives plain data, ``format()`` text.

    ``plugin_*`` describe the plugin in use, else the newest one that was imported; ``plugins``
    lists every installed plugin with its state.
    """

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
    plugins: list[PluginStatus] = field(default_factory=list)
    driver: str | None = None  # "580.65.06 (CUDA 13.0)", when a plugin could ask the driver

    def as_dict(self) -> dict:
        return asdict(self)

    def format(self) -> str:
        lines = [
            f"forge-flash        {self.forge_flash_version}",
            f"torch              {self.torch_version} (CUDA {self.torch_cuda_version or 'none'})",
            f"NVIDIA driver      {self.driver or 'unknown (no plugin asked it)'}",
        ]
        if not self.plugins:
            lines.append(f"plugins            none installed; {_install_any_hint()}")
        for i, plugin in enumerate(self.plugins):
            head = "plugins            " if i == 0 else " " * 19
            version = f" {plugin.version}" if plugin.version else ""
            if plugin.state == "in use":
                lines.append(f"{head}{plugin.distribution}{version}: in use ({plugin.reason})")
            else:
                lines.append(
                    f"{head}{plugin.distribution}{version}: installed, {plugin.state}: "
                    f"{plugin.reason}"
                )
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
    entry_point: importlib.metadata.EntryPoint
    cuda_major: int
    distribution: str
    module: ModuleType | None = None
    binding: ModuleType | None = None
    version: str | None = None
    problem: str | None = None  # why it is not usable, when it is not
    loaded: bool = False  # imported (successfully or not)

    def status(self, in_use: bool) -> PluginStatus:
        if in_use:
            state, reason = "in use", f"CUDA {self.binding.cuda_version()}"  # type: ignore[union-attr]
        else:
            state, reason = ("not used" if self.loaded else "not loaded"), str(self.problem)
        return PluginStatus(self.distribution, self.cuda_major, self.version, state, reason)


@dataclass
class _State:
    requested: str
    plugins: list[_Plugin]  # newest CUDA major first
    chosen: _Plugin | None  # the plugin whose kernels run
    statuses: dict[str, BackendStatus]
    active: Backend | None
    error: str | None
    driver: str | None = None

    @property
    def plugin(self) -> _Plugin | None:
        """The plugin ``backend_info()``'s plugin_* fields describe."""
        if self.chosen is not None:
            return self.chosen
        return next((p for p in self.plugins if p.module is not None), None)


_lock = threading.Lock()
_state: _State | None = None
_active: Backend | None = None  # the hot path reads only this


def _install_hint(plugin: _Plugin) -> str:
    return (
        f"pip install {plugin.distribution}=={__version__} "
        f"(or pip install -U 'forge-flash[cu{plugin.cuda_major}]')"
    )


def _installed_plugins() -> list[_Plugin]:
    """The plugins' entry points, newest CUDA major first; nothing is imported."""
    plugins = []
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        match = _ENTRY_POINT_NAME.match(entry_point.name)
        if match is None:  # not a kernel plugin of ours (cu<major>)
            continue
        major = int(match.group(1))
        dist = entry_point.dist.name if entry_point.dist else plugin_distribution(major)
        plugins.append(_Plugin(entry_point, major, dist))
    return sorted(plugins, key=lambda p: p.cuda_major, reverse=True)


def _load_plugin(plugin: _Plugin) -> None:
    """Import the plugin and check its version; fills module, binding, version or problem."""
    plugin.loaded = True
    try:
        module = plugin.entry_point.load()
        binding = importlib.import_module(module.__name__ + "._C")
    except Exception as exc:  # any import failure just disables the plugin
        plugin.problem = (
            f"the kernel plugin {plugin.entry_point.value!r} failed to import: "
            f"{type(exc).__name__}: {exc}"
        )
        return
    plugin.module = module
    plugin.version = version = getattr(module, "__version__", None)
    binding_version = getattr(binding, "__version__", version)
    if version != __version__ or binding_version != __version__:
        shown = version if version == binding_version else f"{version} (binding {binding_version})"
        plugin.problem = (
            f"forge-flash {__version__} found the kernel plugin {plugin.distribution} {shown}; "
            f"the versions must match exactly, so the plugin is disabled. "
            f"Fix: {_install_hint(plugin)}"
        )
        warnings.warn(plugin.problem, RuntimeWarning, stacklevel=5)
        return
    plugin.binding = binding


def _cuda_version_text(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10}"


def _driver_release() -> str | None:
    """The NVIDIA kernel module's version (e.g. 550.54.15), from /proc on Linux; else None."""
    try:
        text = _DRIVER_VERSION_FILE.read_text()
    except OSError:
        return None
    match = re.search(r"Kernel Module\s+(?:for \S+\s+)?(\d+\.\d+(?:\.\d+)?)", text)
    return match.group(1) if match else None


def _driver_text(binding: ModuleType) -> str | None:
    """'550.54.15 (CUDA 12.4)': the driver's release and the newest CUDA it supports."""
    supported = binding.driver_version()
    if not supported:
        return None
    release = _driver_release()
    cuda = f"CUDA {_cuda_version_text(supported)}"
    return f"{release} ({cuda})" if release else f"{cuda} (release unknown)"


def _driver_problem(plugin: _Plugin) -> str | None:
    """The plugin links the CUDA runtime statically; the driver must support its major version
    (minor versions are compatible)."""
    binding = plugin.binding
    driver, runtime = binding.driver_version(), binding.runtime_version()  # type: ignore[union-attr]
    if driver // 1000 >= runtime // 1000:
        return None
    release = _driver_release()
    major = runtime // 1000
    problem = (
        f"the NVIDIA driver{f' {release}' if release else ''} supports CUDA "
        f"{_cuda_version_text(driver)}, older than the plugin's CUDA {_cuda_version_text(runtime)}"
        f"; update the driver (CUDA {major} needs {PLUGIN_MIN_DRIVER.get(major, 'a newer one')} "
        f"or newer)"
    )
    older = [m for m in PLUGIN_MIN_DRIVER if m < major and m <= driver // 1000]
    if older:
        problem += f" or use {plugin_distribution(max(older))} (pip install "
        problem += f"'forge-flash[cu{max(older)}]')"
    return problem


def _cuda_problem(plugin: _Plugin, backend: CudaBackend) -> str | None:
    """Why no GPU here can run the plugin's kernels, or None when at least one can."""
    if torch.version.cuda is None:
        return f"this torch build ({torch.__version__}) has no CUDA support"
    if not torch.cuda.is_available():
        return "torch sees no CUDA GPU (torch.cuda.is_available() is False)"
    driver_problem = _driver_problem(plugin)
    if driver_problem:
        return driver_problem
    reasons = []
    for index in range(torch.cuda.device_count()):
        reason = backend.device_reason(index)
        if reason is None:
            return None
        reasons.append(f"GPU {index} ({torch.cuda.get_device_name(index)}): {reason}")
    return "; ".join(reasons) or "torch sees no CUDA GPU"


def _try_plugin(plugin: _Plugin) -> CudaBackend | None:
    """Load the plugin and run its checks: its backend, or None with ``plugin.problem`` set."""
    _load_plugin(plugin)
    if plugin.binding is None:
        return None
    try:
        backend = CudaBackend(plugin.module, plugin.binding)  # type: ignore[arg-type]
        plugin.problem = _cuda_problem(plugin, backend)
    except Exception as exc:  # a broken binding disables the plugin, never the package
        plugin.problem = f"the kernel plugin failed its checks: {type(exc).__name__}: {exc}"
    return backend if plugin.problem is None else None


def _cuda_reason(plugins: list[_Plugin]) -> str:
    """Why the cuda backend is unavailable: the plugins' reasons, each said once."""
    if not plugins:
        return (
            f"no kernel plugin is installed (no cu<major> entry point in group "
            f"{ENTRY_POINT_GROUP!r}); install one with: {_install_any_hint()}"
        )
    reasons = list(dict.fromkeys(str(p.problem) for p in plugins))
    if len(reasons) == 1:
        return reasons[0]
    return "; ".join(f"{p.distribution}: {p.problem}" for p in plugins)


def _discover() -> _State:
    requested = os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"
    statuses = {"naive": BackendStatus("naive", True, "plain PyTorch, runs everywhere")}
    plugins = _installed_plugins()
    if requested not in BACKEND_CHOICES or requested == "naive":
        if requested == "naive":
            why, active, error = f"{BACKEND_ENV}=naive", NAIVE, None
        else:
            error = f"{BACKEND_ENV} must be one of {', '.join(BACKEND_CHOICES)}; got {requested!r}"
            why, active = error, None
        for plugin in plugins:
            plugin.problem = why
        statuses["cuda"] = BackendStatus("cuda", False, f"not loaded: {why}")
        return _State(requested, plugins, None, statuses, active, error)

    chosen: _Plugin | None = None
    cuda_backend: CudaBackend | None = None
    driver: str | None = None
    for plugin in plugins:
        cuda_backend = _try_plugin(plugin)
        if driver is None and plugin.binding is not None:
            driver = _driver_text(plugin.binding)
        if cuda_backend is not None:
            chosen = plugin
            break
    if chosen is not None:
        for plugin in plugins:
            if not plugin.loaded:
                plugin.problem = (
                    f"{chosen.distribution} is newer and the driver"
                    f"{f' {driver}' if driver else ''} runs it"
                )
        statuses["cuda"] = BackendStatus("cuda", True, f"{chosen.distribution} {chosen.version}")
        statuses["naive"] = BackendStatus(
            "naive", True, "plain PyTorch; used for inputs the kernels do not take"
        )
        return _State(requested, plugins, chosen, statuses, cuda_backend, None, driver)
    problem = _cuda_reason(plugins)
    statuses["cuda"] = BackendStatus("cuda", False, problem)
    if requested == "cuda":
        active, error = None, f"{BACKEND_ENV}=cuda but the cuda backend cannot run: {problem}"
    else:
        active, error = NAIVE, None
    return _State(requested, plugins, None, statuses, active, error, driver)


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


@contextlib.contextmanager
def forced_backend(name: str) -> Iterator[Backend]:
    """The calls inside the block on backend ``name`` (``FORGE_FLASH_BACKEND`` set for the block,
    discovery run again on entering and on leaving; not thread-safe): for the tests and the lab
    tools that set the kernels beside the naive path, which defines every option's semantics.
    Yields the backend; raises as active_backend does when ``name`` cannot run here."""
    previous = os.environ.get(BACKEND_ENV)
    os.environ[BACKEND_ENV] = name
    reset()
    try:
        yield active_backend()
    finally:
        if previous is None:
            os.environ.pop(BACKEND_ENV, None)
        else:
            os.environ[BACKEND_ENV] = previous
        reset()


def plugin_binding() -> ModuleType | None:
    """The compiled binding (``forge_flash_cu<major>._C``) of the plugin in use, or None."""
    chosen = _current_state().chosen
    return None if chosen is None else chosen.binding


def _gpu_infos(state: _State) -> list[GpuInfo]:
    if torch.version.cuda is None or not torch.cuda.is_available():
        return []
    plugin = state.plugin
    binding = None if plugin is None else plugin.binding
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
    """Versions, the backend in use, why each other backend is not, the installed plugins and
    why each is (not) used, the driver, the GPUs and plugin archs."""
    state = _current_state()
    plugin = state.plugin
    binding = None if plugin is None else plugin.binding
    return BackendInfo(
        forge_flash_version=__version__,
        torch_version=torch.__version__,
        torch_cuda_version=torch.version.cuda,
        requested_backend=state.requested,
        active_backend=None if state.active is None else state.active.name,
        active_error=state.error,
        backends=dict(state.statuses),
        plugin_version=None if plugin is None else plugin.version,
        plugin_cuda_version=None if binding is None else str(binding.cuda_version()),
        plugin_cuda_archs=[] if binding is None else list(binding.cuda_archs()),
        plugin_ptx_archs=[] if binding is None else list(binding.ptx_archs()),
        gpus=_gpu_infos(state),
        plugins=[p.status(p is state.chosen) for p in state.plugins],
        driver=state.driver,
    )
