"""forge_flash.flash_attn_interface: FlashAttention-2's Python API, checked as FlashAttention's
own tests check theirs: padded batches turned into packed (varlen) ones by random padding
masks, every function against a float64 reference, the packed forms against the unpacked
ones, and the return conventions (``return_attn_probs``) and signatures.

The variant options (window, softcap, ALiBi) and ``block_table`` go to the core entry points'
keywords, checked with ``reference_attention``'s variant keywords.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch

import forge_flash
from forge_flash import api
from forge_flash import flash_attn_interface as flash_attn

from helpers.reference import reference_attention, reference_varlen
from helpers.tolerance import assert_close_to_reference, assert_lse_close

DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# FlashAttention-2's signatures (flash_attn/flash_attn_interface.py): names and defaults.
_OPTIONS = [
    ("dropout_p", 0.0), ("softmax_scale", None), ("causal", False), ("window_size", (-1, -1)),
    ("softcap", 0.0), ("alibi_slopes", None), ("deterministic", False),
    ("return_attn_probs", False),
]  # fmt: skip
_NO_DEFAULT = inspect.Parameter.empty
_VARLEN = ["cu_seqlens_q", "cu_seqlens_k", "max_seqlen_q", "max_seqlen_k"]
FA2_SIGNATURES = {
    "flash_attn_func": [("q", _NO_DEFAULT), ("k", _NO_DEFAULT), ("v", _NO_DEFAULT), *_OPTIONS],
    "flash_attn_qkvpacked_func": [("qkv", _NO_DEFAULT), *_OPTIONS],
    "flash_attn_kvpacked_func": [("q", _NO_DEFAULT), ("kv", _NO_DEFAULT), *_OPTIONS],
    "flash_attn_varlen_func": [
        *[(name, _NO_DEFAULT) for name in ["q", "k", "v", *_VARLEN]],
        *_OPTIONS,
        ("block_table", None),
    ],
    "flash_attn_varlen_qkvpacked_func": [
        *[(name, _NO_DEFAULT) for name in ["qkv", "cu_seqlens", "max_seqlen"]],
        *_OPTIONS,
    ],
    "flash_attn_varlen_kvpacked_func": [
        *[(name, _NO_DEFAULT) for name in ["q", "kv", *_VARLEN]],
        *_OPTIONS,
    ],
    "flash_attn_with_kvcache": [
        ("q", _NO_DEFAULT),
        ("k_cache", _NO_DEFAULT),
        ("v_cache", _NO_DEFAULT),
        ("k", None),
        ("v", None),
        ("rotary_cos", None),
        ("rotary_sin", None),
        ("cache_seqlens", None),
        ("cache_batch_idx", None),
        ("cache_leftpad", None),
        ("block_table", None),
        ("softmax_scale", None),
        ("causal", False),
        ("window_size", (-1, -1)),
        ("softcap", 0.0),
        ("rotary_interleaved", True),
        ("alibi_slopes", None),
        ("num_splits", 0),
        ("return_softmax_lse", False),
    ],
}


@pytest.mark.parametrize("name", list(FA2_SIGNATURES))
def test_signature_is_flash_attention_2s(name):
    parameters = inspect.signature(getattr(flash_attn, name)).parameters.values()
    positional = [(p.name, p.default) for p in parameters if p.kind != p.KEYWORD_ONLY]
    assert positional == FA2_SIGNATURES[name]
    extra = [p.name for p in parameters if p.kind == p.KEYWORD_ONLY]
    assert extra == ["sinks"]  # forge-flash's one extension, keyword-only


def test_module_exports_the_seven_functions():
    assert sorted(flash_attn.__all__) == sorted(FA2_SIGNATURES)
    # forge-flash's own, with FlashAttention-2's error classes (below)
    assert flash_attn.flash_attn_with_kvcache.__wrapped__ is forge_flash.flash_attn_with_kvcache


# -- inputs the way FlashAttention's tests build them -------------------------------------


def _padding_lengths(gen, batch, max_seqlen, mode):
    """Per-sequence lengths of a random padding mask: full, random (at most 20 short),
    or a third (down to a third of the longest)."""
    if mode == "full":
        return [max_seqlen] * batch
    low = max(1, max_seqlen - 20) if mode == "random" else max_seqlen // 3
    return torch.randint(low, max_seqlen + 1, (batch,), generator=gen).tolist()


def _unpad(x, lengths):
    """(batch, seqlen, ...) padded -> (total, ...) packed, plus int32 cu_seqlens."""
    packed = torch.cat([x[b, :n] for b, n in enumerate(lengths)])
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return packed, cu


def _qkv(gen, batch, seqlen_q, seqlen_k, heads, heads_k, head_dim, dtype):
    q = torch.randn(batch, seqlen_q, heads, head_dim, generator=gen).to(dtype)
    k = torch.randn(batch, seqlen_k, heads_k, head_dim, generator=gen).to(dtype)
    v = torch.randn(batch, seqlen_k, heads_k, head_dim, generator=gen).to(dtype)
    return q, k, v


def _check_attn_probs_result(result, q, expected_out, expected_lse, dtype):
    """FlashAttention-2's (out, softmax_lse, S_dmask): S_dmask is empty without dropout."""
    assert isinstance(result, tuple) and len(result) == 3
    out, lse, s_dmask = result
    assert_close_to_reference(out, expected_out, dtype)
    assert_lse_close(lse, expected_lse)
    assert s_dmask.shape == (0,) and s_dmask.dtype == q.dtype and s_dmask.device == q.device


