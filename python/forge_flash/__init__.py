"""forge-flash: FlashAttention-2 style attention forward for PyTorch.

Kernels for NVIDIA SM80/SM90 GPUs come from the optional plugin ``forge-flash-cu13``
(``pip install 'forge-flash[cuda]'``); without it, or for inputs the kernels do not take,
every entry point runs a naive PyTorch path with the same semantics. See ``forge_flash.api``
for the conventions (bottom-right causal alignment, default scale, LSE layout, empty rows).
"""

from ._version import __version__
from .api import batched_decode_attention, flash_attn_fwd, flash_attn_varlen_fwd
from .backends.base import Backend
from .discovery import BackendInfo, BackendStatus, active_backend, backend_info
from .layers import attention_fwd, attention_path, decoder_attention, multi_head_attention
from .merge import merge_attention_states

__all__ = [
    "Backend",
    "BackendInfo",
    "BackendStatus",
    "__version__",
    "active_backend",
    "attention_fwd",
    "attention_path",
    "backend_info",
    "batched_decode_attention",
    "decoder_attention",
    "flash_attn_fwd",
    "flash_attn_varlen_fwd",
    "merge_attention_states",
    "multi_head_attention",
]
