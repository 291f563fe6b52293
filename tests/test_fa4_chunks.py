"""tools/lab/fa4_chunks.sh, which cuts FA4's wheels into two chunks a device call can carry
beside the tree: run here on stand-in wheels (a big one of incompressible bytes, named as
nvidia-cutlass-dsl-libs-cu13's, and a small one). The first chunk is C1_MB megabytes of the
xz'd big wheel and the second the rest; together they decompress to a wheel holding the big
one's files, which is what install.sh rejoins on the GPU machine."""

from __future__ import annotations

import lzma
import os
import random
import shutil
import subprocess
import zipfile
from io import BytesIO
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "lab" / "fa4_chunks.sh"

pytestmark = pytest.mark.skipif(
    shutil.which("bash") is None or shutil.which("xz") is None, reason="needs bash and xz"
)


def _wheels(root: Path) -> dict[str, bytes]:
    """FA4's download folder, stand-ins: the big wheel's files (random, so that xz cannot shrink
    them under the 1 MB chunk) and one other wheel."""
    dl = root / "dl"
    dl.mkdir(parents=True)
    rng = random.Random(88)
    files = {
        "nvidia_cutlass_dsl/lib/libcute.so": rng.randbytes(1_400_000),
        "nvidia_cutlass_dsl/lib/libmlir.so": rng.randbytes(900_000),
        "nvidia_cutlass_dsl_libs_cu13-4.8.1.dist-info/RECORD": b"RECORD\n",
    }
    big = dl / "nvidia_cutlass_dsl_libs_cu13-4.8.1-cp312-cp312-manylinux_2_28_x86_64.whl"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    with zipfile.ZipFile(dl / "quack_kernels-0.6.5-py3-none-any.whl", "w") as z:
        z.writestr("quack/__init__.py", "")
    return files


def _cut(root: Path, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k != "C1_MB"}
    return subprocess.run(
        ["bash", str(SCRIPT), str(root)], capture_output=True, text=True, timeout=120,
        env={**base, **env},
    )  # fmt: skip


def test_the_first_chunk_holds_c1_mb_megabytes_and_the_two_rejoin_to_the_big_wheels_files(
    tmp_path: Path,
) -> None:
    files = _wheels(tmp_path)
    result = _cut(tmp_path, C1_MB="1")
    assert result.returncode == 0, result.stderr
    c1, c2 = (tmp_path / "s1" / "c1").read_bytes(), (tmp_path / "s2" / "c2").read_bytes()
    assert len(c1) == 1_000_000
    assert len(c2) > 1_000_000  # the random files do not compress: the rest is in the second
    with zipfile.ZipFile(BytesIO(lzma.decompress(c1 + c2))) as joined:
        assert {n: joined.read(n) for n in joined.namelist()} == files
        assert all(i.compress_type == zipfile.ZIP_STORED for i in joined.infolist())
    s2 = sorted(p.name for p in (tmp_path / "s2").iterdir())
    assert s2 == ["big-name", "c2", "install.sh", "quack_kernels-0.6.5-py3-none-any.whl"]
    big_name = (tmp_path / "s2" / "big-name").read_text().strip()
    assert big_name.startswith("nvidia_cutlass_dsl_libs_cu13-4.8.1")
    assert os.access(tmp_path / "s2" / "install.sh", os.X_OK)


def test_by_default_the_first_chunk_is_32_mb_at_most(tmp_path: Path) -> None:
    _wheels(tmp_path)
    result = _cut(tmp_path)
    assert result.returncode == 0, result.stderr
    c1, c2 = (tmp_path / "s1" / "c1").read_bytes(), (tmp_path / "s2" / "c2").read_bytes()
    # A stand-in of 2.3 MB fits the default first chunk whole; the second is then empty.
    assert 1_000_000 < len(c1) <= 32_000_000 and c2 == b""
    assert lzma.decompress(c1)[:2] == b"PK"