# -- the functions against the reference --------------------------------------------------

FWD_SHAPES = [(1, 37), (64, 64), (50, 23), (0, 5)]  # decode, square, sq > sk (masked rows), empty


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seqlen_q,seqlen_k", FWD_SHAPES)
def test_flash_attn_func_matches_reference(seqlen_q, seqlen_k, causal, dtype, gen):
    q, k, v = _qkv(gen, 2, seqlen_q, seqlen_k, 6, 2, 32, dtype)
    expected_out, expected_lse = reference_attention(q, k, v, causal=causal)
    out = flash_attn.flash_attn_func(q, k, v, causal=causal)
    assert isinstance(out, torch.Tensor)
    assert_close_to_reference(out, expected_out, dtype)
    result = flash_attn.flash_attn_func(q, k, v, 0.0, None, causal, return_attn_probs=True)
    _check_attn_probs_result(result, q, expected_out, expected_lse, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_packed_functions_match_reference_and_split_without_copying(
    causal, dtype, gen, monkeypatch
):
    batch, seqlen, heads, head_dim, scale = 2, 33, 4, 64, 0.3
    qkv = torch.randn(batch, seqlen, 3, heads, head_dim, generator=gen).to(dtype)
    q, k, v = qkv.unbind(2)
    expected_out, expected_lse = reference_attention(q, k, v, causal=causal, scale=scale)
    seen = []
    real_fwd = api.flash_attn_fwd
    monkeypatch.setattr(
        api, "flash_attn_fwd", lambda *a, **kw: seen.append(a) or real_fwd(*a, **kw)
    )
    packed = flash_attn.flash_attn_qkvpacked_func(qkv, softmax_scale=scale, causal=causal)
    assert_close_to_reference(packed, expected_out, dtype, "qkvpacked")
    kv = qkv[:, :, 1:]  # (batch, seqlen, 2, heads, head_dim), a view
    result = flash_attn.flash_attn_kvpacked_func(
        q, kv, softmax_scale=scale, causal=causal, return_attn_probs=True
    )
    _check_attn_probs_result(result, q, expected_out, expected_lse, dtype)
    storage = qkv.untyped_storage().data_ptr()
    assert len(seen) == 2
    for tensors in seen:
        assert all(t.untyped_storage().data_ptr() == storage for t in tensors[:3]), "copied"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("mode", ["full", "random", "third"])
def test_varlen_func_matches_reference(mode, causal, dtype):
    gen = torch.Generator().manual_seed(["full", "random", "third"].index(mode) * 2 + causal)
    batch, seqlen_q, seqlen_k, heads, heads_k, head_dim = 4, 40, 70, 6, 3, 32
    q, k, v = _qkv(gen, batch, seqlen_q, seqlen_k, heads, heads_k, head_dim, dtype)
    lengths_q = _padding_lengths(gen, batch, seqlen_q, mode)
    lengths_k = _padding_lengths(gen, batch, seqlen_k, mode)
    q_packed, cu_q = _unpad(q, lengths_q)
    k_packed, cu_k = _unpad(k, lengths_k)
    v_packed, _ = _unpad(v, lengths_k)
    expected_out, expected_lse = reference_varlen(
        q_packed, k_packed, v_packed, lengths_q, lengths_k, causal=causal
    )
    args = (q_packed, k_packed, v_packed, cu_q, cu_k, max(lengths_q), max(lengths_k))
    out = flash_attn.flash_attn_varlen_func(*args, causal=causal)
    assert_close_to_reference(out, expected_out, dtype)
    result = flash_attn.flash_attn_varlen_func(*args, causal=causal, return_attn_probs=True)
    _check_attn_probs_result(result, q_packed, expected_out, expected_lse, dtype)
    kv_packed = torch.stack((k_packed, v_packed), dim=1)
    packed = flash_attn.flash_attn_varlen_kvpacked_func(q_packed, kv_packed, *args[3:], 0.0,
                                                        causal=causal)  # fmt: skip
    assert_close_to_reference(packed, expected_out, dtype, "varlen kvpacked")


@pytest.mark.parametrize("causal", [False, True])
def test_varlen_qkvpacked_matches_reference(causal, gen):
    dtype, batch, seqlen, heads, head_dim = torch.float16, 3, 48, 4, 64
    qkv = torch.randn(batch, seqlen, 3, heads, head_dim, generator=gen).to(dtype)
    lengths = _padding_lengths(gen, batch, seqlen, "third")
    qkv_packed, cu = _unpad(qkv, lengths)
    q, k, v = qkv_packed.unbind(1)
    expected_out, expected_lse = reference_varlen(q, k, v, lengths, lengths, causal=causal)
    result = flash_attn.flash_attn_varlen_qkvpacked_func(
        qkv_packed, cu, max(lengths), causal=causal, return_attn_probs=True
    )
    _check_attn_probs_result(result, q, expected_out, expected_lse, dtype)


def test_deterministic_is_accepted_and_changes_nothing(gen):
    q, k, v = _qkv(gen, 2, 17, 29, 4, 4, 32, torch.bfloat16)
    plain = flash_attn.flash_attn_func(q, k, v, causal=True)
    deterministic = flash_attn.flash_attn_func(q, k, v, causal=True, deterministic=True)
    assert torch.equal(plain, deterministic)


# -- refused: dropout, and bad training-only arguments -----------------------------------


def _calls(q, k, v, cu, dropout_p, **options):
    """Each of the six attention functions called with ``dropout_p``."""
    qkv = torch.stack((q, k, v), dim=2)
    kv = torch.stack((k, v), dim=2)
    flat = [x.flatten(0, 1) for x in (q, k, v)]
    qkv_flat, kv_flat = qkv.flatten(0, 1), kv.flatten(0, 1)
    n = q.shape[1]
    return {
        "func": lambda: flash_attn.flash_attn_func(q, k, v, dropout_p, **options),
        "qkvpacked": lambda: flash_attn.flash_attn_qkvpacked_func(qkv, dropout_p, **options),
        "kvpacked": lambda: flash_attn.flash_attn_kvpacked_func(q, kv, dropout_p, **options),
        "varlen": lambda: flash_attn.flash_attn_varlen_func(*flat, cu, cu, n, n, dropout_p,
                                                            **options),
        "varlen_qkvpacked": lambda: flash_attn.flash_attn_varlen_qkvpacked_func(
            qkv_flat, cu, n, dropout_p, **options),
        "varlen_kvpacked": lambda: flash_attn.flash_attn_varlen_kvpacked_func(
            flat[0], kv_flat, cu, cu, n, n, dropout_p, **options),
    }  # fmt: skip


CALL_NAMES = ["func", "qkvpacked", "kvpacked", "varlen", "varlen_qkvpacked", "varlen_kvpacked"]


@pytest.mark.parametrize("which", CALL_NAMES)
def test_dropout_raises_not_implemented_naming_dropout(which, gen):
    q, k, v = _qkv(gen, 2, 5, 5, 2, 2, 16, torch.float32)
    cu = torch.tensor([0, 5, 10], dtype=torch.int32)
    with pytest.raises(NotImplementedError, match="dropout"):
        _calls(q, k, v, cu, 0.1)[which]()
    expected, _ = reference_attention(q, k, v)
    out = _calls(q, k, v, cu, 0.0)[which]()
    assert_close_to_reference(out.reshape(expected.shape), expected, torch.float32)


@pytest.mark.parametrize(
    "options,error,message",
    [
        ({"dropout_p": -0.1}, ValueError, "dropout_p must lie in [0, 1)"),
        ({"dropout_p": math.nan}, ValueError, "dropout_p must lie in [0, 1)"),
        ({"dropout_p": 1.0}, ValueError, "dropout_p must lie in [0, 1)"),
        ({"dropout_p": "0"}, TypeError, "dropout_p must be a float"),
        ({"deterministic": None}, TypeError, "deterministic must be a bool"),
        ({"return_attn_probs": 1}, TypeError, "return_attn_probs must be a bool"),
    ],
)
def test_bad_training_arguments_raise(options, error, message, gen):
    q, k, v = _qkv(gen, 1, 3, 3, 2, 2, 16, torch.float32)
    with pytest.raises(error) as info:
        flash_attn.flash_attn_func(q, k, v, **options)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda x: flash_attn.flash_attn_qkvpacked_func(x[:, :, :2]), "qkv must have shape"),
        (lambda x: flash_attn.flash_attn_kvpacked_func(x[:, :, 0], x), "kv must have shape"),
        (lambda x: flash_attn.flash_attn_varlen_qkvpacked_func(x, None, 3), "qkv must have"),
    ],
)
def test_packed_shapes_are_checked_under_their_own_names(call, message, gen):
    qkv = torch.randn(1, 3, 3, 2, 16, generator=gen)
    with pytest.raises(ValueError) as info:
        call(qkv)
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda q: flash_attn.flash_attn_func(q, q, q[:, :2]), ValueError, "v must have"),
        (lambda q: flash_attn.flash_attn_func(q, q, q.int()), TypeError, "v must be"),
        (lambda q: flash_attn.flash_attn_func(q, q, q, window_size=(-2, 0)), ValueError, "window"),
        (lambda q: flash_attn.flash_attn_func(q, q, q, softcap="1"), TypeError, "softcap"),
        (lambda q: flash_attn.flash_attn_qkvpacked_func(q), ValueError, "qkv must have"),
        (
            lambda q: flash_attn.flash_attn_varlen_func(q[0], q[0], q[0], None, None, 3, 3),
            TypeError,
            "cu_seqlens_q",
        ),
        (
            lambda q: flash_attn.flash_attn_with_kvcache(q, q, q, cache_seqlens=9),
            ValueError,
            "cache_seqlens",
        ),
        (lambda q: flash_attn.flash_attn_with_kvcache(q, q, q[..., :8]), ValueError, "v_cache"),
    ],
)
def test_bad_arguments_raise_runtime_errors_too_as_flash_attention_does(call, error, message, gen):
    # FlashAttention-2's checks raise RuntimeError; ours raise ValueError/TypeError naming the
    # argument. Through this module an error is both, with the core's message unchanged.
    q = torch.randn(1, 3, 2, 16, generator=gen)
    with pytest.raises(error) as info:
        call(q)
    assert isinstance(info.value, RuntimeError), type(info.value)
    assert str(info.value).startswith(message), str(info.value)
    assert isinstance(info.value.__cause__, error) and str(info.value.__cause__) == str(info.value)


