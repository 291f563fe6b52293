"""Which page sizes the Hopper paged twin's TMA loads take (csrc/kernels/paged_boxes.h), against
a simulation of its boxes in tests/c_api/paged_boxes_test.cpp. Needs g++; skips otherwise."""

from __future__ import annotations

from host_program import build_and_run, needs_gxx


@needs_gxx
def test_paged_boxes_fit_the_loads(tmp_path):
    assert "all hold" in build_and_run(tmp_path, "paged_boxes_test.cpp")
