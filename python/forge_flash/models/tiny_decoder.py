"""A tiny Llama-style decoder whose attention goes through forge-flash's model-layer routing.

RMSNorm, rotary embeddings (rotate-half), grouped-query attention, SwiGLU MLP; random weights
drawn from a fixed seed on the CPU, so the same model exists bit for bit on every device.

Every attention call is ``forge_flash.decoder_attention`` (or a stand-in with its signature,
which is how tests put an independent reference in its place), so the design note's routing
is what runs:

* prefill (seqlen > 1)                         -> ``multi_head_attention``
* decode, one sequence, length known on host   -> ``multi_head_attention`` over the filled
  prefix of the KV cache
* decode, a batch (or lengths on the device)   -> ``batched_decode_attention`` with
  ``cache_seqlens``: no host value, so the step can be captured in a CUDA graph

``attn_dtype`` runs attention (and keeps the KV cache) in another dtype than the rest of the
model: float16/bfloat16 attention is what the kernels take, while norms, projections and
logits can stay in float32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..projections import decoder_attention
from .kv_cache import KVCache

#: ``decoder_attention(q, k, v, num_heads, num_kv_heads, head_dim, scale, is_causal, *,
#: cache_seqlens=None)`` on flat projections; returns (batch, seqlen_q, num_heads * head_dim).
AttentionFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class TinyDecoderConfig:
    vocab_size: int = 512
    hidden_size: int = 512
    num_layers: int = 2
    num_heads: int = 8
    num_kv_heads: int = 2
    head_dim: int = 64
    intermediate_size: int = 1024
    rope_theta: float = 10000.0
    rms_eps: float = 1e-5
    max_positions: int = 1024
    seed: int = 0


def _weight(gen: torch.Generator, rows: int, cols: int, std: float) -> nn.Parameter:
    return nn.Parameter(torch.randn(rows, cols, generator=gen) * std, requires_grad=False)


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (x32 * weight.float()).to(x.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, rotate-half form; x (b, s, heads, d), cos/sin (b or 1, s, 1, d/2)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


class _Prefill(NamedTuple):
    rows: slice  # cache rows the batch fills, from position 0


class _HostDecode(NamedTuple):
    length: int  # filled cache length of the single sequence, before this token


class _DeviceDecode(NamedTuple):
    rows: torch.Tensor  # (b,) int64: 0..b-1
    positions: torch.Tensor  # (b,) int64: where each sequence's new token goes
    seqlens: torch.Tensor  # (b,) int32: cache lengths including the new token


_Plan = _Prefill | _HostDecode | _DeviceDecode


class _Attention(nn.Module):
    def __init__(self, cfg: TinyDecoderConfig, gen: torch.Generator) -> None:
        super().__init__()
        q_width, kv_width = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        std = cfg.hidden_size**-0.5
        self.wq = _weight(gen, q_width, cfg.hidden_size, std)
        self.wk = _weight(gen, kv_width, cfg.hidden_size, std)
        self.wv = _weight(gen, kv_width, cfg.hidden_size, std)
        self.wo = _weight(gen, cfg.hidden_size, q_width, q_width**-0.5)
        self.heads, self.kv_heads, self.dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None,
        plan: _Plan,
        attention: AttentionFn,
        attn_dtype: torch.dtype | None,
    ) -> torch.Tensor:
        b, s, _ = x.shape
        q = F.linear(x, self.wq).view(b, s, self.heads, self.dim)
        k = F.linear(x, self.wk).view(b, s, self.kv_heads, self.dim)
        v = F.linear(x, self.wv).view(b, s, self.kv_heads, self.dim)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        dtype = attn_dtype or x.dtype
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        shape = (self.heads, self.kv_heads, self.dim)
        if isinstance(plan, _Prefill):
            if cache is not None:
                cache[0][plan.rows, :s] = k
                cache[1][plan.rows, :s] = v
            out = attention(q.flatten(2), k.flatten(2), v.flatten(2), *shape, None, True)
        elif isinstance(plan, _HostDecode):
            assert cache is not None
            k_cache, v_cache = cache
            # A slice, not an index: under torch.compile an int index would specialise the
            # graph on the length (a recompile per token), a slice bound stays symbolic.
            filled = plan.length + 1
            k_cache[:, plan.length : filled] = k
            v_cache[:, plan.length : filled] = v
            out = attention(
                q.flatten(2), k_cache[:, :filled].flatten(2), v_cache[:, :filled].flatten(2),
                *shape, None, True,
            )  # fmt: skip
        else:
            assert cache is not None
            k_cache, v_cache = cache
            # index_put_ with device indices: no host value, safe to capture in a CUDA graph.
            k_cache[plan.rows, plan.positions] = k[:, 0]
            v_cache[plan.rows, plan.positions] = v[:, 0]
            out = attention(
                q.flatten(2), k_cache.flatten(2), v_cache.flatten(2), *shape, None, True,
                cache_seqlens=plan.seqlens,
            )  # fmt: skip
        return F.linear(out.to(x.dtype), self.wo)


class _Block(nn.Module):
    def __init__(self, cfg: TinyDecoderConfig, gen: torch.Generator) -> None:
        super().__init__()
        self.eps = cfg.rms_eps
        self.attn_norm = nn.Parameter(torch.ones(cfg.hidden_size), requires_grad=False)
        self.attn = _Attention(cfg, gen)
        self.mlp_norm = nn.Parameter(torch.ones(cfg.hidden_size), requires_grad=False)
        std_in, std_out = cfg.hidden_size**-0.5, cfg.intermediate_size**-0.5
        self.w_gate = _weight(gen, cfg.intermediate_size, cfg.hidden_size, std_in)
        self.w_up = _weight(gen, cfg.intermediate_size, cfg.hidden_size, std_in)
        self.w_down = _weight(gen, cfg.hidden_size, cfg.intermediate_size, std_out)

    def forward(self, x, cos, sin, cache, plan, attention, attn_dtype) -> torch.Tensor:
        h = _rms_norm(x, self.attn_norm, self.eps)
        x = x + self.attn(h, cos, sin, cache, plan, attention, attn_dtype)
        h = _rms_norm(x, self.mlp_norm, self.eps)
        return x + F.linear(F.silu(F.linear(h, self.w_gate)) * F.linear(h, self.w_up), self.w_down)


class TinyDecoder(nn.Module):
    """The decoder; ``prefill`` and ``decode`` return float32 logits.

    Args:
        config: sizes and the weight seed.
        attention: the attention call, ``forge_flash.decoder_attention`` by default.
        attn_dtype: dtype of attention and the KV cache (default: the model's dtype).
    """

    def __init__(
        self,
        config: TinyDecoderConfig | None = None,
        *,
        attention: AttentionFn = decoder_attention,
        attn_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        cfg = config or TinyDecoderConfig()
        self.config = cfg
        self.attention = attention
        self.attn_dtype = attn_dtype
        gen = torch.Generator().manual_seed(cfg.seed)
        self.embed = nn.Parameter(torch.randn(cfg.vocab_size, cfg.hidden_size, generator=gen))
        self.embed.requires_grad_(False)
        self.blocks = nn.ModuleList(_Block(cfg, gen) for _ in range(cfg.num_layers))
        self.norm = nn.Parameter(torch.ones(cfg.hidden_size), requires_grad=False)
        self.lm_head = _weight(gen, cfg.vocab_size, cfg.hidden_size, cfg.hidden_size**-0.5)
        half = cfg.head_dim // 2
        inv_freq = cfg.rope_theta ** (-torch.arange(half, dtype=torch.float64) / half)
        angles = torch.arange(cfg.max_positions, dtype=torch.float64).unsqueeze(1) * inv_freq
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.embed.device

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """An empty KV cache for ``batch`` sequences of up to ``max_len`` tokens."""
        cfg = self.config
        dtype = self.attn_dtype or self.embed.dtype
        return KVCache(
            cfg.num_layers, batch, max_len, cfg.num_kv_heads, cfg.head_dim,
            dtype=dtype, device=self.device,
        )  # fmt: skip

    def _run(self, tokens: torch.Tensor, cos, sin, cache: KVCache | None, plan) -> torch.Tensor:
        x = F.embedding(tokens, self.embed)
        for i, block in enumerate(self.blocks):
            layer_cache = None if cache is None else (cache.k[i], cache.v[i])
            x = block(x, cos, sin, layer_cache, plan, self.attention, self.attn_dtype)
        return F.linear(_rms_norm(x, self.norm, self.config.rms_eps), self.lm_head).float()

    @torch.no_grad()
    def prefill(
        self, tokens: torch.Tensor, cache: KVCache | None = None, *, slot: int = 0
    ) -> torch.Tensor:
        """Logits (b, s, vocab) of a batch of equal-length prompts (b, s).

        With a cache, the prompts' K/V fill rows ``slot .. slot + b - 1`` from position 0.
        """
        b, s = tokens.shape
        cos = self.cos[:s].view(1, s, 1, -1)
        sin = self.sin[:s].view(1, s, 1, -1)
        logits = self._run(tokens, cos, sin, cache, _Prefill(slice(slot, slot + b)))
        if cache is not None:
            cache.lengths[slot : slot + b] = s
            if cache.host_lengths is not None:
                cache.host_lengths[slot : slot + b] = [s] * b
        return logits

    @torch.no_grad()
    def decode(
        self, tokens: torch.Tensor, cache: KVCache, *, device_lengths: bool = False
    ) -> torch.Tensor:
        """Logits (b, vocab) for one new token per sequence (``tokens`` (b,)); advances the cache.

        One sequence takes the host-length path (``multi_head_attention``) unless
        ``device_lengths``; a batch, or ``device_lengths``, takes batched decode, which reads
        no host value (CUDA-graph safe) and leaves the lengths known on the device only.
        """
        b = tokens.shape[0]
        if b == 1 and not device_lengths:
            length = cache.host_length(0)
            plan: _Plan = _HostDecode(length)
            cos = self.cos[length : length + 1].view(1, 1, 1, -1)
            sin = self.sin[length : length + 1].view(1, 1, 1, -1)
        else:
            positions = cache.lengths.long()
            rows = torch.arange(b, device=tokens.device)
            plan = _DeviceDecode(rows, positions, cache.lengths + 1)
            cos = self.cos[positions].view(b, 1, 1, -1)
            sin = self.sin[positions].view(b, 1, 1, -1)
        logits = self._run(tokens.unsqueeze(1), cos, sin, cache, plan)
        cache.lengths.add_(1)
        if isinstance(plan, _HostDecode):
            cache.host_lengths = [length + 1]
        else:
            # The lengths now live on the device only. Not updating the host copy keeps this
            # path free of host values: under torch.compile, reading it would specialise the
            # graph on the lengths and recompile every token.
            cache.host_lengths = None
        return logits[:, 0]
