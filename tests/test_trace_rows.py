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


def cta(sm: int, start_ns: int, span_ns: int, mhz: int = 1500) -> list[list[int]]:
    """A plain launch's CTA (one work tile): its SM, start and end times, and clocks that run at
    `mhz`; its first tile's events 100 cycles apart from its start."""
    first = [0] * T.SLOTS
    clock0 = 7_000_000 + start_ns  # any per-SM origin
    first[T.SM], first[T.START_TIME], first[T.END_TIME] = sm, start_ns, start_ns + span_ns
    first[T.START_CLOCK], first[T.END_CLOCK] = clock0, clock0 + span_ns * mhz // 1000
    for k, (_, slot) in enumerate(T.CTA_EVENTS[:-1]):
        first[slot] = clock0 + 100 * (k + 1)
    return [first] + [[0] * T.SLOTS] * 2


def test_cta_timeline_lines_up_the_ctas_of_each_sm():
    # SM 0: CTAs at 100-1100 ns and 1400-2400 (gap 300); SM 1: 150-1150, 1350-2350 (gap 200),
    # listed out of order. Idle share: 500 / (500 + 4000).
    ctas = [cta(0, 1400, 1000), cta(1, 150, 1000), cta(0, 100, 1000), cta(1, 1350, 1000)]
    lines = T.cta_timeline([*ctas, [[0] * T.SLOTS]])  # an unstamped CTA is left out
    text = "\n".join(lines)
    assert "CTAs: 4 on 2 SMs, clock ~1500 MHz" in text
    assert f"median {250:8.0f} ns" in text  # the gaps' median: (200 + 300) / 2
    assert "2 gaps: 11.1% of the SMs' time" in text
    assert f"median {1000:8.0f} ns" in text  # every CTA's span
    q_landed = next(line for line in lines if "Q landed (consumer 0)" in line)
    assert f"median {200:8.0f} cycles" in q_landed  # the second event after the start
    assert T.cta_timeline([[[0] * T.SLOTS]]) == []
