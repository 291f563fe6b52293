"""A decode step of ``TinyDecoder`` captured once in a CUDA graph and replayed per token.

What makes the step capturable: static KV buffers, cache lengths advanced on the device
(batched decode with ``cache_seqlens``, never a host read), forge-flash's value checks skipped
while capturing, and the kernel adapter's workspace taken from torch's caching allocator
(the graph's private pool). A replay re-runs the captured kernels on the same buffers, so new
inputs are copied into ``tokens`` first and the logits are read from the same output tensor.
"""

from __future__ import annotations

import torch

from .kv_cache import KVCache
from .tiny_decoder import TinyDecoder


class GraphedDecodeStep:
    """``step(tokens, cache)`` with the signature of ``TinyDecoder.decode``, replaying a graph.

    Build it on a cache that holds what the sequences hold when decoding starts (the warm-up
    runs that capture needs are undone); afterwards the cache lengths live on the device only.
    """

    def __init__(self, model: TinyDecoder, cache: KVCache, *, warmup: int = 2) -> None:
        if model.device.type != "cuda":
            raise ValueError(f"CUDA graphs need a model on a CUDA device; got {model.device}")
        self.cache = cache
        self.tokens = torch.zeros(cache.batch, dtype=torch.long, device=model.device)
        lengths = cache.lengths.clone()
        # Warm-up on a side stream, as torch requires before capture (lazy initialisation,
        # allocator pools); it writes K/V past the current lengths, which the real steps
        # overwrite before anything reads them.
        side = torch.cuda.Stream(model.device)
        side.wait_stream(torch.cuda.current_stream(model.device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                model.decode(self.tokens, cache, device_lengths=True)
        torch.cuda.current_stream(model.device).wait_stream(side)
        cache.lengths.copy_(lengths)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = model.decode(self.tokens, cache, device_lengths=True)

    def __call__(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        if cache is not self.cache:
            raise ValueError("a captured decode step replays on the cache it was captured with")
        self.tokens.copy_(tokens)
        self.graph.replay()
        return self.logits.clone()  # the next replay overwrites self.logits
