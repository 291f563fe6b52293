"""What the tiny-decoder tests share: the prompts, the reference attention, call spies."""

from __future__ import annotations

import contextlib
import types

import torch

import forge_flash as ff
from forge_flash.models import TinyDecoder

from helpers.kernels import kernel_backend
from helpers.reference import reference_attention

#: Three prompts of different lengths (the longest spans two 128-row kernel tiles). Seed 59
#: was picked, from 60 tried, for a wide greedy decision margin: over the 96 tokens generated
#: from them (32 each) the best logit leads the second by at least 0.0145 (logits have std
#: 1), over 10x the change that float16 attention makes (about 1e-3). The generation tests
#: check that margin first, so a change of model or prompts that narrows it fails loudly
#: rather than making the token comparisons a coin toss.
PROMPT_LENGTHS = (7, 61, 150)
PROMPT_SEED = 59
NEW_TOKENS = 32
MIN_MARGIN = 0.01


def prompts() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(PROMPT_SEED)
    vocab = TinyDecoder().config.vocab_size
    return [torch.randint(0, vocab, (n,), generator=gen) for n in PROMPT_LENGTHS]


def reference_decoder_attention(
    q, k, v, num_heads, num_kv_heads, head_dim, scale=None, is_causal=True, *, cache_seqlens=None
):
    """``decoder_attention`` written with the float64 reference of tests/helpers, no forge-flash.

    Same inputs and result layout; the result is rounded to q's dtype like the real call.
    """
    batch, seqlen_q, _ = q.shape
    lengths = None if cache_seqlens is None else cache_seqlens.tolist()
    out, _ = reference_attention(
        q.unflatten(-1, (num_heads, head_dim)),
        k.unflatten(-1, (num_kv_heads, head_dim)),
        v.unflatten(-1, (num_kv_heads, head_dim)),
        scale=scale,
        causal=is_causal,
        key_lengths=lengths,
    )
    return out.reshape(batch, seqlen_q, num_heads * head_dim).to(q.dtype).to(q.device)


class CallLog:
    """Records which forge-flash entry point the model's attention reached."""

    def __init__(self, monkeypatch) -> None:
        import forge_flash.projections as layers

        self.calls: list[tuple[str, tuple[int, ...]]] = []
        for name in ("multi_head_attention", "batched_decode_attention"):
            real = getattr(layers, name)
            monkeypatch.setattr(layers, name, self._spy(name, real))

    def _spy(self, name, real):
        def spy(q, *args, **kwargs):
            self.calls.append((name, tuple(q.shape)))
            return real(q, *args, **kwargs)

        return spy

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


@contextlib.contextmanager
def counted_kernels():
    """Force the cuda backend and count the kernel launches made inside the block.

    Yields a dict {"fwd": n, "varlen_fwd": n}: a GPU test asserts the kernels really ran,
    since the adapter quietly sends inputs the kernels do not take to the naive path. A
    binding call that only asks for workspace (non-zero return) launches nothing and is not
    counted.
    """
    counts = {"fwd": 0, "varlen_fwd": 0}
    with kernel_backend("cuda"):
        backend = ff.active_backend()

        def counting(name, entry):
            def bind(*static):  # the binding's FwdCall / VarlenFwdCall, counted
                call = entry(*static)

                def count(launch):
                    def counted(*args):
                        needed = launch(*args)
                        counts[name] += not needed
                        return needed

                    return counted

                # A plain call (__call__) and one with the option arrays (.run).
                counted = count(call) if callable(call) else types.SimpleNamespace()
                counted.run = count(call.run)
                return counted

            return bind

        backend._fwd = counting("fwd", backend._fwd)
        backend._varlen_fwd = counting("varlen_fwd", backend._varlen_fwd)
        yield counts
