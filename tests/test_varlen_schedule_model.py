"""tools/lab/varlen_schedule_model.py: the work tiles' costs in each order, and how evenly the
three ways of dealing them out load the CTAs, against loads worked out by hand."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[1] / "tools" / "lab"
sys.path.insert(0, str(LAB))  # the model imports varlen_rows from beside it
try:
    import varlen_schedule_model as model
finally:
    sys.path.remove(str(LAB))


def test_each_order_lists_the_tiles_as_worked_out_by_hand():
    # 300 tokens: 3 query blocks of 128, each walking 3 K/V tiles (cost 3 + 0.5); 100 tokens:
    # 1 block of 1 K/V tile (1.5) and two blocks past its end (0.05 each); one head.
    a, b, e = 3.5, 1.5, 0.05
    costs = {
        order: model.tile_costs([300, 100], 1, 128, 128, order, overhead=0.5, empty=e)
        for order in model.ORDERS
    }
    assert costs["batch-head"] == [a, a, a, b, e, e]  # sequence by sequence, blocks inner
    assert costs["height"] == [a, e, a, e, a, b]  # the highest block first, sequences inner
    assert costs["sorted"] == [a, a, a, b]  # longest sequence first, no empty blocks


@pytest.mark.parametrize("order", model.ORDERS)
def test_every_order_holds_the_same_work(order):
    lengths, heads = [1000, 67, 129, 512, 128], 4
    work = [c for c in model.tile_costs(lengths, heads, 128, 64, order, 0.5, 0.0) if c > 0]
    expected = [math.ceil(n / 64) + 0.5 for n in lengths for _ in range(math.ceil(n / 128) * heads)]
    assert sorted(work) == sorted(expected)


def test_static_and_dynamic_dealing_load_the_ctas_as_worked_out_by_hand():
    costs = [3.0, 1.0, 1.0, 1.0]
    # static, 2 CTAs: tiles 0 and 2 (4), tiles 1 and 3 (2): mean 3 over the largest 4
    assert model.efficiency(costs, 2, "static") == pytest.approx(0.75)
    # dynamic: CTA 0 takes the 3; CTA 1 takes the three 1s as it frees up: 3 and 3
    assert model.efficiency(costs, 2, "dynamic") == pytest.approx(1.0)
    assert model.efficiency([2.0] * 6, 3, "static") == pytest.approx(1.0)
    assert model.efficiency([5.0, 1.0, 1.0], 3, "dynamic") == pytest.approx(7 / 3 / 5)


def test_claiming_a_tile_ahead_loads_the_ctas_as_worked_out_by_hand():
    # 2 CTAs: CTA 0 starts the 3 and claims tile 2 (a 1), CTA 1 starts tile 1 and claims tile 3;
    # CTA 1 is done at 2, CTA 0 at 3 + 1 = 4: mean 3 over 4, where claiming when free gives 1.0.
    assert model.efficiency([3.0, 1.0, 1.0, 1.0], 2, "ahead") == pytest.approx(0.75)
    # Equal tiles: as even as claiming when free; fewer tiles than CTAs: each its own.
    for ctas in (1, 3, 4):
        assert model.efficiency([2.0] * 7, ctas, "ahead") == pytest.approx(
            model.efficiency([2.0] * 7, ctas, "dynamic")
        )
    assert model.efficiency([5.0, 1.0], 3, "ahead") == pytest.approx(6 / 3 / 5)


def test_causal_tiles_cost_their_keys_to_the_diagonal_in_each_order():
    # Causal, one head: 300 tokens are 3 query blocks of 128 walking 1, 2, 3 K/V tiles (+ 0.5);
    # 100 tokens one block of 1 (1.5) and two past its end (0.05 each).
    e = 0.05
    costs = {
        order: model.tile_costs([300, 100], 1, 128, 128, order, 0.5, e, causal=True)
        for order in model.CAUSAL_ORDERS
    }
    assert costs["height"] == [3.5, e, 2.5, e, 1.5, 1.5]
    assert costs["grouped"] == costs["height"]  # two pairs: one group of cta_work's 8
    assert costs["sorted"] == [3.5, 2.5, 1.5, 1.5]


def test_the_grouped_order_takes_eight_pairs_at_a_time():
    # 10 sequences of 256 tokens (2 blocks: 1.5 and 2.5 causal), one head: the first group's 8
    # pairs take their high blocks, then their low ones; then the last 2 pairs, high then low.
    costs = model.tile_costs([256] * 10, 1, 128, 128, "grouped", 0.5, 0.0, causal=True)
    assert costs == [2.5] * 8 + [1.5] * 8 + [2.5] * 2 + [1.5] * 2
    height = model.tile_costs([256] * 10, 1, 128, 128, "height", 0.5, 0.0, causal=True)
    assert height == [2.5] * 10 + [1.5] * 10
