"""The attention variants (issue 14) on the CUDA kernels, against the float64 reference.

Tolerance (issue 3's rule, ``helpers.kernels.assert_close_to_reference``): our max error is at
most 2x that of PyTorch's own answer on the same 16-bit inputs, plus 1e-5, and never above
1e-2. PyTorch's answer is ``torch_variant_attention``: fused SDPA with a boolean mask for
windows, SDPA's precision model in eager PyTorch for softcap, ALiBi and sinks (see there).

Every call runs inside ``assert_runs_on_kernels``: the issue requires each variant alone,
window + softcap (Gemma 2) and window + sinks (gpt-oss) on the kernels for head_dim 64, 128
and 256, so a naive fallback fails the test.
"""

from __future__ import annotations

import math

import pytest
import torch

import forge_flash

from helpers.kernels import (
    assert_close_to_reference,
    assert_runs_on_kernels,
    hopper_kernels_launched,
    rand_qkv,
    reference_attention,
    torch_attention,
    torch_variant_attention,
)
from helpers.reference import reference_varlen

DTYPES = [torch.float16, torch.bfloat16]


def alibi_slopes(heads, batch=None):
    """ALiBi's geometric slopes; (batch, heads) rows differ per sequence."""
    slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)], device="cuda")
    if batch is None:
        return slopes
    return torch.stack([slopes * (1.0 + 0.25 * b) for b in range(batch)])


def sink_logits(heads, keys):
    """Around the logsumexp of a row over ``keys`` random keys (log(keys) + 0.5), so each
    head's sink takes between about 10% and 80% of the row's weight."""
    return math.log(max(keys, 1)) + torch.linspace(-2.0, 2.0, heads, device="cuda")


def _band(seqlen_k, window):
    """About how many keys a row sees under ``window`` (for sizing the sinks)."""
    left, right = window
    if left < 0 or right < 0:
        return seqlen_k
    return min(seqlen_k, left + right + 1)


WINDOW = (128, 64)
# name -> (batch, heads, seqlen_k) -> options
VARIANTS = {
    "window": lambda b, h, sk: dict(window_size=WINDOW),
    "window-left": lambda b, h, sk: dict(window_size=(256, -1)),
    "softcap": lambda b, h, sk: dict(softcap=2.0),
    "alibi": lambda b, h, sk: dict(alibi_slopes=alibi_slopes(h)),
    "alibi-batch": lambda b, h, sk: dict(alibi_slopes=alibi_slopes(h, b)),
    "sinks": lambda b, h, sk: dict(sinks=sink_logits(h, sk)),
    "window+softcap": lambda b, h, sk: dict(window_size=WINDOW, softcap=2.0),
    "window+sinks": lambda b, h, sk: dict(
        window_size=(128, 0), sinks=sink_logits(h, _band(sk, (128, 0)))
    ),
    "everything": lambda b, h, sk: dict(
        window_size=WINDOW,
        softcap=2.0,
        alibi_slopes=alibi_slopes(h, b),
        sinks=sink_logits(h, _band(sk, WINDOW)),
    ),
}
# The must-run-on-the-kernels set, used where the full list would be too many cases.
COMMON = ["window", "softcap", "alibi", "sinks", "window+softcap", "window+sinks"]


def _assert_lse(lse, ref_lse):
    finite = torch.isfinite(ref_lse)
    assert torch.equal(torch.isfinite(lse), finite), "rows that see no key: LSE -inf (no sinks)"
    torch.testing.assert_close(lse[finite], ref_lse[finite].float(), atol=2e-3, rtol=1e-3)


def _check(q, k, v, *, causal, out=None, **options):
    """flash_attn_fwd on the kernels against the reference; returns (out, reference lse)."""
    with assert_runs_on_kernels():
        got, lse = forge_flash.flash_attn_fwd(
            q, k, v, causal=causal, out=out, return_lse=True, **options
        )
    ref, ref_lse = reference_attention(q, k, v, causal=causal, **options)
    assert_close_to_reference(got, ref, torch_variant_attention(q, k, v, causal=causal, **options))
    _assert_lse(lse, ref_lse)
    return got, ref_lse


