"""forge-flash CUDA kernel plugin.

Found by ``forge_flash`` through the ``forge_flash.backends`` entry point; not meant to be
used directly. ``_C`` is the compiled binding (see docs/architecture.md for its interface).
"""

from forge_flash_cu13 import _C

__version__: str = _C.__version__
__all__ = ["_C", "__version__"]
