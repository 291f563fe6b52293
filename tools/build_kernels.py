"""Build the static kernel library (forge_flash_kernels) once, without the Python module.

Every plugin wheel (one per CPython) then links this library through
FORGE_FLASH_KERNELS_LIB instead of compiling the kernels again: the kernels are compiled once per
architecture, not once per Python. Used by tools/build_dists.py and by cibuildwheel's before-all.

    python tools/build_kernels.py --build-dir build/kernels
    -> prints the path of libforge_flash_kernels.a as the last line

Beside the library the build writes forge_flash_kernels.cmake (the CUDA version and
architectures the kernels were compiled for) and a copy of the static CUDA runtime they were
compiled against: linking the module needs those, not a CUDA toolkit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_kernels(
    build_dir: Path,
    archs: str | None = None,
    jobs: int | None = None,
    *,
    wrap: Sequence[str] = (),
    defines: Sequence[str] = (),
) -> Path:
    """Configure and build the kernel library; return the path of the static library.

    ``wrap`` prefixes every cmake command (tools/cuda12_toolchain.py runs them in its chroot,
    with the chroot's cmake, ninja and nvcc); ``defines`` are extra ``-D`` options.
    """
    cmake = "cmake" if wrap else shutil.which("cmake")
    if cmake is None:
        raise SystemExit("cmake not found on PATH (pip install cmake ninja)")
    configure = [
        *wrap,
        cmake,
        "-S",
        str(ROOT),
        "-B",
        str(build_dir),
        "-DCMAKE_BUILD_TYPE=Release",
        "-DFORGE_FLASH_BUILD_MODULE=OFF",
        *defines,
    ]
    if wrap or shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    if archs:
        configure.append(f"-DFORGE_FLASH_CUDA_ARCHS={archs}")
    # A compiler cache, when present, makes a rebuild of unchanged kernels nearly free.
    if not wrap and shutil.which("ccache"):
        configure += [
            "-DCMAKE_CUDA_COMPILER_LAUNCHER=ccache",
            "-DCMAKE_CXX_COMPILER_LAUNCHER=ccache",
        ]
    subprocess.run(configure, check=True)
    build = [*wrap, cmake, "--build", str(build_dir), "--target", "forge_flash_kernels"]
    if jobs:
        build += ["--parallel", str(jobs)]
    subprocess.run(build, check=True)
    lib = build_dir / "libforge_flash_kernels.a"
    if not lib.is_file() or not (build_dir / "forge_flash_kernels.cmake").is_file():
        raise SystemExit(f"the kernel library or its .cmake file is missing in {build_dir}")
    return lib


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
