"""The CUDA 12 kernel library, compiled with CUDA 12.4 from a Debian trixie chroot.

No CUDA 12 nvcc is installable from PyPI, but Debian trixie's non-free `nvidia-cuda-toolkit` is
CUDA 12.4 (sm_90a, wgmma, TMA, clusters) with a gcc it accepts. This script debootstraps trixie
into a cache folder once (about 7 GB, a few minutes), then compiles the kernels there with
tools/build_kernels.py's configuration. Only the kernels are compiled in the chroot: the module
is linked on the host (tools/build_dists.py, FORGE_FLASH_KERNELS_LIB), whose older glibc keeps
the wheel's manylinux tag low. Beside the library go the chroot's static CUDA 12 runtime (by
the kernel build) and its CUDA headers (cuda-include/, by this script), which the link needs.

    python tools/cuda12_toolchain.py                 # prints the path of the kernel library
    python tools/cuda12_toolchain.py --setup-only    # only make (or check) the chroot

Needs root (debootstrap, chroot, a private mount namespace) and `apt-get install debootstrap`.
FORGE_FLASH_CU12_CHROOT names the chroot folder (default build/cu12-toolchain/root, git-ignored),
so that several checkouts share one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_kernels import ROOT, build_kernels

MIRROR = "http://deb.debian.org/debian"
SUITE = "trixie"
PACKAGES = ["nvidia-cuda-toolkit", "cmake", "ninja-build"]
# Debian's wrapper for the gcc its nvcc supports (gcc 13 for CUDA 12.4); host and device code
# get the same compiler.
HOST_CXX = "/usr/lib/nvidia-cuda-toolkit/bin/g++"
READY = ".forge-flash-ready"  # written last: a chroot without it is incomplete and is redone


def default_chroot() -> Path:
    return Path(os.environ.get("FORGE_FLASH_CU12_CHROOT") or ROOT / "build/cu12-toolchain/root")


def chroot_prefix(chroot: Path, binds: list[Path]) -> list[str]:
    """A command prefix that runs the rest inside the chroot, with ``binds`` mounted at their
    own paths and /proc, in a private mount namespace (the mounts vanish when it exits)."""
    mounts = [f"mount -t proc proc {chroot}/proc"]
    for path in binds:
        (chroot / path.relative_to("/")).mkdir(parents=True, exist_ok=True)
        mounts.append(f"mount --bind {path} {chroot}{path}")
    script = " && ".join([*mounts, f'exec chroot {chroot} "$@"'])
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]


def ensure_chroot(chroot: Path) -> str:
    """Make the trixie chroot with CUDA 12 unless it is ready; return its nvcc version line."""
    if not (chroot / READY).is_file():
        if os.geteuid() != 0:
            raise SystemExit("the CUDA 12 chroot needs root (debootstrap, chroot, mount)")
        if shutil.which("debootstrap") is None:
            raise SystemExit("debootstrap not found: apt-get install -y debootstrap")
        start = time.monotonic()
        shutil.rmtree(chroot, ignore_errors=True)
        chroot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                "--components=main,contrib,non-free",
                SUITE,
                str(chroot),
                MIRROR,
            ],
            check=True,
        )
        shutil.copyfile("/etc/resolv.conf", chroot / "etc/resolv.conf")
        apt = [*chroot_prefix(chroot, []), "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]
        subprocess.run([*apt, "update"], check=True)
        subprocess.run([*apt, "install", "-y", "--no-install-recommends", *PACKAGES], check=True)
        (chroot / READY).write_text(f"{SUITE} {' '.join(PACKAGES)}\n")
        print(f"CUDA 12 chroot made in {time.monotonic() - start:.0f} s", file=sys.stderr)
    nvcc = subprocess.run(
        ["chroot", str(chroot), "nvcc", "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return nvcc.splitlines()[-2]


def copy_cuda_headers(chroot: Path, dest: Path) -> None:
    """The chroot's CUDA headers (the files of Debian's nvidia-cuda-dev under /usr/include),
    without the glibc headers that share that folder there."""
    listing = subprocess.run(
        ["chroot", str(chroot), "dpkg", "-L", "nvidia-cuda-dev"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    shutil.rmtree(dest, ignore_errors=True)
    for name in listing:
        source = chroot / name.lstrip("/")
        if name.startswith("/usr/include/") and source.is_file():
            target = dest / name.removeprefix("/usr/include/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    if not (dest / "cuda_runtime_api.h").is_file():
        raise SystemExit(f"no cuda_runtime_api.h among nvidia-cuda-dev's headers in {chroot}")


def build_cu12_kernels(
    build_dir: Path, chroot: Path, archs: str | None = None, jobs: int | None = None
) -> Path:
    """Compile the kernel library with the chroot's CUDA 12; return the library's path."""
    ensure_chroot(chroot)
    binds = [ROOT] if build_dir.is_relative_to(ROOT) else [ROOT, build_dir.parent]
    build_dir.mkdir(parents=True, exist_ok=True)
    lib = build_kernels(
        build_dir,
        archs,
        jobs,
        wrap=chroot_prefix(chroot, binds),
        defines=[
            f"-DCMAKE_CXX_COMPILER={HOST_CXX}",
            f"-DCMAKE_CUDA_HOST_COMPILER={HOST_CXX}",
        ],
    )
    copy_cuda_headers(chroot, build_dir / "cuda-include")
    return lib


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build" / "cu12-kernels")
    parser.add_argument("--chroot", type=Path, default=default_chroot())
    parser.add_argument("--archs", default=os.environ.get("FORGE_FLASH_CUDA_ARCHS") or None)
    parser.add_argument(
        "--jobs", type=int, default=int(os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "0")) or None
    )
    parser.add_argument("--setup-only", action="store_true", help="only make the chroot")
    args = parser.parse_args(argv)
    chroot = args.chroot.resolve()
    if args.setup_only:
        print(ensure_chroot(chroot))
        return 0
    start = time.monotonic()
    lib = build_cu12_kernels(args.build_dir.resolve(), chroot, args.archs, args.jobs)
    print(f"CUDA 12 kernel library built in {time.monotonic() - start:.0f} s", file=sys.stderr)
    print(lib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
