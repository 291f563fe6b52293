"""`forge_flash.benchmark.time_graph`: what its CUDA graph holds and replays (not how fast)."""

from __future__ import annotations

import torch

from forge_flash.benchmark import MIN_GRAPH_CALLS, time_graph


def _recording_step(counter: torch.Tensor, seen: list[int]):
    def step(i: int) -> None:
        seen.append(i)
        counter[i] += 1  # one GPU kernel per call: the graph replays it

    return step


def test_time_graph_cycles_the_input_sets_up_to_min_calls():
    device = torch.device("cuda")
    counter = torch.zeros(3, dtype=torch.int64, device=device)
    seen: list[int] = []
    calls = MIN_GRAPH_CALLS + 4
    seconds = time_graph(_recording_step(counter, seen), device, copies=3, min_calls=calls)
    # Warm-up over each set once, then the captured calls cycling through the sets.
    assert seen == [0, 1, 2] + [i % 3 for i in range(calls)]
    # Each replay ran every captured call: the warm-up, the replay after capture and 20 timed.
    per_set = torch.tensor([sum(1 for i in range(calls) if i % 3 == s) for s in range(3)])
    assert counter.cpu().tolist() == (1 + 21 * per_set).tolist()
    assert seconds > 0


def test_time_graph_captures_one_call_per_set_by_default():
    device = torch.device("cuda")
    counter = torch.zeros(2, dtype=torch.int64, device=device)
    seen: list[int] = []
    time_graph(_recording_step(counter, seen), device, copies=2)
    assert seen == [0, 1, 0, 1]
    assert counter.cpu().tolist() == [22, 22]
