"""Compile single kernel instances to a cubin and print what ptxas says about each: registers,
spill bytes, and whether it serialized the kernel's wgmma instructions (advisory C7520, which
the build refuses: cmake/ptxas_advisories.cmake; with ``--sass-size`` also where the SASS shows
it without the advisory: waiting_products). A whole translation unit (every kernel of a
dtype and head dim) takes minutes on two cores; one instance takes seconds, so a register or
spill question about a kernel change is answered before any wheel is built:

    python tools/lab/compile_one_kernel.py sm90 --head-dim 128 --persistent
    python tools/lab/compile_one_kernel.py sm90 --head-dim 64 --tma-only --policies BandSinks
    python tools/lab/compile_one_kernel.py sm90 --head-dim 96 --tma-only --non-causal
    python tools/lab/compile_one_kernel.py decode --head-dim 128 --policies AllVariants --append
    python tools/lab/compile_one_kernel.py sm90 --all          # every Hopper instance, plain
    python tools/lab/compile_one_kernel.py sm90 --all --source /tmp/main-csrc-parent   # a baseline
    python tools/lab/compile_one_kernel.py decode --policies IndexedKV --sass-size CUOBJDUMP
    python tools/lab/compile_one_kernel.py decode --decode-config DecodeWideConfig  # 8-warp CTAs
    python tools/lab/compile_one_kernel.py sm90 --all --sass-size CUOBJDUMP --same-as /tmp/main-tree
    python tools/lab/compile_one_kernel.py sm90 --tma-only --sass-size CUOBJDUMP --loop-mix \
        --same-as /tmp/main-tree

Needs nvcc (CUDA 12.3+, for sm_90a); ``--nvcc`` names it, default /usr/local/cuda/bin/nvcc.
``--sass-size`` also counts the instance's SASS instructions with that cuobjdump (and an nvdisasm
beside it or on PATH: ``pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm``). Code size
matters where a kernel runs its code cold: a decode step of one sequence executes its prologue
once per warp, and its warps waited on instruction fetch for 38% of their stall samples while
the fused append instance was 14k instructions (docs/bench-history/2026-12-02.md). ``--same-as
TREE`` (with ``--sass-size``) compiles each instance from TREE too and says whether the two
give the same instructions (addresses and encodings aside): a comment or refactor that keeps
every instance's SASS needs no GPU run; one that moves registers does. ``--loop-mix`` prints the
K/V loop's operations (the consumers' loop over K/V tiles, counted in the code: both sides of
each branch in it, such as a masked tile's path, count), and with ``--same-as`` how TREE's loop
differs, operation by operation. ``--loop-order`` prints the K/V loop's schedule as ptxas left it:
its landmarks in order (the products, the waits for them and their group counts, the
special-function unit's instructions, P's conversions and shared-memory stores, barriers and
branches), runs of one collapsed (``MUFU.EX2 x64``). It answers where ptxas put a wait: in
session 83 it showed each softcap consumer's exp2s behind the wait for its own P V
(docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POLICIES = (
    "Plain", "IndexedKV", "PagedKV", "BandSinks", "AlibiOnly", "AllVariants", "BoundedSoftcap",
)  # fmt: skip
# The head dims with Hopper tiles of their own (kernel_registry.h, sm90_head_dim).
HOPPER_HEAD_DIMS = (64, 96, 128, 192, 256)
DEFAULT_NVCC = "/usr/local/cuda/bin/nvcc"
# The decode kernel's CTA shapes (tile_config.h): 4, 3 and 8 warps.
DECODE_CONFIGS = ("DecodeConfig", "DecodeFullGridConfig", "DecodeWideConfig")


def kernel_nvcc_flags(source: Path) -> list[str]:
    """The plugin build's nvcc flags for every kernel (cmake/kernel_nvcc_flags.txt), the
    source tree's, or this tree's for a tree that predates the file."""
    flags = source / "cmake" / "kernel_nvcc_flags.txt"
    if not flags.exists():
        flags = ROOT / "cmake" / "kernel_nvcc_flags.txt"
    return [line.strip() for line in flags.read_text().splitlines() if line.startswith("-")]


def unit_source(kind: str, head_dim: int, persistent: bool, tma_only: bool, policies: str,
          append: bool, dtype: str, decode_config: str = "DecodeConfig",
          non_causal: bool = False, packed: bool = False) -> str:  # fmt: skip
    """The explicit instantiation of one kernel."""
    if kind == "sm90":
        flags = f"{str(persistent).lower()}, {str(tma_only).lower()}"
        non_causal_tiles = ", true" if non_causal else ""  # Sm90Tiles' kNonCausal
        config = f"Sm90PrefillConfig<{head_dim}, {flags}, {policies}{non_causal_tiles}>"
        return (
            '#include "sm90/fwd_kernel_sm90.cuh"\nnamespace forge_flash {\n'
            f"template __global__ void fwd_kernel_sm90<{dtype}, {config}, {policies}"
            f"{', true' * packed}>"
            "(const __grid_constant__ FwdParams, const int);\n}\n"
        )
    return (
        '#include "decode_kernel.cuh"\nnamespace forge_flash {\n'
        f"template __global__ void decode_kernel<{dtype}, {decode_config}<{head_dim}>, {policies}, "
        f"{str(append).lower()}>(const __grid_constant__ FwdParams, const int);\n}}\n"
    )


def addressed_sass(disassembly: str) -> list[tuple[int, str]]:
    """The instructions of a cuobjdump -sass listing with their addresses (offsets in the
    function), each without the encodings and the spacing."""
    instructions = []
    for line in disassembly.splitlines():
        found = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
        if found:
            instructions.append((int(found.group(1), 16), " ".join(found.group(2).split())))
    return instructions


def normalized_sass(disassembly: str) -> list[str]:
    """The instructions of a cuobjdump -sass listing, one string each, without the address
    column, the encodings and the spacing: two builds compare equal when they hold the same
    code. (Branch targets are offsets in the function, so the same code has the same ones.)"""
    return [instruction for _, instruction in addressed_sass(disassembly)]


def kv_loop(instructions: list[tuple[int, str]]) -> list[str]:
    """The body of the kernel's K/V loop, from the target of a predicated branch back (a loop's
    latch; the mbarrier retry stubs at the function's end jump back unpredicated) to that
    branch: the shortest such loop that issues both matrix products, Q K^T (HGMMA) and P V
    (HGMMA on V, .tnspB); empty where none does. In a Hopper instance that is the consumers'
    loop over K/V tiles (a persistent instance's work-tile loop holds it, and is longer); its
    instructions as written, both sides of every branch in it."""
    best: list[str] = []
    for address, instruction in instructions:
        branch = re.match(r"@!?U?P\w+\s+BRA(?:\.\S+)?\s+(?:\S+,\s*)?0x([0-9a-f]+)$", instruction)
        if branch is None or int(branch.group(1), 16) >= address:
            continue
        start = int(branch.group(1), 16)
        body = [text for at, text in instructions if start <= at <= address]
        products = [text for text in body if _opcode(text) == "HGMMA"]
        pv = sum("tnspB" in text for text in products)
        if 0 < pv < len(products) and (not best or len(body) < len(best)):
            best = body
    return best


def waiting_products(instructions: list[str]) -> int:
    """How many matrix products wait for the one before: an HGMMA that adds to its accumulator
    (its C operand a register, not RZ) right after `WARPGROUP.DEPBAR.LE gsb0, 0x0` (and the
    ARRIVE that reopens the pipe). That is how ptxas serializes wgmma instructions; C7520 says so
    where a branch made it, but not always: an opaque asm around Q's descriptors in the
    persistent kernel at head_dim 128 (session 70) put one before each of Q K^T's 8 slices in
    the K/V loop with no advisory. A kernel whose products overlap has none."""
    count, waited = 0, False
    for instruction in instructions:
        op = _opcode(instruction)
        if op == "WARPGROUP" and "DEPBAR" in instruction:
            waited = instruction.split()[-1] in ("0x0", "0") and "gsb0" in instruction
        elif op == "WARPGROUP":  # ARRIVE: the pipe reopened; the wait still stands before it
            continue
        elif op == "HGMMA":
            # Operands: D, [A registers,] the descriptors (gdesc[...]), then C: RZ where the
            # product starts its accumulator (a tile's first Q K^T slice).
            words = instruction.split()
            operands = [word.strip(",") for word in words[2 if words[0].startswith("@") else 1 :]]
            descriptors = [i for i, word in enumerate(operands) if word.startswith("gdesc")]
            accumulates = bool(descriptors) and operands[descriptors[0] + 1 :][:1] != ["RZ"]
            count += waited and accumulates
            waited = False
        else:
            waited = False
    return count


def _opcode(instruction: str) -> str:
    """An instruction's operation without its predicate and modifiers (MUFU keeps its
    function: MUFU.EX2, MUFU.TANH)."""
    words = instruction.split()
    op = words[1] if words[0].startswith("@") and len(words) > 1 else words[0]
    parts = op.split(".")
    return ".".join(parts[:2]) if parts[0] == "MUFU" else parts[0]


def opcode_mix(instructions: list[str]) -> dict[str, int]:
    """How many of each operation, most first."""
    counts: dict[str, int] = {}
    for instruction in instructions:
        op = _opcode(instruction)
        counts[op] = counts.get(op, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def mix_difference(ours: dict[str, int], theirs: dict[str, int]) -> str:
    """ours - theirs per operation, as "+2 IMAD, -1 MOV" (empty where the counts agree)."""
    changes = [(op, ours.get(op, 0) - theirs.get(op, 0)) for op in sorted({*ours, *theirs})]
    return ", ".join(f"{delta:+d} {op}" for op, delta in changes if delta)


def loop_order(instructions: list[str]) -> list[tuple[str, int]]:
    """The landmarks of a K/V loop in their order, each run of one landmark as (name, count):
    HGMMA as "Q K^T" or "P V" (its B operand transposed: .tnspB), "wait <n>" for
    WARPGROUP.DEPBAR (at most n product groups left running), the special-function unit's
    operations (MUFU.EX2, MUFU.TANH), F2FP (P's conversions), STS and STSM (stores to shared
    memory; P's go through stmatrix), BAR.SYNC and BAR.ARV (named barriers: the consumers'
    turns), SYNCS (mbarriers) and BRA; nothing else."""
    order: list[tuple[str, int]] = []
    for instruction in instructions:
        op = _opcode(instruction)
        if op == "HGMMA":
            name = "P V" if ".tnspB" in instruction else "Q K^T"
        elif op == "WARPGROUP" and "DEPBAR" in instruction:
            name = f"wait {instruction.split()[-1]}"
        elif op == "BAR":  # BAR.SYNC waits for the turn, BAR.ARV passes it on
            words = instruction.split()
            name = ".".join(words[1 if words[0].startswith("@") else 0].split(".")[:2])
        elif op.startswith("MUFU") or op in ("F2FP", "STS", "STSM", "SYNCS", "BRA"):
            name = op
        else:
            continue
        if order and order[-1][0] == name:
            order[-1] = (name, order[-1][1] + 1)
        else:
            order.append((name, 1))
    return order


def format_order(order: list[tuple[str, int]]) -> str:
    """loop_order's runs as one line: "Q K^T x8, P V x8, wait 0x1, MUFU.TANH x64"."""
    return ", ".join(name if count == 1 else f"{name} x{count}" for name, count in order)