def _options(variant, batch, heads, seqlen_k):
    return VARIANTS[variant](batch, heads, seqlen_k)


# Every variant x head_dim 64/128/256 x both dtypes x causal: short K/V (Hopper's persistent
# kernel at head_dim 64/128), seqlen_q < seqlen_k, GQA 8/2.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant(variant, head_dim, causal, dtype):
    q, k, v = rand_qkv(2, 300, 700, 8, 2, head_dim, dtype)
    _check(q, k, v, causal=causal, **_options(variant, 2, 8, 700))
    # Without the LSE (the kernels may skip writing it): the same answer.
    options = _options(variant, 2, 8, 700)
    with assert_runs_on_kernels():
        plain = forge_flash.flash_attn_fwd(q, k, v, causal=causal, **options)
    ref, _ = reference_attention(q, k, v, causal=causal, **options)
    assert_close_to_reference(
        plain, ref, torch_variant_attention(q, k, v, causal=causal, **options)
    )


# Many query blocks over short K/V (Hopper: persistent, up to 1024 keys) and long K/V (a CTA
# per tile), with windows narrow enough that whole K/V tiles fall outside the band.
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("batch,seqlen", [(4, 1000), (1, 2500)])
@pytest.mark.parametrize("variant", COMMON)
def test_prefill_short_and_long_kv(variant, batch, seqlen, head_dim, causal):
    q, k, v = rand_qkv(batch, seqlen, seqlen, 16, 4, head_dim, torch.bfloat16)
    _check(q, k, v, causal=causal, **_options(variant, batch, 16, seqlen))


# seqlen_q != seqlen_k both ways (offsets of either sign, rows that see no key), MQA.
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seqlen_q,seqlen_k", [(700, 300), (1000, 1), (1, 1000), (77, 77)])
@pytest.mark.parametrize("variant", ["window", "window+sinks", "alibi-batch", "everything"])
def test_uneven_lengths(variant, seqlen_q, seqlen_k, causal):
    q, k, v = rand_qkv(2, seqlen_q, seqlen_k, 8, 1, 128, torch.bfloat16)
    options = _options(variant, 2, 8, seqlen_k)
    _check(q, k, v, causal=causal, **options)


# ALiBi over K/V tiles that lie wholly before or after every row's diagonal key takes a
# per-key multiply-add and leaves the row's part of the bias to the softmax (score_mod): slopes
# small enough that every tile on either side carries weight, query offsets of either sign,
# packed GQA rows, lengths off the tile grid, on every kernel path (SM80-style, Hopper plain and
# persistent launches, the decode kernel's one-query rows).
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize(
    "seqlen_q,seqlen_k,causal",
    [
        (1500, 2601, False),
        (2601, 1500, False),
        (2345, 2345, True),
        (900, 900, False),
        (1, 3000, False),
    ],
)
def test_alibi_on_either_side_of_the_diagonal(seqlen_q, seqlen_k, causal, head_dim):
    q, k, v = rand_qkv(2, seqlen_q, seqlen_k, 8, 2, head_dim, torch.bfloat16)
    slopes = torch.linspace(1e-3, 2e-2, 8, device="cuda") * torch.tensor(
        [[1.0], [0.5]], device="cuda"
    )
    _check(q, k, v, causal=causal, alibi_slopes=slopes)


