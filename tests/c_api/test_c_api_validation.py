"""Builds and runs the host-only C API validation tests (no GPU, no kernels needed), plainly and
under AddressSanitizer and UndefinedBehaviorSanitizer.

The C API must refuse bad sizes, strides, pointers and flags by itself, whatever the Python
layer already checked, and compute nothing undefined on the way (each program also sweeps
extreme values through every argument field: extremes.h). Needs a C++ compiler and the CUDA
toolkit's headers and static cudart; skips with the reason when either is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from host_program import ROOT

CUDA_HOME = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))


def _missing() -> str | None:
    if shutil.which("g++") is None:
        return "no g++"
    if not (CUDA_HOME / "include" / "cuda_runtime_api.h").exists():
        return f"no CUDA toolkit headers under {CUDA_HOME}"
    if not (CUDA_HOME / "lib64" / "libcudart_static.a").exists():
        return f"no static cudart under {CUDA_HOME}/lib64"
    return None


# Each host-only test program, with the C API sources it checks (flash_api.cpp also for the
# others: it holds ff_last_error; append_api.cpp for flash_api.cpp's fused decode step). Every
# entry point must refuse bad input by itself.
PROGRAMS = {
    "flash_attn": ["validation_test.cpp", "flash_api.cpp", "append_api.cpp"],
    "merge_states": [
        "merge_validation_test.cpp",
        "merge_api.cpp",
        "flash_api.cpp",
        "append_api.cpp",
    ],
    "append_kv": ["append_validation_test.cpp", "append_api.cpp", "flash_api.cpp"],
}


#: AddressSanitizer and UndefinedBehaviorSanitizer, each finding fatal: the programs' sweeps of
#: extreme values (extremes.h) then also fail on an overflowing size computation, a read past
#: an argument struct, or an enum read out of its range.
SANITIZERS = [
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=all",
    "-fno-omit-frame-pointer",
]


def _sanitizers_missing(tmp_path: Path) -> str | None:
    """Why g++ cannot build and run a sanitized program here, or None."""
    probe = tmp_path / "probe.cpp"
    probe.write_text("int main() { return 0; }\n")
    exe = tmp_path / "probe"
    built = subprocess.run(
        ["g++", *SANITIZERS, str(probe), "-o", str(exe)], capture_output=True, text=True
    )
    if built.returncode != 0:
        return f"g++ cannot link the sanitizer runtimes: {built.stderr.strip()[:200]}"
    ran = subprocess.run([str(exe)], capture_output=True, text=True)
    return (
        None
        if ran.returncode == 0
        else f"a sanitized program does not run: {ran.stderr.strip()[:200]}"
    )


@pytest.mark.skipif(_missing() is not None, reason=f"C API test not buildable: {_missing()}")
@pytest.mark.parametrize("sanitized", [False, True], ids=["plain", "sanitized"])
@pytest.mark.parametrize("entry", PROGRAMS)
def test_c_api_refuses_invalid_arguments(entry, sanitized, tmp_path):
    if sanitized and (why := _sanitizers_missing(tmp_path)):
        pytest.skip(why)
    program, *sources = PROGRAMS[entry]
    exe = tmp_path / program.removesuffix(".cpp")
    build = [
        "g++", "-std=c++17", "-O1", "-Wall", "-Werror", *(SANITIZERS if sanitized else []),
        f"-I{ROOT / 'csrc' / 'include'}", f"-I{CUDA_HOME / 'include'}",
        str(ROOT / "tests" / "c_api" / program),
        *(str(ROOT / "csrc" / "api" / source) for source in sources),
        f"-L{CUDA_HOME / 'lib64'}", "-lcudart_static", "-ldl", "-lpthread", "-lrt",
        "-o", str(exe),
    ]  # fmt: skip
    built = subprocess.run(build, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    result = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120)
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert result.returncode == 0 and not failures, result.stdout + result.stderr
    assert " 0 failed" in result.stdout
