"""The paged twin's grouped TMA loads (csrc/kernels/grouped_pages.h), against a simulation of
the TMA unit's walk of each box in tests/c_api/grouped_pages_test.cpp. Needs g++; skips
otherwise."""

from __future__ import annotations

from host_program import build_and_run, needs_gxx


@needs_gxx
def test_grouped_loads_fill_the_grouped_tile(tmp_path):
    assert "all hold" in build_and_run(tmp_path, "grouped_pages_test.cpp")
