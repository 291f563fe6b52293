"""Smoke test of an installed forge-flash (+ optional plugin), run inside the environment to test.

Used as cibuildwheel's test command, by tools/build_dists.py and by tests/packaging in fresh
virtual environments. Exits non-zero with a message on the first failed check.

    python tools/smoke_plugin.py --expect-no-gpu     # plugin installed, no GPU (CI runners)
    python tools/smoke_plugin.py --expect-gpu        # plugin installed, an SM80+ GPU present
    python tools/smoke_plugin.py --no-plugin         # the naive wheel alone
    python tools/smoke_plugin.py --expect-gpu --cuda 12   # the CUDA 12 plugin (default: 13)
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys


def fail(message: str) -> None:
    print(f"SMOKE FAIL: {message}", file=sys.stderr)
    raise SystemExit(1)


def check_plugin(major: int, expected_sass: set[int], expected_ptx: set[int]) -> None:
    """The plugin imports on any machine (static cudart loads the driver lazily)."""
    import forge_flash

    plugin = importlib.import_module(f"forge_flash_cu{major}")
    binding = plugin._C
    if plugin.__version__ != forge_flash.__version__:
        fail(f"plugin {plugin.__version__} != forge-flash {forge_flash.__version__}")
    sass, ptx = set(binding.cuda_archs()), set(binding.ptx_archs())
    if not expected_sass <= sass or not expected_ptx <= ptx:
        fail(
            f"archs SASS {sorted(sass)} PTX {sorted(ptx)}; expected {expected_sass}, {expected_ptx}"
        )
    if str(binding.cuda_version()).split(".")[0] != str(major):
        fail(f"plugin built with CUDA {binding.cuda_version()}, expected {major}.x")
    print(
        f"forge-flash-cu{major} {plugin.__version__}: SASS {sorted(sass)} PTX {sorted(ptx)}, "
        f"CUDA {binding.cuda_version()}"
    )


def check_attention(device: str) -> None:
    """The public API answers and agrees with torch's SDPA (non-causal, small shapes)."""
    import torch

    import forge_flash

    dtype = torch.float32 if device == "cpu" else torch.float16
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 33, 4, 64, generator=gen).to(device, dtype) for _ in range(3))
    out = forge_flash.flash_attn_fwd(q, k, v)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2).float(), k.transpose(1, 2).float(), v.transpose(1, 2).float()
    ).transpose(1, 2)
    err = (out.float() - ref).abs().max().item()
    if err > (1e-4 if device == "cpu" else 1e-2):
        fail(f"flash_attn_fwd on {device} differs from SDPA by {err}")
    print(f"flash_attn_fwd on {device}: max error vs SDPA {err:.2e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--expect-no-gpu", action="store_true")
    mode.add_argument("--expect-gpu", action="store_true")
    mode.add_argument("--no-plugin", action="store_true")
    parser.add_argument("--sass", default="80,90", help="SASS archs the plugin must hold")
    parser.add_argument("--ptx", default="80", help="PTX archs the plugin must hold")
    parser.add_argument(
        "--cuda", type=int, default=13, help="CUDA major of the plugin to check (12 or 13)"
    )
    args = parser.parse_args(argv)

    import forge_flash

    info = forge_flash.backend_info()
    print(info.format())
    cuda = info.backends.get("cuda")
    if args.no_plugin:
        if info.plugin_version is not None:
            fail(f"expected no plugin, found {info.plugin_version}")
        if info.active_backend != "naive" or cuda is None or cuda.available:
            fail(f"expected the naive backend alone: {json.dumps(info.as_dict(), default=str)}")
        check_attention("cpu")
        return 0

    def ints(text: str) -> set[int]:
        return {int(x) for x in text.split(",") if x}

    check_plugin(args.cuda, ints(args.sass), ints(args.ptx))
    if info.plugin_version != forge_flash.__version__:
        fail(f"discovery did not load the plugin: {cuda}")
    listed = {plugin.distribution: plugin for plugin in info.plugins}
    mine = listed.get(f"forge-flash-cu{args.cuda}")
    if mine is None:
        fail(f"discovery does not list forge-flash-cu{args.cuda}: {sorted(listed)}")
    if args.expect_gpu and mine.state != "in use":
        fail(f"forge-flash-cu{args.cuda} is not the plugin in use: {mine}")
    if args.expect_no_gpu:
        # Found and loaded, but unavailable for a stated reason; the naive path answers.
        if cuda is None or cuda.available or not cuda.reason:
            fail(f"expected the cuda backend unavailable with a reason, got {cuda}")
        if info.active_backend != "naive":
            fail(f"expected the naive backend in use, got {info.active_backend}")
        check_attention("cpu")
    else:
        if cuda is None or not cuda.available or info.active_backend != "cuda":
            fail(f"expected the cuda backend in use, got {cuda} / {info.active_backend}")
        check_attention("cuda")
    return 0


if __name__ == "__main__":
    sys.exit(main())
