"""tools/lab/ncu_stalls.py reads Nsight Compute's source-page CSV: kernel blocks found, stall
samples summed and shared out by reason and by opcode, predicated instructions named by their
opcode. A synthetic two-kernel file stands in for a profile (no GPU, no Nsight Compute)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "lab" / "ncu_stalls.py"
spec = importlib.util.spec_from_file_location("ncu_stalls", SCRIPT)
ncu_stalls = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ncu_stalls)

HEADER = (
    '"Address","Source","Warp Stall Sampling (All Samples)","stall_wait","stall_mio",'
    '"stall_barrier","stall_wait (Not Issued)"\n'
)


def block(name: str, rows: list[tuple[str, str, int, int, int, int]]) -> str:
    lines = [f'"Kernel Name","{name}"\n', HEADER]
    for address, source, total, wait, mio, barrier in rows:
        lines.append(f'"{address}","{source}","{total:,}","{wait}","{mio}","{barrier}","0"\n')
    return "".join(lines)


def test_kernels_and_shares(tmp_path, capsys):
    path = tmp_path / "src.csv"
    path.write_text(
        block("k_softcap", [
            ("0x10", "MUFU.TANH R1, R2", 3000, 2000, 1000, 0),
            ("0x20", "@!P0 FFMA R3, R1, R4, R5", 500, 500, 0, 0),
            ("0x30", "WARPGROUP.DEPBAR.LE gsb0, 0x1", 500, 0, 0, 500),
        ])
        + block("k_plain", [("0x10", "MUFU.EX2 R1, R2", 7, 7, 0, 0)])
    )  # fmt: skip
    found = ncu_stalls.kernels(str(path))
    assert [(name, len(rows)) for name, rows in found] == [("k_softcap", 3), ("k_plain", 1)]

    ncu_stalls.report(found[0][1], top=2)
    out = capsys.readouterr().out
    assert "4000 samples" in out
    # 2500 of 4000 samples are waits, 1000 MIO, 500 barrier; MUFU holds 3000 of them.
    assert "wait                62.5%" in out
    assert "mio                 25.0%" in out
    assert "MUFU        75.0%" in out
    # the guarded FFMA counts as an FFMA, not as "@!P0"
    assert "FFMA        12.5%" in out
    top = out.split("instructions with the most samples:")[1]
    assert top.index("MUFU.TANH") < top.index("FFMA")  # most samples first
    assert "WARPGROUP" not in top  # only the top 2


def test_number_reads_thousands_and_blanks():
    assert ncu_stalls.number("1,234") == 1234.0
    assert ncu_stalls.number("") == 0.0
    assert ncu_stalls.opcode("@!P0  BRA 0x7f57") == "BRA"


def test_listing_numbers_the_kernels(tmp_path, capsys, monkeypatch):
    path = tmp_path / "src.csv"
    path.write_text(
        block("k_a", [("0x10", "FFMA R1, R2, R3, R4", 1200, 1200, 0, 0)])
        + block("k_b", [("0x10", "MUFU.EX2 R1, R2", 7, 7, 0, 0), ("0x20", "EXIT", 3, 3, 0, 0)])
    )
    monkeypatch.setattr("sys.argv", ["ncu_stalls.py", str(path)])
    ncu_stalls.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["0: 1 instructions, 1200 samples, k_a", "1: 2 instructions, 10 samples, k_b"]


def test_mix_counts_instructions_executed_per_opcode_side_by_side(tmp_path, capsys, monkeypatch):
    header = '"Address","Source","Warp Stall Sampling (All Samples)","Instructions Executed"\n'

    def executed(name: str, rows: list[tuple[str, str, int]]) -> str:
        lines = [f'"Kernel Name","{name}"\n', header]
        lines += [f'"{a}","{src}","0","{n:,}"\n' for a, src, n in rows]
        return "".join(lines)

    path = tmp_path / "src.csv"
    path.write_text(
        executed("ours", [
            ("0x10", "SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR10+0x34020], R0", 3_000_000),
            ("0x20", "@!P0 BRA 0x10", 3_000_000),
            ("0x30", "MUFU.EX2 R1, R2", 2_000_000),
            ("0x40", "MUFU.EX2 R3, R4", 500_000),
        ])
        + executed("theirs", [
            ("0x10", "MUFU.EX2 R1, R2", 2_500_000),
            ("0x20", "HGMMA.64x128x16 R1", 100_000),
        ])
    )  # fmt: skip
    monkeypatch.setattr("sys.argv", ["ncu_stalls.py", str(path), "--mix", "0", "1"])
    ncu_stalls.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["[0] ours", "[1] theirs"]
    table = {line.split()[0]: line.split()[1:] for line in lines[3:]}
    # ours' opcodes first, by its own counts (the guarded branch is a BRA), then theirs' others
    assert [line.split()[0] for line in lines[3:]] == ["SYNCS", "BRA", "MUFU", "HGMMA", "total"]
    assert table["MUFU"] == ["2.5", "2.5"]  # both of ours' exp2s summed
    assert table["SYNCS"] == ["3.0", "0.0"]
    assert table["HGMMA"] == ["0.0", "0.1"]
    assert table["total"] == ["8.5", "2.6"]


def test_phases_cut_the_consumer_loop_at_its_landmarks(tmp_path):
    header = '"Address","Source","Warp Stall Sampling (All Samples)","Instructions Executed"\n'
    # (address, source, samples, executed): the loop runs 63 times per consumer warp here; the
    # prologue and the producer's spinning wait (executed more often) are not the loop's.
    rows = [
        ("0x100", "SYNCS.EXCH.64 URZ, [UR8], UR4", 50, 1),
        ("0x200", "SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR46], R8", 10, 63),
        ("0x210", "BAR.SYNC.DEFER_BLOCKING R8, 0x100", 0, 63),
        ("0x220", "UMOV UR33, 0x40000040", 20, 63),
        ("0x230", "HGMMA.64x128x16.F32.BF16 R24, gdesc[UR12], RZ, !UPT", 10, 63),
        ("0x240", "WARPGROUP.DEPBAR.LE gsb0, 0x1", 10, 63),
        ("0x250", "MUFU.TANH R25, R25", 60, 63),
        ("0x260", "WARPGROUP.DEPBAR.LE gsb0, 0x0", 5, 63),
        ("0x270", "MUFU.EX2 R29, R29", 30, 63),
        ("0x280", "STSM.16.M88.4 [R13], R8", 5, 63),
        ("0x300", "SYNCS.PHASECHK.TRANS64.TRYWAIT P0, [UR12], R0", 900, 5000),
    ]
    text = '"Kernel Name","k"\n' + header
    text += "".join(f'"{a}","{src}","{n}","{e}"\n' for a, src, n, e in rows)
    path = tmp_path / "src.csv"
    path.write_text(text)
    ((_, found),) = ncu_stalls.kernels(str(path))
    # 150 loop samples: the UMOV after the turn barrier counts with it, the STSM with the exp2s.
    assert ncu_stalls.phases(found) == [
        ("K/V waits", 10 / 150),
        ("turn barrier", 20 / 150),
        ("products issued", 10 / 150),
        ("wait for S", 10 / 150),
        ("tanh", 60 / 150),
        ("wait for own P V", 5 / 150),
        ("exp2, P stored", 35 / 150),
    ]
    assert ncu_stalls.phases([r for r in found if "HGMMA" not in r["Source"]]) == []
