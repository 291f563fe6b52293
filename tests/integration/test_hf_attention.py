"""``attn_implementation="forge_flash"`` in Hugging Face transformers, against ``sdpa``.

A small randomly initialised Llama model (no download): the same weights under both
implementations must give the same logits, with and without padding, in prefill and in
cached decoding; sliding windows (Mistral, Gemma 2 with its softcap) likewise; masks
forge-flash cannot honour must be refused, not ignored. CPU tests use
float32 (naive path); the ``kernels`` tests run float16/bfloat16 on the GPU kernels.
"""

from __future__ import annotations

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")
if not transformers.utils.is_torch_available():  # transformers 5 disables itself on torch < 2.6
    pytest.skip(
        f"transformers {transformers.__version__} does not use torch {torch.__version__}",
        allow_module_level=True,
    )

import forge_flash.integrations.transformers as ff_hf  # noqa: E402

from helpers.kernels import kernel_backend  # noqa: E402
from model_helpers import counted_kernels  # noqa: E402

VOCAB = 256


def _config(**overrides):
    settings = dict(
        vocab_size=VOCAB, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        initializer_range=0.1,  # logits well away from uniform
    )  # fmt: skip
    settings.update(overrides)
    return transformers.LlamaConfig(**settings)


def _pair(config, device="cpu", dtype=torch.float32, *, model=None, reference="sdpa"):
    """The same random weights under ``reference`` (sdpa) and forge_flash; Llama by default."""
    ff_hf.register()
    model = model or transformers.LlamaForCausalLM
    torch.manual_seed(0)
    sdpa = model._from_config(copy.deepcopy(config), attn_implementation=reference)
    ours = model._from_config(copy.deepcopy(config), attn_implementation="forge_flash")
    ours.load_state_dict(sdpa.state_dict())
    assert sdpa.config._attn_implementation == reference
    assert ours.config._attn_implementation == "forge_flash"
    return sdpa.to(device, dtype).eval(), ours.to(device, dtype).eval()


def _batch(device="cpu"):
    """Three sequences of 20 slots: full, 7 left-padding tokens, 4 right-padding tokens."""
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(3, VOCAB, (3, 20), generator=gen)
    mask = torch.ones(3, 20, dtype=torch.long)
    mask[1, :7] = 0
    mask[2, 16:] = 0
    return ids.to(device), mask.to(device)


@pytest.fixture
def varlen_calls(monkeypatch):
    calls = []
    real = ff_hf.flash_attn_varlen_fwd

    def spy(q, *args, **kwargs):
        calls.append(tuple(q.shape))
        return real(q, *args, **kwargs)

    monkeypatch.setattr(ff_hf, "flash_attn_varlen_fwd", spy)
    return calls


def _forced_logits(model, ids, mask, steps):
    """Prefill with ``mask``, then ``steps`` cached decode steps feeding fixed tokens.

    Returns the logits of every real token (prefill) and of each decode step, concatenated.
    """
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, use_cache=True)
        logits = [out.logits[mask.bool()]]
        # transformers 5 renamed past_key_values to cache (the old name goes in 5.40).
        name = "cache" if hasattr(out, "cache") else "past_key_values"
        for step in range(steps):
            token = torch.full((ids.shape[0], 1), 5 + step, device=ids.device)
            mask = torch.cat((mask, torch.ones_like(token)), dim=1)
            kwargs = {name: getattr(out, name)}
            out = model(input_ids=token, attention_mask=mask, use_cache=True, **kwargs)
            logits.append(out.logits[:, -1])
    return torch.cat(logits)


# -- CPU, float32 (naive path) --------------------------------------------------------------


def test_logits_match_sdpa_without_padding():
    sdpa, ours = _pair(_config())
    ids, _ = _batch()
    with torch.no_grad():
        expected, got = sdpa(ids).logits, ours(ids).logits
    assert expected.std() > 0.1  # a model whose logits depend on the input
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)


def test_padding_goes_through_varlen_and_matches_sdpa(varlen_calls):
    sdpa, ours = _pair(_config())
    ids, mask = _batch()
    expected = _forced_logits(sdpa, ids, mask, steps=4)
    got = _forced_logits(ours, ids, mask, steps=4)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)
    # Prefill packs the 20 + 13 + 16 real tokens; each decode step packs one per sequence.
    assert varlen_calls[0] == (49, 4, 64)
    assert varlen_calls[-1] == (3, 4, 64)
    assert len(varlen_calls) == 2 * 5  # 2 layers x (prefill + 4 steps)


def test_padding_changes_the_answer():
    # The test above would pass trivially if masks did not matter for this model.
    _, ours = _pair(_config())
    ids, mask = _batch()
    with torch.no_grad():
        masked = ours(ids, attention_mask=mask).logits[1, -1]
        unmasked = ours(ids).logits[1, -1]
    assert (masked - unmasked).abs().max() > 1e-2


