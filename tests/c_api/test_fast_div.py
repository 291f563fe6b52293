"""FastDiv (csrc/kernels/fast_div.h), the kernels' division by launch-fixed divisors, against the
host's own division (tests/c_api/fast_div_test.cpp). Needs g++; skips otherwise."""

from __future__ import annotations

from host_program import build_and_run, needs_gxx


@needs_gxx
def test_fast_div_matches_integer_division(tmp_path):
    assert "exact" in build_and_run(tmp_path, "fast_div_test.cpp", timeout=120)
