"""The command line: ``python -m forge_flash [info | check | bench ...]``.

With no command: the self-check, then a short benchmark on the best available backend.
"""

from __future__ import annotations

import sys

USAGE = """usage: python -m forge_flash [COMMAND]

  (none)   self-check against a float32 reference, then a short benchmark
  info     versions, backends and why each is (not) used, GPUs, plugin architectures
  check    the self-check only (exit status 1 on failure)
  bench    the benchmark; `python -m forge_flash bench --help` for its options
"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command, rest = (args[0], args[1:]) if args else (None, [])
    if command in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if command == "info":
        from .discovery import backend_info

        print(backend_info().format())
        return 0
    if command == "check":
        from .selfcheck import main as check

        return check()
    if command == "bench":
        from .benchmark import main as bench

        return bench(rest)
    if command is None:
        from .benchmark import main as bench
        from .discovery import backend_info
        from .selfcheck import main as check

        print(backend_info().format())
        print()
        status = check()
        print()
        bench(["--quick"])
        return status
    print(f"unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2
