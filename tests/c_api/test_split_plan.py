"""plan_fwd's split rules (csrc/kernels/split_plan.h) against their bounds, the hand-out of
steps in cta_work and the decisions their comments record, in tests/c_api/split_plan_test.cpp.
Needs g++; skips otherwise."""

from __future__ import annotations

from host_program import build_and_run, needs_gxx


@needs_gxx
def test_split_rules_hold(tmp_path):
    assert "all hold" in build_and_run(tmp_path, "split_plan_test.cpp")
