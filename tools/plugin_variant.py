"""The kernel plugin for one CUDA major, from the one source folder python/plugin/.

python/plugin/ is the CUDA 13 plugin (forge-flash-cu13, import package forge_flash_cu13) as
committed. A distribution's name cannot be chosen at build time (PEP 621 keeps `name` static),
so the plugin of another CUDA major is rendered, never committed: build/plugin-cu<major>/ gets
the same pyproject.toml and package with every cu13 / CUDA 13 mark swapped, and links to the rest.
CMake reads the major from the rendered pyproject (FORGE_FLASH_CUDA_MAJOR) and refuses a toolkit
of another major.

    python tools/plugin_variant.py 12     # prints the folder to build: pip wheel / cibuildwheel
    python tools/plugin_variant.py 13     # prints python/plugin itself
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "python" / "plugin"
SOURCE_MAJOR = 13
MAJORS = (12, 13)
# Files rendered (their CUDA-major marks swapped); everything else is linked or copied as is.
_RENDERED = ("pyproject.toml", f"forge_flash_cu{SOURCE_MAJOR}/__init__.py")


def distribution(major: int) -> str:
    return f"forge-flash-cu{major}"


def import_package(major: int) -> str:
    return f"forge_flash_cu{major}"


def render_text(text: str, major: int) -> str:
    """Swap the CUDA-major marks of python/plugin's files (cu13, CUDA 13, CUDA :: 13)."""
    src = str(SOURCE_MAJOR)
    dst = str(major)
    for old, new in (
        (f"cu{src}", f"cu{dst}"),
        (f"CUDA :: {src}", f"CUDA :: {dst}"),
        (f"CUDA {src}", f"CUDA {dst}"),
        (f'FORGE_FLASH_CUDA_MAJOR = "{src}"', f'FORGE_FLASH_CUDA_MAJOR = "{dst}"'),
    ):
        text = text.replace(old, new)
    return text


def plugin_dir(major: int) -> Path:
    """The folder holding the plugin of ``major``: python/plugin, or a fresh rendering of it."""
    if major not in MAJORS:
        raise ValueError(f"major must be one of {MAJORS}; got {major!r}")
    if major == SOURCE_MAJOR:
        return PLUGIN
    out = ROOT / "build" / f"plugin-cu{major}"
    # Two levels below the root, like python/plugin: the pyproject's "../.." paths hold as is.
    assert out.parent.parent == ROOT
    shutil.rmtree(out, ignore_errors=True)
    package = out / import_package(major)
    package.mkdir(parents=True)
    for name in _RENDERED:
        target = out / render_text(name, major)
        target.write_text(render_text((PLUGIN / name).read_text(), major))
    # Copied (the sdist must hold the files themselves): the licence and the README, which
    # describes both majors. The version file stays a link, as in python/plugin.
    shutil.copyfile(PLUGIN / "LICENSE", out / "LICENSE")
    shutil.copyfile(PLUGIN / "README.md", out / "README.md")
    shutil.copyfile(PLUGIN / ".gitignore", out / ".gitignore")
    version_file = ROOT / "python" / "forge_flash" / "_version.py"
    (out / "_forge_flash_version.py").symlink_to(os.path.relpath(version_file, out))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("major", type=int, choices=MAJORS)
    args = parser.parse_args(argv)
    print(plugin_dir(args.major))
    return 0


if __name__ == "__main__":
    sys.exit(main())