def test_greedy_generate_with_left_padding_matches_sdpa():
    sdpa, ours = _pair(_config())
    ids, mask = _batch()
    ids, mask = ids[:2], mask[:2]  # generate() wants left padding only
    kwargs = dict(attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
    expected = sdpa.generate(ids, **kwargs)
    got = ours.generate(ids, **kwargs)
    assert torch.equal(got, expected)


def test_forced_naive_gives_the_same_logits():
    _, ours = _pair(_config())
    ids, mask = _batch()
    with torch.no_grad():
        auto = ours(ids, attention_mask=mask).logits
        with kernel_backend("naive"):
            naive = ours(ids, attention_mask=mask).logits
    torch.testing.assert_close(naive, auto, atol=0, rtol=0)


def test_model_constructed_from_a_config_naming_forge_flash():
    ff_hf.register()
    config = _config(attn_implementation="forge_flash")
    model = transformers.LlamaForCausalLM(config).eval()
    assert model.config._attn_implementation == "forge_flash"
    ids, mask = _batch()
    with torch.no_grad():
        assert torch.isfinite(model(ids, attention_mask=mask).logits).all()


def test_a_custom_4d_mask_is_refused():
    _, ours = _pair(_config())
    ids, _ = _batch()
    mask = torch.ones(3, 1, 20, 20, dtype=torch.bool).tril()
    with pytest.raises(ValueError, match="forge_flash"):
        ours(ids, attention_mask=mask)


def _mistral(sliding_window=4):
    return transformers.MistralConfig(
        vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, sliding_window=sliding_window,
        initializer_range=0.1,
    )  # fmt: skip


def _left_padded(device="cpu"):
    """_batch's tokens with left padding only (7 and 3 tokens): each sequence's real tokens
    stay one run while decoding, as generate() pads them."""
    ids, mask = _batch(device)
    mask[2] = 1
    mask[2, :3] = 0
    return ids, mask


def test_a_sliding_window_matches_sdpa_in_prefill_and_decoding(varlen_calls):
    # Mistral with a window of 4 over 20 tokens: most keys lie outside every row's window.
    sdpa, ours = _pair(_mistral(), model=transformers.MistralForCausalLM)
    ids, mask = _left_padded()
    with torch.no_grad():
        expected, got = sdpa(ids).logits, ours(ids).logits
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)
    expected = _forced_logits(sdpa, ids, mask, steps=6)
    got = _forced_logits(ours, ids, mask, steps=6)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)
    assert varlen_calls, "the padded calls went through varlen, with the window"


def test_the_window_changes_the_answer():
    # The test above would pass trivially if the window did not matter for this model.
    _, windowed = _pair(_mistral(4), model=transformers.MistralForCausalLM)
    _, wide = _pair(_mistral(64), model=transformers.MistralForCausalLM)
    ids, _ = _batch()
    with torch.no_grad():
        assert (windowed(ids).logits - wide(ids).logits).abs().max() > 1e-2


def test_gemma2_sliding_window_and_softcap_match_eager():
    # Gemma 2: sliding and full layers in turn, logits capped by tanh (softcap); eager is
    # transformers' reference for the softcap.
    config = transformers.Gemma2Config(
        vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, sliding_window=4,
        attn_logit_softcapping=5.0, final_logit_softcapping=None, query_pre_attn_scalar=32,
        initializer_range=0.1,
    )  # fmt: skip
    eager, ours = _pair(config, model=transformers.Gemma2ForCausalLM, reference="eager")
    ids, mask = _left_padded()
    expected = _forced_logits(eager, ids, mask, steps=4)
    got = _forced_logits(ours, ids, mask, steps=4)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)


def _qwen2():
    return transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True,
        sliding_window=4, max_window_layers=0, initializer_range=0.1,
    )  # fmt: skip


def _gemma3():
    return transformers.Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, sliding_window=4,
        query_pre_attn_scalar=32, initializer_range=0.1,
    )  # fmt: skip


@pytest.mark.parametrize(
    "config,model",
    [(_qwen2, "Qwen2ForCausalLM"), (_gemma3, "Gemma3ForCausalLM")],
    ids=["qwen2", "gemma3"],
)
def test_other_sliding_window_families_match_sdpa(config, model):
    sdpa, ours = _pair(config(), model=getattr(transformers, model))
    assert all(t == "sliding_attention" for t in ours.config.layer_types)
    ids, mask = _left_padded()
    expected = _forced_logits(sdpa, ids, mask, steps=5)
    got = _forced_logits(ours, ids, mask, steps=5)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)


def test_a_sliding_window_after_right_padding_matches_sdpa():
    # Right padding, then decoding: transformers' sliding-window cache keeps only the window's
    # columns, so the keys a new token's mask holds are the window's, padding inside them.
    sdpa, ours = _pair(_mistral(), model=transformers.MistralForCausalLM)
    ids, mask = _batch()  # row 2: 4 right-padding slots
    expected = _forced_logits(sdpa, ids, mask, steps=6)
    got = _forced_logits(ours, ids, mask, steps=6)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)


