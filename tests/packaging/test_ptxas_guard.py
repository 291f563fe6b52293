"""The kernel library's compiler launcher (cmake/ptxas_advisories.cmake) fails a compile whose
ptxas serialized wgmma instructions, and otherwise behaves as the compile it runs."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest
from dist_helpers import ROOT, plugin_pyproject

GUARD = ROOT / "cmake" / "ptxas_advisories.cmake"
ADVISORY = (
    "ptxas info    : (C7520) Potential Performance Loss: wgmma.mma_async instructions are "
    "serialized due to program dependence on compiler-inserted WG.AR in divergent path"
)
CMAKE = shutil.which("cmake")
needs_cmake = pytest.mark.skipif(CMAKE is None, reason="no cmake on PATH")


def _run(script: str) -> subprocess.CompletedProcess:
    """The guard running `sh -c script` as its compile command."""
    command = [CMAKE, "-P", str(GUARD), "--", "sh", "-c", script]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@needs_cmake
def test_a_compile_whose_ptxas_serialized_wgmma_fails():
    got = _run(f"echo '{ADVISORY}' >&2")
    assert got.returncode != 0
    assert "C7520" in got.stderr  # the advisory itself is passed through
    assert "serialized wgmma" in got.stderr  # and the guard says why it failed


@needs_cmake
def test_a_clean_compile_passes_with_its_output():
    got = _run("echo 'ptxas warning : Registers are spilled' >&2; echo built")
    assert got.returncode == 0, got.stderr
    assert "Registers are spilled" in got.stderr
    assert "built" in got.stdout


@needs_cmake
def test_a_failing_compile_still_fails():
    got = _run("echo 'error: something' >&2; exit 3")
    assert got.returncode != 0
    assert "error: something" in got.stderr


def test_the_kernel_library_compiles_under_the_guard_and_the_sdist_carries_it():
    cmake_lists = (ROOT / "CMakeLists.txt").read_text()
    assert "CUDA_COMPILER_LAUNCHER" in cmake_lists
    assert "cmake/ptxas_advisories.cmake" in cmake_lists
    force = plugin_pyproject()["tool"]["scikit-build"]["sdist"]["force-include"]
    assert force.get("../../cmake") == "cmake"


# The Hopper kernels themselves, one instance per compile (tools/lab/compile_one_kernel.py):
# where this machine has an sm_90a-capable nvcc, CI learns of a serialized kernel without
# building a wheel.
_spec = importlib.util.spec_from_file_location(
    "compile_one_kernel", ROOT / "tools/lab/compile_one_kernel.py"
)
compile_one_kernel = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compile_one_kernel)
NVCC = Path(compile_one_kernel.DEFAULT_NVCC)
# A disassembler where this machine has one (on PATH or beside nvcc; `pip install
# nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm` puts one in a venv): with it the test also reads
# the SASS, where ptxas can serialize the matrix products without the advisory
# (compile_one_kernel.waiting_products).
_beside_nvcc = NVCC.parent / "cuobjdump"
CUOBJDUMP = shutil.which("cuobjdump") or (str(_beside_nvcc) if _beside_nvcc.exists() else None)


@pytest.mark.skipif(not NVCC.exists(), reason=f"no nvcc at {NVCC}")
@pytest.mark.parametrize("persistent,tma_only", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("head_dim", compile_one_kernel.HOPPER_HEAD_DIMS)
def test_hopper_kernels_keep_their_wgmma_asynchronous(head_dim, persistent, tma_only):
    unit = compile_one_kernel.unit_source(
        "sm90", head_dim, persistent, tma_only, "Plain", False, "__nv_bfloat16"
    )
    got = compile_one_kernel.compile_one(ROOT, str(NVCC), unit, CUOBJDUMP)
    if not got["ok"] and "Unsupported gpu architecture" in got["log"]:
        pytest.skip("this nvcc cannot target sm_90a")
    assert got["ok"], got["log"]
    # The kernel source compiles without a front-end warning (an unused value, an unreachable
    # loop: the three that 156f04a cleared), so a new one stands out in the build's output.
    assert "warning #" not in got["log"], got["log"]
    assert not got["serialized_wgmma"], got["log"]
    assert got["registers"] is not None and got["registers"] <= 255
    if got["sass"] is not None:
        assert compile_one_kernel.waiting_products(got["sass"]) == 0


# compile_one_kernel.py --same-as: two builds' SASS compared without the address column,
# encodings or spacing.
LISTING = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;                 /* 0x00000a00ff017b82 */
                                                                          /* 0x000fe20000000800 */
        /*0010*/              @!P0 BRA 0x1a50 ;                           /* 0x0000000000007947 */
        /*0020*/                   FFMA R3,  R1, R4, -R5 ;                /* 0x0000000401037223 */
"""


def test_normalized_sass_keeps_the_code_not_its_layout():
    got = compile_one_kernel.normalized_sass(LISTING)
    assert got == ["LDC R1, c[0x0][0x28]", "@!P0 BRA 0x1a50", "FFMA R3, R1, R4, -R5"]
    relisted = LISTING.replace("/*0010*/", "/*0c10*/").replace("0x0000000000007947", "0x0")
    assert compile_one_kernel.normalized_sass(relisted) == got  # address column, encoding
    for change in (("R3,  R1", "R7,  R1"), ("0x28]", "0x2c]"), ("0x1a50", "0x1a60")):
        assert compile_one_kernel.normalized_sass(LISTING.replace(*change)) != got
