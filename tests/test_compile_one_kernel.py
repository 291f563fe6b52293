"""tools/lab/compile_one_kernel.py's reading of a cuobjdump -sass listing: the instructions with
their addresses, the K/V loop (the shortest loop closed by a predicated branch back that issues
both Q K^T and P V), and its operation counts, on a listing written here in cuobjdump's layout."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

LAB = Path(__file__).resolve().parents[1] / "tools" / "lab"
spec = importlib.util.spec_from_file_location("compile_one_kernel", LAB / "compile_one_kernel.py")
compile_one_kernel = importlib.util.module_from_spec(spec)
sys.modules["compile_one_kernel"] = compile_one_kernel
spec.loader.exec_module(compile_one_kernel)

# A kernel's shape: a prologue with one Q K^T, an outer loop (0x0040-0x0110) around the K/V loop
# (0x0060-0x00f0: Q K^T, P V, a softmax), an mbarrier retry stub at the end that jumps back
# unpredicated, and a loop without matrix products.
PROGRAM = [
    (0x0000, "S2R R0, SR_TID.X"),
    (0x0010, "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], RZ, !UPT, gsb0"),
    (0x0020, "@!P0 BRA 0x0200"),
    (0x0030, "MOV R2, RZ"),
    (0x0040, "IADD3 R3, R3, 0x1, RZ"),
    (0x0050, "SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [R11+URZ+0x26000], R8"),
    (0x0060, "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR12], RZ, !UPT"),
    (0x0070, "HGMMA.64x128x16.F32.BF16 R88, R148, gdesc[UR12].tnspB, R88, gsb0"),
    (0x0080, "MUFU.EX2 R5, R5"),
    (0x0090, "MUFU.EX2 R6, R6"),
    (0x00A0, "FFMA R5, R24, R7, -R8"),
    (0x00B0, "MUFU.TANH R9, R9"),
    (0x00C0, "@P1 FMUL R88, R88, R10"),
    (0x00D0, "F2FP.BF16.F32.PACK_AB R148, R6, R5"),
    (0x00E0, "ISETP.GE.AND P0, PT, R3, R4, PT"),
    (0x00F0, "@!P0 BRA 0x0060"),
    (0x0100, "HGMMA.64x128x16.F32.BF16 R88, R148, gdesc[UR4].tnspB, R88, gsb0"),
    (0x0110, "@P2 BRA 0x0040"),
    (0x0120, "EXIT"),
    (0x0130, "@!P3 BRA 0x0130"),  # a spin of its own
    (0x0140, "BRA 0x0050"),  # a retry stub back into the main code
    (0x0150, "@P4 BRA 0x0120"),  # a loop without matrix products
    (0x0160, "BRA 0x0160"),
]


def listing(program: list[tuple[int, str]]) -> str:
    """The program as cuobjdump -sass prints it: address comment, instruction, encoding."""
    lines = ["        code for sm_90a", "                Function : kernel"]
    for address, text in program:
        lines.append(f"        /*{address:04x}*/                   {text} ;   /* 0x000000000000 */")
        lines.append("                                                  /* 0x000fc40000000000 */")
    return "\n".join(lines)


def test_instructions_are_read_with_their_addresses():
    got = compile_one_kernel.addressed_sass(listing(PROGRAM))
    assert got == PROGRAM
    assert compile_one_kernel.normalized_sass(listing(PROGRAM)) == [text for _, text in PROGRAM]


def test_the_kv_loop_is_the_shortest_that_issues_both_products():
    loop = compile_one_kernel.kv_loop(PROGRAM)
    assert loop == [text for address, text in PROGRAM if 0x0060 <= address <= 0x00F0]


def test_no_kv_loop_without_both_products():
    only_qk = [(a, t.replace(".tnspB", "")) for a, t in PROGRAM]
    assert compile_one_kernel.kv_loop(only_qk) == []


def test_operations_are_counted_without_predicates_and_modifiers():
    loop = compile_one_kernel.kv_loop(PROGRAM)
    mix = compile_one_kernel.opcode_mix(loop)
    assert mix == {
        "HGMMA": 2, "MUFU.EX2": 2, "BRA": 1, "F2FP": 1, "FFMA": 1, "FMUL": 1, "ISETP": 1,
        "MUFU.TANH": 1,
    }  # fmt: skip
    assert list(mix)[:2] == ["HGMMA", "MUFU.EX2"]  # most first, then by name
    assert compile_one_kernel.mix_difference(mix, mix) == ""
    fewer = {**mix, "FMUL": 0, "IMAD": 2}
    assert compile_one_kernel.mix_difference(fewer, mix) == "-1 FMUL, +2 IMAD"


def test_products_that_wait_for_the_one_before_are_counted():
    # The overlapping shape: a tile's Q K^T slices back to back (the first starts its
    # accumulator), P V after them, the waits only after the commit; a full wait before the next
    # tile's first slice, which starts a new accumulator, is the loop's own.
    overlapping = [
        "WARPGROUP.ARRIVE",
        "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], RZ, !UPT",
        "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR8], R24",
        "HGMMA.64x128x16.F32.BF16 R88, R148, gdesc[UR12].tnspB, R88, gsb0",
        "WARPGROUP.DEPBAR.LE gsb0, 0x1",
        "MUFU.EX2 R5, R5",
        "WARPGROUP.DEPBAR.LE gsb0, 0x0",
        "WARPGROUP.ARRIVE",
        "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], RZ, !UPT",
    ]
    assert compile_one_kernel.waiting_products(overlapping) == 0
    # ptxas's serialized shape: a full wait and a new ARRIVE before every slice that adds to
    # its accumulator, in either operand form, predicated or not.
    serialized = [
        "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], RZ, !UPT, gsb0",
        "WARPGROUP.DEPBAR.LE gsb0, 0x0",
        "WARPGROUP.ARRIVE",
        "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR8], R24, gsb0",
        "WARPGROUP.DEPBAR.LE gsb0, 0x0",
        "WARPGROUP.ARRIVE",
        "@P0 HGMMA.64x128x16.F32.BF16 R88, R148, gdesc[UR12].tnspB, R88, gsb0",
    ]
    assert compile_one_kernel.waiting_products(serialized) == 2
    # Any other instruction between the wait and the product: the wait is the code's own.
    spaced = [*serialized[:2], "FMUL R88, R88, R10", *serialized[2:4]]
    assert compile_one_kernel.waiting_products(spaced) == 0


def test_the_loop_order_keeps_the_landmarks_in_order_as_runs():
    # A softcap consumer's loop as ptxas scheduled it in session 83: its turn, the wait for S,
    # the tanhs, the wait for its own P V, then the exp2s among P's conversions and stores.
    loop = [
        "BAR.SYNC.DEFER_BLOCKING R12, 0x180",
        "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], RZ, !UPT",
        "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR8], R24, gsb0",
        "HGMMA.64x128x16.F32.BF16 R88, gdesc[UR12].tnspB, R88, gsb0",
        "BAR.ARV R13, 0x180",
        "WARPGROUP.DEPBAR.LE gsb0, 0x1",
        "FMUL R5, R24, R7",
        "MUFU.TANH R5, R5",
        "FMUL R6, R25, R7",
        "MUFU.TANH R6, R6",
        "WARPGROUP.DEPBAR.LE gsb0, 0x0",
        "MUFU.EX2 R5, R5",
        "@P1 MUFU.EX2 R6, R6",
        "F2FP.BF16.F32.PACK_AB R148, R6, R5",
        "STS.128 [R20], R148",
        "STSM.16.M88.4 [R21], R148",
        "IADD3 R3, R3, 0x1, RZ",
        "@!P0 BRA 0x0060",
    ]
    order = compile_one_kernel.loop_order(loop)
    assert order == [
        ("BAR.SYNC", 1), ("Q K^T", 2), ("P V", 1), ("BAR.ARV", 1), ("wait 0x1", 1),
        ("MUFU.TANH", 2), ("wait 0x0", 1), ("MUFU.EX2", 2), ("F2FP", 1), ("STS", 1), ("STSM", 1),
        ("BRA", 1),
    ]  # fmt: skip
    assert compile_one_kernel.format_order(order[:6]) == (
        "BAR.SYNC, Q K^T x2, P V, BAR.ARV, wait 0x1, MUFU.TANH x2"
    )