def test_dropout_stays_not_implemented_error(gen):
    q = torch.randn(1, 3, 2, 16, generator=gen)
    with pytest.raises(NotImplementedError, match="dropout"):
        flash_attn.flash_attn_func(q, q, q, dropout_p=0.5)


# -- the variants and paged keys, forwarded to the core -----------------------------------

VARIANTS = {
    "window": {"window_size": (4, 2)},
    "window-causal": {"window_size": (6, -1), "causal": True},
    "softcap": {"softcap": 1.5},
    "alibi": {"alibi_slopes": torch.tensor([0.5, 0.25, 0.125, 0.0625])},
    "alibi-batch-causal": {
        "alibi_slopes": torch.rand(2, 4, generator=torch.Generator().manual_seed(2)),
        "causal": True,
    },
    "sinks": {"sinks": torch.tensor([0.5, -1.0, 2.0, 0.0])},
    "window-sinks-causal": {  # gpt-oss: a sliding window and sinks
        "window_size": (5, -1),
        "sinks": torch.tensor([1.5, 0.25, -0.5, 3.0]),
        "causal": True,
    },
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variants_match_reference(variant, gen):
    options = dict(VARIANTS[variant])
    causal = options.pop("causal", False)
    q, k, v = _qkv(gen, 2, 19, 31, 4, 2, 32, torch.float32)
    expected_out, expected_lse = reference_attention(q, k, v, causal=causal, **options)
    out, lse, _ = flash_attn.flash_attn_func(
        q, k, v, causal=causal, return_attn_probs=True, **options
    )
    assert_close_to_reference(out, expected_out, torch.float32)
    assert_lse_close(lse, expected_lse)
    lengths = [19, 19]
    cu_q = torch.tensor([0, 19, 38], dtype=torch.int32)
    cu_k = torch.tensor([0, 31, 62], dtype=torch.int32)
    packed = [x.flatten(0, 1) for x in (q, k, v)]
    varlen = flash_attn.flash_attn_varlen_func(
        *packed, cu_q, cu_k, max(lengths), 31, causal=causal, **options
    )
    assert_close_to_reference(varlen.view(q.shape), expected_out, torch.float32, "varlen")
    # The packed-K/V functions forward every option too.
    kv = flash_attn.flash_attn_kvpacked_func(
        q, torch.stack([k, v], dim=2), causal=causal, **options
    )
    assert_close_to_reference(kv, expected_out, torch.float32, "kvpacked")
    varlen_kv = flash_attn.flash_attn_varlen_kvpacked_func(
        packed[0], torch.stack(packed[1:], dim=1), cu_q, cu_k, 19, 31, causal=causal, **options
    )
    assert_close_to_reference(
        varlen_kv.view(q.shape), expected_out, torch.float32, "varlen kvpacked"
    )


@pytest.mark.parametrize("variant", ["sinks", "window-sinks-causal"])
def test_qkvpacked_functions_forward_the_sinks(variant, gen):
    options = dict(VARIANTS[variant])
    causal = options.pop("causal", False)
    q, k, v = _qkv(gen, 2, 23, 23, 4, 4, 32, torch.float32)
    expected_out, _ = reference_attention(q, k, v, causal=causal, **options)
    qkv = torch.stack([q, k, v], dim=2)
    out = flash_attn.flash_attn_qkvpacked_func(qkv, causal=causal, **options)
    assert_close_to_reference(out, expected_out, torch.float32)
    cu = torch.tensor([0, 23, 46], dtype=torch.int32)
    varlen = flash_attn.flash_attn_varlen_qkvpacked_func(
        qkv.flatten(0, 1), cu, 23, causal=causal, **options
    )
    assert_close_to_reference(varlen.view(q.shape), expected_out, torch.float32, "varlen")


@pytest.mark.parametrize("page_size", [1, 5, 16])
def test_varlen_with_block_table_matches_reference(page_size, gen):
    """Chunked prefill: several queries per sequence against paged keys; sequence b has
    cu_seqlens_k[b + 1] - cu_seqlens_k[b] keys, as in FlashAttention-2."""
    dtype, heads, heads_k, head_dim = torch.float16, 4, 2, 32
    lengths_q, lengths_k = [3, 1, 6], [3 * page_size, 7, 2 * page_size + 1]
    max_blocks = max(-(-n // page_size) for n in lengths_k)
    num_blocks = len(lengths_k) * max_blocks + 1
    table = torch.randperm(num_blocks, generator=gen)[: len(lengths_k) * max_blocks]
    table = table.view(len(lengths_k), max_blocks).to(torch.int32)
    k_cache = torch.randn(num_blocks, page_size, heads_k, head_dim, generator=gen).to(dtype)
    v_cache = torch.randn(num_blocks, page_size, heads_k, head_dim, generator=gen).to(dtype)
    q = torch.randn(sum(lengths_q), heads, head_dim, generator=gen).to(dtype)

    def gathered(cache):  # the keys of every sequence, packed, token by token
        rows = [cache[table[b, t // page_size], t % page_size]
                for b, n in enumerate(lengths_k) for t in range(n)]  # fmt: skip
        return torch.stack(rows)

    expected_out, _ = reference_varlen(
        q, gathered(k_cache), gathered(v_cache), lengths_q, lengths_k, causal=True
    )
    cu_q = torch.tensor([0, *torch.tensor(lengths_q).cumsum(0).tolist()], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(lengths_k).cumsum(0).tolist()], dtype=torch.int32)
    out = flash_attn.flash_attn_varlen_func(
        q, k_cache, v_cache, cu_q, cu_k, max(lengths_q), max(lengths_k), causal=True,
        block_table=table,
    )  # fmt: skip
    assert_close_to_reference(out, expected_out, dtype)
