"""Helpers for the packaging tests: repository facts, the FAKE plugin wheel, fresh venvs."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_DIR = ROOT / "python" / "plugin"
SMOKE = ROOT / "tools" / "smoke_plugin.py"


def version() -> str:
    text = (ROOT / "python" / "forge_flash" / "_version.py").read_text()
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.MULTILINE)
    assert match, "python/forge_flash/_version.py has no __version__"
    return match.group(1)


def root_pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def plugin_pyproject() -> dict:
    return tomllib.loads((PLUGIN_DIR / "pyproject.toml").read_text())


# --- the FAKE plugin: same distribution name, entry point and binding surface, no kernels ---

_FAKE_BINDING = '''"""FAKE forge_flash_cu{major}._C: the real module's surface, no kernels."""
__version__ = {version!r}


def cuda_archs():
    return [80, 90]


def ptx_archs():
    return [80]


def cuda_version():
    return "{major}.0"


def runtime_version():
    return 0


def driver_version():
    return 0


def max_head_dim():
    return 256


def fwd(*args):
    raise RuntimeError("FAKE plugin: no kernels")


def varlen_fwd(*args):
    raise RuntimeError("FAKE plugin: no kernels")
'''

_FAKE_INIT = '''"""FAKE forge-flash-cu{major} plugin package (packaging tests only)."""
from forge_flash_cu{major} import _C

__version__ = _C.__version__
'''


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def write_fake_plugin_wheel(
    out_dir: Path, plugin_version: str, requires: str, cuda_major: int = 13
) -> Path:
    """A pure wheel named forge-flash-cu<major> with the plugin's entry point and a stub ``_C``."""
    package = f"forge_flash_cu{cuda_major}"
    dist_info = f"{package}-{plugin_version}.dist-info"
    files = {
        f"{package}/__init__.py": _FAKE_INIT.format(major=cuda_major).encode(),
        f"{package}/_C.py": _FAKE_BINDING.format(version=plugin_version, major=cuda_major).encode(),
        f"{dist_info}/METADATA": (
            f"Metadata-Version: 2.1\nName: forge-flash-cu{cuda_major}\n"
            f"Version: {plugin_version}\nSummary: FAKE plugin for packaging tests\n"
            f"Requires-Dist: {requires}\n"
        ).encode(),
        f"{dist_info}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: forge-flash-tests\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n"
        ),
        f"{dist_info}/entry_points.txt": (
            f"[forge_flash.backends]\ncu{cuda_major} = {package}\n".encode()
        ),
    }
    record = [_record_line(name, data) for name, data in files.items()]
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    wheel = out_dir / f"{package}-{plugin_version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return wheel


def real_plugin_wheel(cuda_major: int = 13) -> Path | None:
    """A real plugin wheel for this interpreter: $FORGE_FLASH_PLUGIN_WHEEL (CUDA 13) or
    $FORGE_FLASH_PLUGIN_WHEEL_CU12, else one in dist/."""
    suffix = "" if cuda_major == 13 else f"_CU{cuda_major}"
    explicit = os.environ.get(f"FORGE_FLASH_PLUGIN_WHEEL{suffix}")
    if explicit:
        return Path(explicit)
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    pattern = f"forge_flash_cu{cuda_major}-{version()}-{tag}-{tag}-*linux*.whl"
    found = sorted((ROOT / "dist").glob(pattern))
    return found[-1] if found else None


# --- fresh virtual environments ---


class Venv:
    """A fresh venv. torch comes from a shared, torch-only venv through a .pth file, so each
    scenario starts with none of our packages and costs seconds, not a torch install."""

    def __init__(self, path: Path, torch_site: Path) -> None:
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        self.python = str(path / "bin" / "python")
        site = self.run_py("import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
        (Path(site) / "_torch_only_site.pth").write_text(str(torch_site) + "\n")
        # ensurepip's old setuptools would shadow the torch site's newer one, which torch needs.
        self.pip("uninstall", "-q", "-y", "setuptools", check=False)

    def run_py(self, code: str, **kwargs) -> str:
        return self.run(["-c", code], **kwargs).stdout

    def run(self, args: list[str], check: bool = True, env: dict | None = None):
        full_env = dict(os.environ)
        full_env.pop("FORGE_FLASH_BACKEND", None)
        full_env.update(env or {})
        proc = subprocess.run(
            [self.python, *args], capture_output=True, text=True, env=full_env, cwd="/"
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def pip(self, *args: str, check: bool = True):
        return self.run(["-m", "pip", "--disable-pip-version-check", *args], check=check)

    def installed(self) -> dict[str, str]:
        out = self.run_py(
            "import importlib.metadata as m, json, sys; "
            "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions("
            "path=[p for p in sys.path if 'torch_only' not in p])}))"
        )
        import json

        return json.loads(out)
