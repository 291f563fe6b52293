"""Small models that run their attention through forge-flash (tests, examples, benchmarks).

``TinyDecoder`` is a Llama-style decoder (RMSNorm, rotary embeddings, GQA attention, SwiGLU)
with fixed-seed random weights: no downloads, identical on every device.
"""

from .cuda_graph import GraphedDecodeStep
from .generate import GenerationResult, greedy_generate
from .kv_cache import KVCache
from .tiny_decoder import AttentionFn, TinyDecoder, TinyDecoderConfig

__all__ = [
    "AttentionFn",
    "GenerationResult",
    "GraphedDecodeStep",
    "KVCache",
    "TinyDecoder",
    "TinyDecoderConfig",
    "greedy_generate",
]
