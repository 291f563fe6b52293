"""Greedy generation for a batch of prompts of different lengths, through a static KV cache.

Each prompt is prefilled on its own (batch 1, ``multi_head_attention``) into its row of the
cache; then every decode step runs the whole batch at once, each sequence at its own length:
batched decode for several prompts, the single-sequence path for one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from .kv_cache import KVCache
from .tiny_decoder import TinyDecoder

#: A decode step: (tokens (b,), cache) -> logits (b, vocab). ``TinyDecoder.decode`` or a
#: ``GraphedDecodeStep``.
DecodeStep = Callable[[torch.Tensor, KVCache], torch.Tensor]


class GenerationResult(NamedTuple):
    tokens: torch.Tensor  # (batch, new_tokens) int64, on the CPU
    logits: torch.Tensor  # (batch, new_tokens, vocab) float32, on the CPU: what chose each token


def prefill_prompts(
    model: TinyDecoder, prompts: Sequence[torch.Tensor], cache: KVCache
) -> torch.Tensor:
    """Prefill prompt b into cache row b; the last position's logits, (batch, vocab)."""
    last = []
    for row, prompt in enumerate(prompts):
        logits = model.prefill(prompt.to(model.device).unsqueeze(0), cache, slot=row)
        last.append(logits[0, -1])
    return torch.stack(last)


def greedy_generate(
    model: TinyDecoder,
    prompts: Sequence[torch.Tensor],
    new_tokens: int,
    *,
    decode_step: DecodeStep | None = None,
    cache: KVCache | None = None,
) -> GenerationResult:
    """Greedy continuation of each 1-D prompt by ``new_tokens`` tokens.

    ``decode_step`` replaces ``model.decode`` (e.g. a CUDA-graph replay); ``cache`` must then
    be the cache it was built on, empty, with room for the longest prompt plus ``new_tokens``.
    """
    if cache is None:
        longest = max(int(p.shape[0]) for p in prompts)
        cache = model.new_cache(len(prompts), longest + new_tokens)
    step = decode_step or model.decode
    logits = prefill_prompts(model, prompts, cache)
    all_logits = [logits.cpu()]
    tokens = logits.argmax(-1)
    chosen = [tokens.cpu()]
    for _ in range(new_tokens - 1):
        logits = step(tokens, cache)
        tokens = logits.argmax(-1)
        all_logits.append(logits.cpu())
        chosen.append(tokens.cpu())
    return GenerationResult(torch.stack(chosen, dim=1), torch.stack(all_logits, dim=1))


def decision_margin(logits: torch.Tensor) -> float:
    """The smallest gap between the best and second-best logit over all steps.

    Two runs whose logits differ by less than half of this choose the same tokens; a test
    comparing greedy tokens across devices states its logit tolerance against it.
    """
    top2 = logits.topk(2, dim=-1).values
    return float((top2[..., 0] - top2[..., 1]).min())