# ALiBi alone over more than 1024 dense keys takes the Hopper AlibiOnly instance up to head_dim
# 192 (a multiply-add per score on one-sided tiles, the distance per score on tiles across the
# diagonal): both dtypes, ALiBi's own steep slopes and shallow ones scaled per sequence, offsets
# of either sign, causal, packed GQA, lengths off the tile grid.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 96, 128, 192])
@pytest.mark.parametrize(
    "seqlen_q,seqlen_k,causal",
    [(1500, 2601, False), (2601, 1500, False), (2345, 2345, True), (1100, 3000, True)],
)
@pytest.mark.parametrize("slopes", ["geometric", "shallow-per-sequence"])
def test_alibi_on_the_tma_path(slopes, seqlen_q, seqlen_k, causal, head_dim, dtype):
    q, k, v = rand_qkv(2, seqlen_q, seqlen_k, 8, 2, head_dim, dtype)
    if slopes == "geometric":
        alibi = alibi_slopes(8)
    else:
        alibi = torch.linspace(1e-3, 2e-2, 8, device="cuda") * torch.tensor(
            [[1.0], [0.5]], device="cuda"
        )
    _check(q, k, v, causal=causal, alibi_slopes=alibi)


def test_a_nan_alibi_slope_reaches_exactly_its_heads_rows():
    # Over 1024 keys (the tensor-core slice) as over fewer: a NaN slope makes its head NaN.
    for seqlen in (800, 2500):
        q, k, v = rand_qkv(1, seqlen, seqlen, 8, 2, 128, torch.bfloat16)
        slopes = alibi_slopes(8)
        slopes[5] = float("nan")
        with assert_runs_on_kernels():
            got = forge_flash.flash_attn_fwd(q, k, v, causal=True, alibi_slopes=slopes)
        assert got[:, :, 5].isnan().all(), "NaN in -> NaN out"
        others = torch.ones(8, dtype=torch.bool)
        others[5] = False
        assert not got[:, :, others].isnan().any(), "the NaN reached other heads"


# Windows over more than 1024 dense keys take the Hopper TMA-only instances, whose K/V tiles
# end where each query block's band ends (keys below 0 zero-filled and masked): every kind of
# band, offsets of either sign (rows that see no key), lengths off the tile grid.
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("seqlen_q,seqlen_k", [(1500, 2601), (2601, 1500), (2345, 2345)])
@pytest.mark.parametrize(
    "window,causal,extra",
    [
        ((300, 77), False, {}),
        ((1000, -1), False, {}),
        ((-1, 150), False, {}),
        ((700, 0), True, {}),
        ((0, 0), False, {}),
        ((500, 0), True, {"softcap": 20.0}),
        ((400, 30), False, {"sinks": True}),
    ],
)
def test_windows_on_the_tma_path(window, causal, extra, seqlen_q, seqlen_k, head_dim):
    q, k, v = rand_qkv(1, seqlen_q, seqlen_k, 8, 2, head_dim, torch.bfloat16)
    options = dict(extra, window_size=window)
    if options.pop("sinks", False):
        options["sinks"] = sink_logits(8, _band(seqlen_k, window))
    _check(q, k, v, causal=causal, **options)


def test_windows_that_leave_rows_without_keys():
    # Offset -400: rows below 400 - 64 see no key under window (128, 64): output 0, LSE -inf;
    # with sinks the LSE is the sink.
    q, k, v = rand_qkv(2, 700, 300, 8, 2, 128, torch.bfloat16)
    got, ref_lse = _check(q, k, v, causal=False, window_size=(128, 64))
    masked = torch.isneginf(ref_lse[0, 0])
    assert masked.sum() == 336 and torch.equal(got[:, :336], torch.zeros_like(got[:, :336]))
    sinks = sink_logits(8, 193)
    with assert_runs_on_kernels():
        got, lse = forge_flash.flash_attn_fwd(
            q, k, v, window_size=(128, 64), sinks=sinks, return_lse=True
        )
    assert torch.equal(got[:, :336], torch.zeros_like(got[:, :336]))
    # LSE = the sink, up to float32 rounding (a kernel may go through log2 and back).
    torch.testing.assert_close(lse[:, :, :336], sinks.view(1, 8, 1).expand(2, 8, 336))


