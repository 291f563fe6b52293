"""Hugging Face transformers: ``attn_implementation="forge_flash"`` for causal decoder models.

    import forge_flash.integrations.transformers as ff_hf
    ff_hf.register()
    model = AutoModelForCausalLM.from_pretrained(name, attn_implementation="forge_flash")

``register()`` adds two entries to transformers' public registries:

* ``AttentionMaskInterface["forge_flash"]``: turns the model's masks into what forge-flash
  can honour: ``None`` (plain causal attention over every key) or a boolean key mask
  ``(batch, kv_used)`` of the keys that are real tokens; ``kv_used`` ends at the last query's
  position, and the queries are its last ``q_length`` columns. A sliding-window causal mask
  (Mistral, Qwen2, Gemma 2/3, gpt-oss, ...: transformers passes its width as ``local_size``)
  gives such a key mask too, carrying the window, after checking on sampled rows that the
  mask function is that window and nothing more. Masks it cannot express (packed sequences
  found from ``position_ids``, chunked, bidirectional or custom mask functions) raise
  ``ValueError`` rather than being silently ignored.
* ``AttentionInterface["forge_flash"]``: no mask -> ``flash_attn_fwd`` (causal, bottom-right
  aligned, which is what a KV cache needs); a key mask -> the real tokens are packed and
  sent to ``flash_attn_varlen_fwd`` (padding tokens' outputs are 0). The mask's window goes
  to ``window_size`` (``(local_size - 1, 0)``: each token sees itself and the
  ``local_size - 1`` before it, as transformers' mask has it); ``softcap`` (Gemma 2) and
  ``s_aux`` (gpt-oss's per-head sinks) go to ``softcap`` and ``sinks``. A window with padding
  inside a sequence (right padding, then decoding) is refused: packed, the window would count
  real tokens only, where transformers counts positions. A 4-D mask made by the caller is
  refused.

transformers treats any implementation whose name contains "flash" as a flash-attention
kernel and, when a model is created, tries to preload it as one from the Hub (which fails for
a name that is not a Hub repository). ``register()`` therefore marks "forge_flash" as the
loaded flash implementation in ``transformers.modeling_flash_attention_utils``, as a
successful preload would; nothing in transformers calls those preloaded functions for an
implementation of its own, like this one.

Kernels take float16/bfloat16: load the model in one of them (``dtype=torch.bfloat16``) to
run on the GPU kernels; float32 models run on the naive path. Forward only: dropout in
training mode is refused.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, causal_mask_function

from ..api import flash_attn_fwd, flash_attn_varlen_fwd

NAME = "forge_flash"

#: The window a sliding-window key mask carries (the tokens each sees, itself included), set
#: by forge_flash_mask on the tensor it returns; transformers hands that tensor to the
#: attention function unchanged.
_WINDOW = "_forge_flash_window"
#: Set beside it where every key is a real token: the attention needs no packing.
_EVERY_KEY = "_forge_flash_every_key"
#: Rows of the mask function checked against the sliding window's pattern (with every key).
_CHECKED_ROWS = 64


def _int(value: Any) -> int:
    # transformers passes some offsets as 0-d tensors to spare torch.compile a graph break.
    return int(value.item()) if isinstance(value, torch.Tensor) else int(value)


def forge_flash_mask(
    batch_size: int,
    q_length: int | None = None,
    kv_length: int = 0,
    q_offset: int | torch.Tensor = 0,
    kv_offset: int = 0,
    mask_function: Any = causal_mask_function,
    attention_mask: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor | None:
    """The mask function registered as ``AttentionMaskInterface["forge_flash"]``.

    Returns None (causal over all ``kv_length`` keys) or a bool ``(batch, kv_used)`` key mask
    (see the module docstring). transformers < 5.2 passes ``cache_position`` (the query
    positions) instead of ``q_length``/``q_offset``.
    """
    cache_position = kwargs.get("cache_position")
    if q_length is None:
        if cache_position is None:
            raise TypeError("forge_flash_mask needs q_length or cache_position")
        q_length = cache_position.shape[0]
        q_offset = cache_position[0] if q_length else 0
    end = _int(q_offset) + q_length - kv_offset  # key columns up to the last query
    if not 0 <= end <= kv_length:
        raise ValueError(
            f"forge_flash: queries end at key column {end}, outside the {kv_length} keys"
        )
    device = kwargs.get("device") or getattr(cache_position, "device", None)
    if device is None:
        device = attention_mask.device if attention_mask is not None else "cpu"
    window = None
    if mask_function is not causal_mask_function:
        window = _sliding_window(
            mask_function, kwargs.get("local_size"), batch_size, _int(q_offset), q_length,
            kv_offset, end,
        )  # fmt: skip
    if attention_mask is None:
        if end == kv_length and window is None:
            return None
        keys = torch.ones(batch_size, end, dtype=torch.bool, device=device)
        return _with_window(keys, window, end == kv_length)
    if attention_mask.dim() != 2:
        raise ValueError(
            "forge_flash: expected a 2-D padding mask (batch, seen + new tokens); got shape "
            f"{tuple(attention_mask.shape)}"
        )
    keys = attention_mask[:, kv_offset : kv_offset + end].to(torch.bool)
    if keys.shape[1] < end:  # columns past the mask are not tokens (a static cache's tail)
        keys = torch.nn.functional.pad(keys, (0, end - keys.shape[1]))
    every_key = end == kv_length and bool(keys.all())
    if every_key and window is None:
        return None
    return _with_window(keys, window, every_key)


def _with_window(keys: torch.Tensor, window: int | None, every_key: bool) -> torch.Tensor:
    """``keys`` carrying a sliding window (and whether every key is real) to the attention."""
    if window is not None:
        setattr(keys, _WINDOW, window)
        setattr(keys, _EVERY_KEY, every_key)
    return keys


def _sliding_window(
    mask_function: Any,
    local_size: Any,
    batch_size: int,
    q_offset: int,
    q_length: int,
    kv_offset: int,
    end: int,
) -> int:
    """The window of a sliding-window causal mask function: ``local_size``, once the function
    is seen to give exactly key <= query and key > query - local_size on up to _CHECKED_ROWS
    query rows (the first, the last and rows evenly between) against every key, for every
    sequence. Anything else (no local_size, a chunked or bidirectional mask, packed
    sequences, an extra mask function) raises ValueError. Evaluated on CPU index tensors, so
    a GPU model's step waits for nothing (a mask function that needs device tensors, such as
    packed sequences' lookup, fails there and is refused too)."""
    refusal = ValueError(
        "attn_implementation='forge_flash' honours causal attention, with a sliding window "
        "or not, and a padding mask; this model asked for another mask "
        f"({getattr(mask_function, '__name__', '?')}: packed sequences found from "
        "position_ids, chunked, bidirectional or custom mask functions). Use "
        "attn_implementation='sdpa' for it."
    )
    if isinstance(local_size, bool) or not isinstance(local_size, int) or local_size < 1:
        raise refusal
    rows = torch.linspace(0, max(q_length - 1, 0), min(q_length, _CHECKED_ROWS))
    q_idx = (q_offset + rows.round().long()).view(1, 1, -1, 1)
    kv_idx = (kv_offset + torch.arange(end)).view(1, 1, 1, -1)
    batch_idx = torch.arange(batch_size).view(-1, 1, 1, 1)
    head_idx = torch.zeros(1, 1, 1, 1, dtype=torch.long)
    try:
        got = mask_function(batch_idx, head_idx, q_idx, kv_idx)
    except Exception as error:  # a mask function that takes no tensors is no window we know
        raise refusal from error
    want = (kv_idx <= q_idx) & (kv_idx > q_idx - local_size)
    if not isinstance(got, torch.Tensor) or not bool((got.cpu() == want).all()):
        raise refusal
    return local_size


