"""``python -m forge_flash``: see forge_flash.cli."""

import sys

from .cli import main

sys.exit(main(prog="python -m forge_flash"))
