"""Build the static kernel library (forge_flash_kernels) once, without the Python module.

Every plugin wheel (one per CPython) then links this library through
FORGE_FLASH_KERNELS_LIB instead of compiling the kernels again: the kernels are compiled once per
architecture, not once per Python. Used by tools/build_dists.py and by cibuildwheel's before-all.

    python tools/build_kernels.py --build-dir build/kernels
    -> prints the path of libforge_flash_kernels.a as the last line
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_kernels(build_dir: Path, archs: str | None = None, jobs: int | None = None) -> Path:
    """Configure and build the kernel library; return the path of the static library."""
    cmake = shutil.which("cmake")
    if cmake is None:
        raise SystemExit("cmake not found on PATH (pip install cmake ninja)")
    configure = [
        cmake,
        "-S",
        str(ROOT),
        "-B",
        str(build_dir),
        "-DCMAKE_BUILD_TYPE=Release",
        "-DFORGE_FLASH_BUILD_MODULE=OFF",
    ]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    if archs:
        configure.append(f"-DFORGE_FLASH_CUDA_ARCHS={archs}")
    # A compiler cache, when present, makes a rebuild of unchanged kernels nearly free.
    if shutil.which("ccache"):
        configure += [
            "-DCMAKE_CUDA_COMPILER_LAUNCHER=ccache",
            "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache",
        ]
    subprocess.run(configure, check=True)
    build = [cmake, "--build", str(build_dir), "--target", "forge_flash_kernels"]
    if jobs:
        build += ["--parallel", str(jobs)]
    subprocess.run(build, check=True)
    libs = sorted(build_dir.rglob("libforge_flash_kernels.a"))
    if not libs:
        raise SystemExit(f"libforge_flash_kernels.a not found under {build_dir}")
    return libs[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build" / "kernels")
    parser.add_argument(
        "--archs",
        default=os.environ.get("FORGE_FLASH_CUDA_ARCHS") or None,
        help="CUDA architectures, e.g. 90a-real (default: the CMakeLists' set)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=int(os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "0")) or None,
        help="parallel compile jobs (each nvcc process of a big kernel takes a few GB)",
    )
    args = parser.parse_args(argv)
    start = time.monotonic()
    lib = build_kernels(args.build_dir.resolve(), args.archs, args.jobs)
    print(f"kernel library built in {time.monotonic() - start:.0f} s", file=sys.stderr)
    print(lib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