# A routed head_dim (80 runs in the 96 tile with predicated loads).
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_routed_head_dim(variant, dtype):
    q, k, v = rand_qkv(2, 200, 333, 8, 2, 80, dtype)
    _check(q, k, v, causal=True, **_options(variant, 2, 8, 333))


@pytest.mark.parametrize("head_dim", [128, 256])
@pytest.mark.parametrize("softcap", [30.0, 50.0])
def test_softcap_on_large_logits(softcap, head_dim):
    # Scores of a few tens (Gemma 2's range): tanh well into saturation.
    q, k, v = rand_qkv(1, 256, 1024, 8, 4, head_dim, torch.bfloat16)
    _check(q * 6, k * 6, v, causal=True, softcap=softcap, window_size=(512, 0))


# A softcap over more than 1024 dense keys, alone or with a sliding window (Gemma 2's local
# layers), at head_dim 64, 96 and 128 in bf16 takes the Hopper BoundedSoftcap instance (three
# consumers, P through shared memory; fp16 and larger head dims the variant instance): offsets of
# either sign, causal, GQA, lengths off its 128-key tiles.
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("head_dim", [64, 96, 128])
@pytest.mark.parametrize("windowed", [False, True])
@pytest.mark.parametrize(
    "seqlen_q,seqlen_k,causal",
    [(1500, 2601, False), (2601, 1500, False), (2345, 2345, True), (1100, 3000, True)],
)
def test_softcap_alone_on_the_tma_path(seqlen_q, seqlen_k, causal, windowed, head_dim, dtype):
    q, k, v = rand_qkv(2, seqlen_q, seqlen_k, 16, 4, head_dim, dtype)
    options = {"causal": causal, "softcap": 30.0}
    if windowed:  # a query block then sees more than 1024 keys: no persistent launch
        options["window_size"] = (1500, 0) if causal else (1200, 400)
    names = hopper_kernels_launched(lambda: _check(q * 4, k * 4, v, **options))
    if torch.cuda.get_device_capability() == (9, 0):
        softcap_instance = any("BoundedSoftcap" in name for name in names)
        assert softcap_instance == (dtype == torch.bfloat16), names


@pytest.mark.parametrize("key", [1300, 1301])  # even and odd columns of an m16n8 slice
def test_nan_on_the_softcap_only_instance(key):
    # NaN in a query row and in a key, over 2000 keys (the TMA-only instances): the row, and
    # every row that sees the key, and no other.
    sq, sk = 1100, 2000
    q, k, v = rand_qkv(1, sq, sk, 8, 2, 128, torch.bfloat16)
    q[0, 100, 3, 7] = float("nan")  # query head 3 reads KV head 0
    k[0, key, 1, 5] = float("nan")  # KV head 1: query heads 4-7 read it

    def call():
        with assert_runs_on_kernels():
            return forge_flash.flash_attn_fwd(q, k, v, causal=True, softcap=30.0)

    got = []
    names = hopper_kernels_launched(lambda: got.append(call()))
    if torch.cuda.get_device_capability() == (9, 0):
        assert any("BoundedSoftcap" in name for name in names), names
    sees = key <= torch.arange(sq, device="cuda") + (sk - sq)  # bottom-right causal
    expected = torch.zeros(1, sq, 8, dtype=torch.bool, device="cuda")
    expected[0, :, 4:] = sees.unsqueeze(1)
    expected[0, 100, 3] = True
    assert sees.any() and not sees.all()
    assert torch.equal(got[0].isnan().any(dim=-1), expected), "NaN must reach exactly its rows"


