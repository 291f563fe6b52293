"""The tests a cut pytest run started and never finished, from its verbose log.

    python tools/lab/unfinished_tests.py gpu-tests.log

A GPU test that hangs (a kernel waiting on a barrier that never completes) does not fail: the
run goes on with the other workers until a time limit kills it, and its summary line never comes.
Session 58's varlen tests were cut so at their limit and read as "not all run"; session 59 found
two of them had hung (docs/benchmarks.md, 2026-12-05). With pytest-xdist at verbosity 1 or more
(`-v`, or `-q -v -v`) the log names each test as a worker starts it (a line of the node id
alone) and again with its outcome (`[gw3] [ 42%] PASSED tests/...`); a node id with the first
and not the second was running when the run ended. Without xdist a verbose run prints the
outcome on the node id's own line, so only a test still running ends its line with its id.
`gpu_session.sh` prints these when its TESTS_TIMEOUT cuts the tests.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

# A node id alone on its line: started (xdist prints the outcome on a line of its own; without
# xdist it follows on the same line, so only a test still running stays alone).
_STARTED = re.compile(r"^(\S+\.py::\S+) ?$", re.MULTILINE)
_ENDED = re.compile(r"\b(?:PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS) (\S+\.py::\S+)")


def unfinished(log: str) -> list[str]:
    """The node ids the log shows started and not ended, in the order they started."""
    ended = set(_ENDED.findall(log))
    seen: dict[str, None] = {}
    for node in _STARTED.findall(log):
        if node not in ended:
            seen.setdefault(node)
    return list(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="a verbose pytest-xdist log (gpu-tests.log)")
    nodes = unfinished(parser.parse_args().log.read_text(errors="replace"))
    print(f"{len(nodes)} test(s) started and never finished" + (":" if nodes else ""))
    for node in nodes:
        print(f"  {node}")


if __name__ == "__main__":
    main()