def sass_listing(cuobjdump: str, cubin: Path) -> list[tuple[int, str]] | None:
    """The SASS of a cubin with addresses (cuobjdump -sass; None if it fails)."""
    path = f"{Path(cuobjdump).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path}  # nvdisasm beside cuobjdump, else on PATH
    done = subprocess.run([cuobjdump, "-sass", str(cubin)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return None
    return addressed_sass(done.stdout)


def compile_one(source: Path, nvcc: str, unit: str, cuobjdump: str | None = None) -> dict:
    """ptxas's report on one instance: registers, spill bytes, C7520 (serialized wgmma); with
    cuobjdump, its normalised SASS too."""
    with tempfile.TemporaryDirectory() as tmp:
        cu = Path(tmp) / "one.cu"
        cu.write_text(unit)
        # The build's flags (a Release build adds -DNDEBUG, CMAKE_CUDA_STANDARD -std=c++17),
        # and ptxas's report.
        command = [
            nvcc, *kernel_nvcc_flags(source), "-DNDEBUG", "-std=c++17",
            "--generate-code=arch=compute_90a,code=[sm_90a]", "-Xptxas=-v",
            f"-I{source / 'csrc/include'}", f"-I{source / 'csrc/kernels'}",
            "-cubin", "-o", str(Path(tmp) / "one.cubin"), str(cu),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        addressed = None
        if cuobjdump and done.returncode == 0:
            addressed = sass_listing(cuobjdump, Path(tmp) / "one.cubin")
    log = done.stdout + done.stderr
    registers = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return {
        "ok": done.returncode == 0,
        "registers": int(registers.group(1)) if registers else None,
        "spill_stores": int(spills.group(1)) if spills else 0,
        "spill_loads": int(spills.group(2)) if spills else 0,
        "serialized_wgmma": "C7520" in log,
        "sass": None if addressed is None else [text for _, text in addressed],
        "kv_loop": None if addressed is None else kv_loop(addressed),
        "log": log,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["sm90", "decode"])
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--persistent", action="store_true", help="sm90: the persistent instance")
    parser.add_argument("--tma-only", action="store_true", help="sm90: the TMA-only instance")
    parser.add_argument("--non-causal", action="store_true",
                        help="sm90: the tiles of the non-causal instance")  # fmt: skip
    parser.add_argument("--packed", action="store_true",
                        help="sm90: the kPackedSeqs twin (--tma-only or --persistent)")  # fmt: skip
    parser.add_argument("--policies", choices=POLICIES, default="Plain")
    parser.add_argument("--append", action="store_true", help="decode: with the fused K/V append")
    parser.add_argument("--dtype", choices=["__nv_bfloat16", "half"], default="__nv_bfloat16")
    parser.add_argument("--decode-config", choices=DECODE_CONFIGS, default="DecodeConfig",
                        help="decode: the CTA shape (tile_config.h)")  # fmt: skip
    parser.add_argument("--all", action="store_true",
                        help="sm90: every head dim x (per tile, persistent, TMA-only)")  # fmt: skip
    parser.add_argument("--source", type=Path, default=ROOT, help="tree whose csrc/ to compile")
    parser.add_argument("--nvcc", default=DEFAULT_NVCC)
    parser.add_argument("--log", action="store_true", help="print ptxas's output too")
    parser.add_argument("--sass-size", metavar="CUOBJDUMP", help="count SASS instructions with it")
    parser.add_argument("--same-as", type=Path, metavar="TREE",
                        help="with --sass-size: whether TREE gives the same SASS")  # fmt: skip
    parser.add_argument("--loop-mix", action="store_true",
                        help="with --sass-size: the K/V loop's operations")  # fmt: skip
    parser.add_argument("--loop-order", action="store_true",
                        help="with --sass-size: the K/V loop's landmarks in order")  # fmt: skip
    args = parser.parse_args()
    if (args.same_as or args.loop_mix or args.loop_order) and not args.sass_size:
        parser.error("--same-as, --loop-mix and --loop-order need --sass-size CUOBJDUMP")

    cases = [(args.head_dim, args.persistent, args.tma_only)]
    if args.all:
        cases = [
            (d, p, t)
            for d in HOPPER_HEAD_DIMS
            for p, t in ((False, False), (True, False), (False, True))
        ]
    failed = False
    for head_dim, persistent, tma_only in cases:
        unit = unit_source(
            args.kind, head_dim, persistent, tma_only, args.policies, args.append, args.dtype,
            args.decode_config, args.non_causal, args.packed,
        )  # fmt: skip
        got = compile_one(args.source, args.nvcc, unit, args.sass_size)
        name = f"{args.kind} d{head_dim} {args.policies}"
        if args.kind == "decode" and args.decode_config != "DecodeConfig":
            name += f" {args.decode_config}"
        if args.kind == "sm90":
            name += " persistent" * persistent + " tma-only" * tma_only
            name += " non-causal" * args.non_causal + " packed" * args.packed
        elif args.append:
            name += " append"
        if not got["ok"]:
            print(f"{name}: compile failed\n{got['log']}")
            failed = True
            continue
        serialized = ", WGMMA SERIALIZED (C7520)" if got["serialized_wgmma"] else ""
        waiting = 0 if got["sass"] is None else waiting_products(got["sass"])
        if waiting and not got["serialized_wgmma"]:
            serialized += f", {waiting} MATRIX PRODUCTS WAIT FOR THE ONE BEFORE (waiting_products)"
        spills = f"{got['spill_stores']}/{got['spill_loads']} bytes (stores/loads)"
        sass = "" if got["sass"] is None else f", {len(got['sass'])} SASS instructions"
        theirs = None
        if args.same_as and got["sass"] is not None:
            theirs = compile_one(args.same_as, args.nvcc, unit, args.sass_size)
            if theirs["sass"] is None:
                sass += f"; {args.same_as} did not compile"
                theirs = None
            elif theirs["sass"] == got["sass"]:
                sass += f"; the same SASS as {args.same_as}"
            else:
                there = len(theirs["sass"])
                sass += f"; SASS differs from {args.same_as} ({there} instructions there)"
        print(f"{name}: {got['registers']} registers, spills {spills}{serialized}{sass}")
        if args.loop_mix and got["kv_loop"] is not None:
            loop = got["kv_loop"]
            mix = ", ".join(f"{count} {op}" for op, count in opcode_mix(loop).items())
            print(f"  K/V loop: {len(loop)} instructions: {mix}")
            if theirs is not None:
                if theirs["kv_loop"] == loop:
                    print(f"  K/V loop: the same as {args.same_as}'s")
                else:
                    difference = mix_difference(opcode_mix(loop), opcode_mix(theirs["kv_loop"]))
                    difference = difference or "the same operations, other operands or order"
                    there = f"{args.same_as}'s ({len(theirs['kv_loop'])} instructions)"
                    print(f"  K/V loop against {there}: {difference}")
        if args.loop_order and got["kv_loop"] is not None:
            print(f"  K/V loop in order: {format_order(loop_order(got['kv_loop']))}")
            if theirs is not None:
                print(f"  {args.same_as}'s: {format_order(loop_order(theirs['kv_loop']))}")
        failed |= got["serialized_wgmma"] or waiting > 0
        if args.log:
            print(got["log"])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