@pytest.mark.parametrize("softcap", [10.0, 50.0, 52.0, 60.0])
def test_softcap_logits_at_both_ends_of_their_range(softcap):
    # With bf16 the Hopper kernel offsets softcapped logits by a constant instead of a running
    # maximum (up to softcap 52.7; 60 takes the running maximum). Half of the rows score every
    # key near -softcap (their P lie near the bottom of the offset range), half near +softcap
    # (the top), where P reaches 2^24 before the normalisation.
    q, k, v = rand_qkv(1, 256, 1500, 8, 8, 128, torch.bfloat16)
    direction = torch.randn(128, device="cuda", dtype=torch.bfloat16) * 4
    sign = torch.ones(256, 1, 1, device="cuda", dtype=torch.bfloat16)
    sign[::2] = -1
    q = q * 0.3 + sign * direction
    k = k * 0.3 + direction
    _check(q, k, v, causal=False, softcap=softcap)
    _check(q, k, v, causal=True, softcap=softcap, sinks=sink_logits(8, 7))


# -- varlen ------------------------------------------------------------------------------------


def _packed(lens, heads, heads_k, head_dim, dtype):
    seq_q = [a for a, _ in lens]
    seq_k = [b for _, b in lens]
    q = torch.randn(sum(seq_q), heads, head_dim, device="cuda", dtype=dtype)
    k = torch.randn(sum(seq_k), heads_k, head_dim, device="cuda", dtype=dtype)
    v = torch.randn(sum(seq_k), heads_k, head_dim, device="cuda", dtype=dtype)
    cu_q = torch.tensor([0, *torch.tensor(seq_q).cumsum(0).tolist()], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(seq_k).cumsum(0).tolist()], dtype=torch.int32)
    return q, k, v, cu_q.cuda(), cu_k.cuda(), seq_q, seq_k


def _varlen_yardstick(q, k, v, seq_q, seq_k, causal, options):
    """PyTorch's answer one sequence at a time, packed like the output."""
    outs = []
    q0 = k0 = 0
    for b, (nq, nk) in enumerate(zip(seq_q, seq_k, strict=True)):
        one = dict(options)
        slopes = options.get("alibi_slopes")
        if slopes is not None and slopes.dim() == 2:
            one["alibi_slopes"] = slopes[b]
        parts = (q[q0 : q0 + nq], k[k0 : k0 + nk], v[k0 : k0 + nk])
        outs.append(torch_variant_attention(*(x[None] for x in parts), causal=causal, **one)[0])
        q0, k0 = q0 + nq, k0 + nk
    return torch.cat(outs)


