"""forge-flash: FlashAttention-style attention forward for PyTorch.

Kernels for NVIDIA SM80/SM90 GPUs come from the optional plugin ``forge-flash-cu13``
(``pip install 'forge-flash[cuda]'``); without it, or for inputs the kernels do not take,
every entry point runs a naive PyTorch path with the same semantics. See ``forge_flash.api``
for the conventions (bottom-right causal alignment, default scale, LSE layout, empty rows,
the variant options).

The layers, each importing only those below it:

    api, projections        the entry points (and their custom ops for torch.compile)
    dispatch                per call: kernels or naive path (and why); the repeated-call cache
    discovery               which backend is active: the plugin, its version, the GPUs
    backends (naive, cuda)  the implementations; cuda adapts the plugin's binding
    validation, call        argument checks, and the one description of a call they produce
"""

from ._version import __version__
from .api import batched_decode_attention, flash_attn_fwd, flash_attn_varlen_fwd
from .backends.base import Backend
from .discovery import BackendInfo, BackendStatus, active_backend, backend_info
from .kvcache import flash_attn_with_kvcache
from .merge import merge_attention_states
from .projections import attention_fwd, attention_path, decoder_attention, multi_head_attention

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
    "flash_attn_with_kvcache",
    "merge_attention_states",
    "multi_head_attention",
]
