"""tools/lab/trace_rows.py turns the kernel's timeline stamps into phases: checked on stamps
written by hand, where each phase's length is known."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "lab" / "trace_rows.py"
spec = importlib.util.spec_from_file_location("trace_rows", SCRIPT)
trace_rows = importlib.util.module_from_spec(spec)
spec.loader.exec_module(trace_rows)

T = trace_rows
C = T.CONSUMER


def tile(start: int, gaps: dict[int, int]) -> list[int]:
    """One work tile's stamps: the events in their order, each `gaps[slot]` cycles after the
    one before it, from `start`."""
    order = [T.BODY_TOP, T.BEFORE_Q_WAIT, C + T.Q_LANDED, C + T.K0_LANDED, C + T.TURN, C + T.S0,
             C + T.LAST_PV, C + T.EPILOGUE]  # fmt: skip
    stamps = [0] * T.SLOTS
    now = start
    for slot in order:
        now += gaps[slot]
        stamps[slot] = now
    stamps[T.Q_ISSUED] = stamps[C + T.Q_LANDED] - 4000
    return stamps


GAPS = {T.BODY_TOP: 300, T.BEFORE_Q_WAIT: 150, C + T.Q_LANDED: 120, C + T.K0_LANDED: 200,
        C + T.TURN: 180, C + T.S0: 750, C + T.LAST_PV: 11000, C + T.EPILOGUE: 280}  # fmt: skip
PERIOD = sum(GAPS.values())


def test_phases_of_a_regular_cta():
    cta = [tile(1000 + k * PERIOD, GAPS) for k in range(4)]
    got = T.phases([cta])
    assert got["next CtaWork (epilogue -> body)"] == [300] * 3
    assert got["body -> Q wait"] == [150] * 3
    assert got["Q wait"] == [120] * 3
    assert got["K[0] wait"] == [200] * 3
    assert got["turn"] == [180] * 3
    assert got["S[0] after the turn"] == [750] * 3
    assert got["the loop (S[0] -> last P V)"] == [11000] * 3
    assert got["epilogue"] == [280] * 3
    assert got["tile period"] == [PERIOD] * 3
    assert got["Q issued -> landed"] == [4000] * 3


def test_unstamped_tiles_and_the_first_tile_give_no_phase():
    cta = [tile(1000 + k * PERIOD, GAPS) for k in range(3)] + [[0] * T.SLOTS] * 2
    got = T.phases([cta])
    assert got["tile period"] == [PERIOD] * 2  # tiles 1 and 2; tile 0 has no predecessor
    assert got["epilogue"] == [280] * 2
    lines = T.summary([cta])
    assert any("tile period" in line and f"median {PERIOD:8.0f}" in line for line in lines)
    assert T.summary([[[0] * T.SLOTS] * 3]) == []