# Empty query and key sequences, a sequence whose rows see no key, long and short ones.
VARLEN_LENS = [(5, 300), (0, 17), (40, 0), (130, 130), (1, 4000), (700, 250), (0, 0), (64, 900)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize(
    "variant", ["window", "softcap", "alibi-batch", "sinks", "window+sinks", "everything"]
)
def test_varlen(variant, causal, dtype):
    q, k, v, cu_q, cu_k, seq_q, seq_k = _packed(VARLEN_LENS, 16, 4, 128, dtype)
    options = _options(variant, len(VARLEN_LENS), 16, 300)
    out = torch.full_like(q, float("nan"))
    with assert_runs_on_kernels():
        got, lse = forge_flash.flash_attn_varlen_fwd(
            q,
            k,
            v,
            cu_q,
            cu_k,
            max(seq_q),
            max(seq_k),
            causal=causal,
            out=out,
            return_lse=True,
            **options,
        )
    assert not torch.isnan(out).any(), "every output element must be written"
    ref, ref_lse = reference_varlen(q, k, v, seq_q, seq_k, causal=causal, **options)
    assert_close_to_reference(got, ref, _varlen_yardstick(q, k, v, seq_q, seq_k, causal, options))
    _assert_lse(lse, ref_lse)


# -- decode ------------------------------------------------------------------------------------


# One query over a long cache: split-KV (Hopper: cluster merge up to 16 splits of 512 keys,
# the combine kernel beyond). The sinks are sized to take 10-80% of each row's weight, so a
# sink counted once per split instead of once per row fails the LSE check.
@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize("seqlen_k", [8192, 32768, 70000])
@pytest.mark.parametrize("variant", ["sinks", "softcap", "alibi", "window-left", "window+sinks"])
def test_split_kv_decode(variant, seqlen_k, head_dim):
    q, k, v = rand_qkv(1, 1, seqlen_k, 32, 8, head_dim, torch.bfloat16)
    options = _options(variant, 1, 32, seqlen_k)
    _, ref_lse = _check(q, k, v, causal=False, **options)
    if "sinks" in options:
        weight = torch.exp(options["sinks"].double() - ref_lse[0, :, 0])
        assert weight.min() > 0.02 and weight.max() < 0.98, "the sinks must matter"


@pytest.mark.parametrize("variant", ["sinks", "window+sinks"])
def test_split_kv_with_sinks_is_deterministic(variant):
    q, k, v = rand_qkv(1, 1, 131072, 32, 8, 128, torch.bfloat16)
    options = _options(variant, 1, 32, 131072)
    with assert_runs_on_kernels():
        first = forge_flash.flash_attn_fwd(q, k, v, **options)
        second = forge_flash.flash_attn_fwd(q, k, v, **options)
    assert torch.equal(first, second)


def _decode_check(q, k_cache, v_cache, lens, options):
    seqlens = torch.tensor(lens, dtype=torch.int32, device="cuda")
    with assert_runs_on_kernels():
        got, lse = forge_flash.batched_decode_attention(
            q, k_cache, v_cache, seqlens, return_lse=True, **options
        )
    # Row b's query is aligned with its last key: offset cache_seqlens[b] - 1.
    ref, ref_lse = reference_attention(q[:, None], k_cache, v_cache, key_lengths=lens, **options)
    yardstick = torch_variant_attention(q[:, None], k_cache, v_cache, key_lengths=lens, **options)
    assert_close_to_reference(got[:, None], ref, yardstick)
    _assert_lse(lse, ref_lse[:, :, 0])
    return got, lse


@pytest.mark.parametrize("head_dim", [64, 128, 256])
@pytest.mark.parametrize(
    "variant",
    ["window", "softcap", "alibi-batch", "sinks", "window+softcap", "window+sinks", "everything"],
)
def test_batched_decode(variant, head_dim):
    lens = [1, 3000, 0, 17, 2049]
    q = torch.randn(5, 32, head_dim, device="cuda", dtype=torch.bfloat16)
    k_cache = torch.randn(5, 3000, 8, head_dim, device="cuda", dtype=torch.bfloat16)
    v_cache = torch.randn_like(k_cache)
    options = _options(variant, 5, 32, 193)
    got, lse = _decode_check(q, k_cache, v_cache, lens, options)
    assert torch.equal(got[2], torch.zeros_like(got[2]))  # the empty cache
    if "sinks" in options:
        torch.testing.assert_close(lse[2], options["sinks"])


# -- sliding-window decode over a long cache ---------------------------------------------------

LONG, BAND = 131072, 4096


@pytest.mark.parametrize("variant", ["window", "window+softcap", "window+sinks", "window+alibi"])
def test_sliding_window_decode_over_a_long_cache(variant):
    """128k keys, window (4095, 0): the last 4096 keys. The reference and PyTorch's answer
    run on those keys alone (the same distances to the query, so the same math)."""
    q, k, v = rand_qkv(1, 1, LONG, 32, 8, 128, torch.bfloat16)
    options = dict(window_size=(BAND - 1, 0))
    if variant == "window+softcap":
        options["softcap"] = 30.0
    if variant == "window+sinks":
        options["sinks"] = sink_logits(32, BAND)
    if variant == "window+alibi":
        options["alibi_slopes"] = alibi_slopes(32)
    with assert_runs_on_kernels():
        got, lse = forge_flash.flash_attn_fwd(q, k, v, return_lse=True, **options)
    tail = (q, k[:, -BAND:], v[:, -BAND:])
    ref, ref_lse = reference_attention(*tail, **options)
    assert_close_to_reference(got, ref, torch_variant_attention(*tail, **options))
    _assert_lse(lse, ref_lse)


def test_sliding_window_batched_decode_over_long_caches():
    lens = [LONG, 100000, 4000]
    q = torch.randn(3, 32, 128, device="cuda", dtype=torch.bfloat16)
    k_cache = torch.randn(3, LONG, 8, 128, device="cuda", dtype=torch.bfloat16)
    v_cache = torch.randn_like(k_cache)
    options = dict(window_size=(BAND - 1, -1), sinks=sink_logits(32, BAND))
    seqlens = torch.tensor(lens, dtype=torch.int32, device="cuda")
    with assert_runs_on_kernels():
        got, lse = forge_flash.batched_decode_attention(
            q, k_cache, v_cache, seqlens, return_lse=True, **options
        )
    for b, n in enumerate(lens):
        start = max(0, n - BAND)
        one = (q[b : b + 1, None], k_cache[b : b + 1, start:n], v_cache[b : b + 1, start:n])
        ref, ref_lse = reference_attention(*one, **options)
        assert_close_to_reference(
            got[b : b + 1, None], ref, torch_variant_attention(*one, **options)
        )
        _assert_lse(lse[b : b + 1], ref_lse[:, :, 0])


# -- the flat projections, out=, NaN, the guard ------------------------------------------------


@pytest.mark.parametrize("variant", ["window+softcap", "window+sinks", "alibi"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_flat_projection_calls_run_on_the_kernels(variant, dtype):
    b, s, h, hk, d = 2, 300, 16, 4, 128
    q, k, v = rand_qkv(b, s, s, h, hk, d, dtype)
    options = _options(variant, b, h, s)
    with assert_runs_on_kernels():  # float32 inputs are cast to 16 bits for the kernels
        got = forge_flash.attention_fwd(
            q.flatten(-2), k.flatten(-2), v.flatten(-2), h, hk, d, None, True, **options
        )
    assert got.dtype == dtype
    ref, _ = reference_attention(q, k, v, causal=True, **options)
    if dtype == torch.float32:  # cast to float16 for the kernels: float16's rounding
        torch.testing.assert_close(got.unflatten(-1, (h, d)).double(), ref, atol=5e-3, rtol=5e-3)
    else:
        yardstick = torch_variant_attention(q, k, v, causal=True, **options)
        assert_close_to_reference(got.unflatten(-1, (h, d)), ref, yardstick)


def test_decoder_attention_decode_runs_on_the_kernels():
    b, h, hk, d, cache = 4, 32, 8, 128, 5000
    q = torch.randn(b, 1, h * d, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(b, cache, hk * d, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    lens = [5000, 1, 2500, 0]
    options = dict(window_size=(1023, -1), sinks=sink_logits(h, 1024))
    seqlens = torch.tensor(lens, dtype=torch.int32, device="cuda")
    with assert_runs_on_kernels():
        got = forge_flash.decoder_attention(q, k, v, h, hk, d, cache_seqlens=seqlens, **options)
    per_head = (q.unflatten(-1, (h, d)), k.unflatten(-1, (hk, d)), v.unflatten(-1, (hk, d)))
    ref, _ = reference_attention(*per_head, key_lengths=lens, **options)
    yardstick = torch_variant_attention(*per_head, key_lengths=lens, **options)
    assert_close_to_reference(got.unflatten(-1, (h, d)), ref, yardstick)


def test_strided_out_is_fully_written_and_inputs_untouched():
    b, s, h, hk, d = 2, 333, 16, 4, 128
    q, k, v = rand_qkv(b, s, s, h, hk, d, torch.float16)
    options = _options("everything", b, h, s)
    before = [t.clone() for t in (q, k, v, options["alibi_slopes"], options["sinks"])]
    out_buf = torch.full((b, h, s, d), float("nan"), device="cuda", dtype=torch.float16)
    got, _ = _check(q, k, v, causal=True, out=out_buf.transpose(1, 2), **options)
    assert got.data_ptr() == out_buf.data_ptr()
    assert not torch.isnan(out_buf).any(), "every output element must be written"
    after = (q, k, v, options["alibi_slopes"], options["sinks"])
    for x, y in zip(before, after, strict=True):
        assert torch.equal(x, y), "inputs must not be modified"


@pytest.mark.parametrize("variant", ["window+sinks", "everything"])
def test_nan_in_a_query_row_stays_in_that_row(variant):
    q, k, v = rand_qkv(1, 256, 512, 8, 2, 128, torch.bfloat16)
    q[0, 100, 3, 7] = float("nan")
    options = _options(variant, 1, 8, 512)
    with assert_runs_on_kernels():
        got = forge_flash.flash_attn_fwd(q, k, v, causal=True, **options)
    poisoned = torch.zeros(1, 256, 8, dtype=torch.bool, device="cuda")
    poisoned[0, 100, 3] = True
    assert torch.isnan(got[poisoned]).all(), "NaN in -> NaN out"
    assert not torch.isnan(got[~poisoned]).any(), "the NaN reached other rows"


@pytest.mark.parametrize("key", [300, 301])  # even and odd columns: softcap kernels take
@pytest.mark.parametrize("variant", ["softcap", "window+softcap", "alibi", "window"])  # their
def test_nan_in_a_key_reaches_every_row_that_sees_it(variant, key):  # exponentials 2 ways
    sq, sk = 256, 512
    q, k, v = rand_qkv(1, sq, sk, 8, 2, 128, torch.bfloat16)
    k[0, key, 1, 5] = float("nan")  # KV head 1: query heads 4-7 read it
    options = _options(variant, 1, 8, sk)
    with assert_runs_on_kernels():
        got = forge_flash.flash_attn_fwd(q, k, v, causal=True, **options)
    left, _ = options.get("window_size", (-1, -1))
    rows = torch.arange(sq, device="cuda") + (sk - sq)  # each row's diagonal key
    sees = (key <= rows) & ((left < 0) | (key >= rows - left))
    expected = torch.zeros(1, sq, 8, dtype=torch.bool, device="cuda")
    expected[0, :, 4:] = sees.unsqueeze(1)
    assert sees.any() and not sees.all()
    assert torch.equal(got.isnan().any(dim=-1), expected), "NaN must reach exactly its rows"


def test_the_guard_catches_a_naive_fallback():
    # float32 inputs do not qualify for the kernels: the cuda backend runs the naive path.
    q, k, v = rand_qkv(1, 16, 16, 2, 2, 64, torch.float32)
    with pytest.raises(AssertionError, match="naive"), assert_runs_on_kernels():
        forge_flash.flash_attn_fwd(q, k, v)
    # ... and the naive path works again after the block.
    forge_flash.flash_attn_fwd(q, k, v)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_yardstick_errs_like_sdpa(dtype):
    """torch_variant_attention's eager branch (taken here for sinks of -inf, which change
    nothing) errs about as much as PyTorch's fused SDPA on plain attention: the bar it sets for
    softcap, ALiBi and sinks is neither vacuous nor stricter than the plain kernels' bar."""
    q, k, v = rand_qkv(2, 512, 1024, 16, 4, 128, dtype)
    ref, _ = reference_attention(q, k, v, causal=True)
    no_sinks = torch.full((16,), float("-inf"), device="cuda")
    eager = torch_variant_attention(q, k, v, causal=True, sinks=no_sinks)
    fused = torch_attention(q, k, v, causal=True)
    eager_err = (eager.double() - ref).abs().max().item()
    fused_err = (fused.double() - ref).abs().max().item()
    assert 0.5 * fused_err <= eager_err <= 3 * fused_err, (eager_err, fused_err)
