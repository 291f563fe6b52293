"""The command line: ``forge-flash [info | check | bench ...]`` (or ``python -m forge_flash``).

With no command: the self-check, then a short benchmark on the best available backend.
A usage mistake (an unknown command, flag or extra word) prints the usage and exits with 2.
"""

from __future__ import annotations

import json
import sys

from ._version import __version__

#: How the console script names itself; ``python -m forge_flash`` passes its own name.
DEFAULT_PROG = "forge-flash"

USAGE = """usage: {prog} [-h] [-V] [COMMAND]

  (none)        self-check against a float32 reference, then a short benchmark
  info [--json] versions, backends and why each is (not) used, GPUs, plugin architectures
                (--json: the same as a JSON object)
  check         the self-check only (exit status 1 on failure)
  bench         the benchmark; `{prog} bench --help` for its options
  -V, --version print the version and exit
"""


def usage(prog: str) -> str:
    return USAGE.format(prog=prog)


def _usage_error(prog: str, message: str) -> int:
    print(f"{usage(prog).splitlines()[0]}\n{prog}: error: {message}", file=sys.stderr)
    return 2


def _info(prog: str, rest: list[str]) -> int:
    from .discovery import backend_info

    if rest not in ([], ["--json"]):
        return _usage_error(prog, f"info takes only --json, got {' '.join(rest)!r}")
    info = backend_info()
    print(json.dumps(info.as_dict(), indent=1) if rest else info.format())
    return 0


def _main_job() -> int:
    from .benchmark import main as bench
    from .discovery import backend_info
    from .selfcheck import main as check

    print(backend_info().format())
    print()
    status = check()
    print()
    bench(["--quick"])
    return status


def main(argv: list[str] | None = None, prog: str = DEFAULT_PROG) -> int:
    args = sys.argv[1:] if argv is None else argv
    command, rest = (args[0], args[1:]) if args else (None, [])
    help_flags = ("-h", "--help")
    if command in (*help_flags, "help", "-V", "--version") and rest:
        return _usage_error(prog, f"{command} takes no arguments, got {' '.join(rest)!r}")
    if command in (*help_flags, "help") or (
        command in ("info", "check") and len(rest) == 1 and rest[0] in help_flags
    ):
        print(usage(prog))
        return 0
    if command in ("-V", "--version"):
        print(f"forge-flash {__version__}")
        return 0
    if command is None:
        return _main_job()
    if command == "info":
        return _info(prog, rest)
    if command == "check":
        if rest:
            return _usage_error(prog, f"check takes no arguments, got {' '.join(rest)!r}")
        from .selfcheck import main as check

        return check()
    if command == "bench":
        from .benchmark import main as bench

        return bench(rest, prog=f"{prog} bench")
    what = "option" if command.startswith("-") else "command"
    return _usage_error(prog, f"unknown {what} {command!r}")