def forge_flash_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The attention function registered as ``AttentionInterface["forge_flash"]``.

    query (batch, heads, q_len, head_dim), key/value (batch, kv_heads, kv_len, head_dim), as
    transformers passes them; returns ((batch, q_len, heads, head_dim), None).
    """
    if dropout:
        raise ValueError(
            f"forge_flash is forward only and has no attention dropout; got dropout={dropout} "
            "(call model.eval(), or use another attn_implementation for training)"
        )
    if is_causal is None:
        is_causal = getattr(module, "is_causal", True)
    q = query.transpose(1, 2)  # (batch, q_len, heads, head_dim): views, no copies
    k = key.transpose(1, 2)
    v = value.transpose(1, 2)
    softcap, sinks = kwargs.get("softcap"), kwargs.get("s_aux")
    options: dict[str, Any] = dict(softmax_scale=scaling, causal=is_causal)
    if softcap is not None:
        options["softcap"] = float(softcap)
    if sinks is not None:  # gpt-oss: a learnable logit per head, in the weights' dtype
        options["sinks"] = sinks.to(device=q.device, dtype=torch.float32)
    if attention_mask is None:
        return flash_attn_fwd(q, k, v, **options), None
    if attention_mask.dtype != torch.bool or attention_mask.dim() != 2:
        raise ValueError(
            "attn_implementation='forge_flash' takes the masks its own mask function builds "
            f"(2-D boolean key masks); got a {attention_mask.dim()}-D {attention_mask.dtype} "
            "mask, e.g. a custom 4-D mask passed to the model. Use attn_implementation='sdpa'."
        )
    window = getattr(attention_mask, _WINDOW, None)
    if window is not None:
        options["causal"] = True  # a sliding-window mask is causal by definition
        options["window_size"] = (window - 1, 0)
        if getattr(attention_mask, _EVERY_KEY, False):
            return flash_attn_fwd(q, k, v, **options), None
    return _padded_attention(q, k, v, attention_mask, options), None


def _padded_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keys: torch.Tensor, options: dict
) -> torch.Tensor:
    """Attention over the real tokens only, through the varlen entry point.

    Valid queries are the valid keys among the last q_len key columns, so within a sequence
    the i-th valid query is preceded by exactly the valid keys before it: causal attention on
    the packed tokens (bottom-right aligned) is causal attention on the padded ones. A
    sliding window counts positions, so there every sequence's real tokens must be one run
    (left padding, or right padding before any decoding): packed, they keep their distances.
    """
    batch, q_len, heads, head_dim = q.shape
    used = keys.shape[1]
    queries = keys[:, used - q_len :]
    # One read-back for the indices and lengths: the packing sizes are host values.
    q_index = queries.reshape(-1).nonzero().squeeze(1)
    k_index = keys.reshape(-1).nonzero().squeeze(1)
    q_lens, k_lens = queries.sum(1, dtype=torch.int32), keys.sum(1, dtype=torch.int32)
    zero = torch.zeros(1, dtype=torch.int32, device=q.device)
    cu_q = torch.cat((zero, q_lens.cumsum(0, dtype=torch.int32)))
    cu_k = torch.cat((zero, k_lens.cumsum(0, dtype=torch.int32)))
    sizes = [q_lens.max(), k_lens.max()]
    if "window_size" in options:  # whether some sequence's real tokens are split (same read-back)
        sizes.append(_split_runs(keys, k_lens))
    max_q, max_k, *split = (int(n) for n in torch.stack(sizes).tolist())
    if any(split):
        raise ValueError(
            "attn_implementation='forge_flash' takes a sliding window with padding only "
            "before or after each sequence's tokens, not between them (right padding, then "
            "decoding): packed, the window would count tokens where transformers counts "
            "positions. Pad on the left (as generate() does), or use attn_implementation='sdpa'."
        )
    packed_q = q.reshape(batch * q_len, heads, head_dim).index_select(0, q_index)
    packed_k = k[:, :used].reshape(batch * used, *k.shape[2:]).index_select(0, k_index)
    packed_v = v[:, :used].reshape(batch * used, *v.shape[2:]).index_select(0, k_index)
    packed = flash_attn_varlen_fwd(
        packed_q, packed_k, packed_v, cu_q, cu_k, max_q, max_k, **options
    )
    out = q.new_zeros(batch * q_len, heads, head_dim)
    out.index_copy_(0, q_index, packed)
    return out.view(batch, q_len, heads, head_dim)


def _split_runs(keys: torch.Tensor, k_lens: torch.Tensor) -> torch.Tensor:
    """int32 1 where some row of ``keys`` holds its real tokens in more than one run, else 0."""
    columns = torch.arange(keys.shape[1], device=keys.device)
    first = torch.where(keys, columns, keys.shape[1]).amin(1)
    last = torch.where(keys, columns, -1).amax(1)
    return ((last - first + 1 != k_lens) & (k_lens > 0)).any().to(torch.int32)


def _mark_preloaded() -> None:
    """Let model creation's flash-attention preload accept "forge_flash" (module docstring)."""
    import transformers.modeling_flash_attention_utils as utils

    if hasattr(utils, "_loaded_implementation"):
        utils._loaded_implementation = NAME


def register() -> str:
    """Register ``attn_implementation="forge_flash"`` with transformers; returns the name.

    Idempotent. Call it again after loading another flash-attention implementation in the
    same process and before creating the next forge_flash model (the preload mark is
    transformers' single slot).
    """
    AttentionInterface.register(NAME, forge_flash_attention_forward)
    AttentionMaskInterface.register(NAME, forge_flash_mask)
    _mark_preloaded()
    return NAME