def test_a_sliding_window_with_padding_between_tokens_is_refused():
    # A full cache after right padding: packed, the new token (position 7) would see the last
    # 4 real tokens (1, 2 and itself among them), where the window counts positions (4-7).
    from transformers.masking_utils import sliding_window_causal_mask_function

    padding = torch.tensor([[1, 1, 1, 0, 0, 0, 0, 1]], dtype=torch.bool)
    keys = ff_hf.forge_flash_mask(
        1, q_length=1, kv_length=8, q_offset=7, kv_offset=0, attention_mask=padding,
        mask_function=sliding_window_causal_mask_function(4), local_size=4,
    )  # fmt: skip
    q, k, v = torch.randn(1, 4, 1, 16), torch.randn(1, 2, 8, 16), torch.randn(1, 2, 8, 16)
    with pytest.raises(ValueError, match="sliding window with padding"):
        ff_hf.forge_flash_attention_forward(torch.nn.Module(), q, k, v, keys, scaling=0.25)


def test_masks_other_than_causal_or_a_sliding_window_are_refused():
    from transformers.masking_utils import and_masks, sliding_window_causal_mask_function

    window = sliding_window_causal_mask_function(4)
    args = dict(batch_size=2, q_length=6, kv_length=6, q_offset=0, kv_offset=0)
    keys = ff_hf.forge_flash_mask(**args, mask_function=window, local_size=4)
    assert keys.shape == (2, 6) and keys.all() and keys._forge_flash_window == 4
    odd_key = and_masks(window, lambda b, h, q, kv: kv != 2)  # e.g. a custom extra mask
    for mask_function, local_size in ((window, 5), (window, None), (odd_key, 4)):
        with pytest.raises(ValueError, match="another mask"):
            ff_hf.forge_flash_mask(**args, mask_function=mask_function, local_size=local_size)


def test_sinks_and_softcap_reach_the_attention():
    # gpt-oss passes its per-head sinks as s_aux (in the weights' dtype), Gemma 2 its softcap.
    # (transformers swaps any implementation named *flash* for its own kernels on gpt-oss, so
    # the attention function is called here directly.)
    from helpers.reference import reference_attention

    gen = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(2, 4 if i == 0 else 2, 9, 16, generator=gen) for i in range(3))
    sinks = torch.randn(4, generator=gen).to(torch.bfloat16)
    module = torch.nn.Module()
    got, _ = ff_hf.forge_flash_attention_forward(
        module, q, k, v, None, scaling=0.3, s_aux=sinks, softcap=2.0
    )
    expected, _ = reference_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=0.3, causal=True,
        sinks=sinks.float(), softcap=2.0,
    )  # fmt: skip
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)


def test_dropout_in_training_mode_is_refused():
    _, ours = _pair(_config(attention_dropout=0.1))
    ids, _ = _batch()
    ours.train()
    with pytest.raises(ValueError, match="forward only"):
        ours(ids)


# -- GPU kernels ----------------------------------------------------------------------------


MODELS = {
    "llama": (_config, transformers.LlamaForCausalLM),
    "mistral-window-4": (_mistral, transformers.MistralForCausalLM),
}


@pytest.mark.kernels
@pytest.mark.parametrize("family", MODELS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_logits_match_sdpa_on_the_kernels(dtype, family, varlen_calls):
    """Against a float32 CPU reference, forge_flash's error is at most 2x sdpa's (+1e-3)."""
    config, model = MODELS[family]
    cpu_sdpa, _ = _pair(config(), model=model)
    reference = _forced_logits(cpu_sdpa, *_batch(), steps=4)
    sdpa, ours = _pair(config(), "cuda", dtype, model=model)
    ids, mask = _batch("cuda")
    expected = _forced_logits(sdpa, ids, mask, steps=4).float().cpu()
    with counted_kernels() as kernels:
        got = _forced_logits(ours, ids, mask, steps=4).float().cpu()
    assert kernels["varlen_fwd"] == len(varlen_calls) > 0  # padding ran on the varlen kernel
    sdpa_error = (expected - reference).abs().max().item()
    our_error = (got - reference).abs().max().item()
    assert our_error <= 2 * sdpa_error + 1e-3, (our_error, sdpa_error)
    scale = reference.abs().max().item()
    assert (got - expected).abs().max().item() <= 0.05 * scale


@pytest.mark.kernels
def test_unpadded_prefill_runs_on_the_kernels():
    sdpa, ours = _pair(_config(), "cuda", torch.float16)
    ids, _ = _batch("cuda")
    with torch.no_grad():
        expected = sdpa(ids).logits.float()
        with counted_kernels() as kernels:
            got = ours(ids).logits.float()
    assert kernels["fwd"] == 2  # one call per layer
    torch.testing.assert_close(got, expected, atol=0.02 * expected.abs().max().item(), rtol=0)
