"""The attention variants (issue 14) on the naive path, through the public API.

Sliding windows, softcap, ALiBi and attention sinks, alone and together, against the float64
reference (helpers.reference), plus hand-computed cases that check the reference's reading of
the semantics itself: with q = 0 every visible score is 0, so a row's output is a plain (or
ALiBi-weighted) mean of the value rows it sees.
"""

from __future__ import annotations

import math

import pytest
import torch

import forge_flash as ff

from helpers.reference import reference_attention, reference_flat, reference_varlen
from helpers.tolerance import assert_close_to_reference, assert_lse_close

BATCH, HEADS, HEADS_K, HEAD_DIM = 2, 4, 2, 16


def _qkv(
    batch,
    seqlen_q,
    seqlen_k,
    heads=HEADS,
    heads_k=HEADS_K,
    head_dim=HEAD_DIM,
    dtype=torch.float32,
    seed=0,
):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, seqlen_q, heads, head_dim, generator=gen).to(dtype)
    k = torch.randn(batch, seqlen_k, heads_k, head_dim, generator=gen).to(dtype)
    v = torch.randn(batch, seqlen_k, heads_k, head_dim, generator=gen).to(dtype)
    return q, k, v


def alibi_slopes(heads: int, batch: int | None = None) -> torch.Tensor:
    """ALiBi's geometric slopes, distinct per head; (batch, heads) rows differ per sequence."""
    slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / heads) for h in range(heads)])
    if batch is None:
        return slopes
    return torch.stack([slopes * (1.0 + 0.5 * b) for b in range(batch)])


def assert_is_the_sink(lse: torch.Tensor, sinks: torch.Tensor) -> None:
    """A row that sees no key has LSE = its sink (up to float32 rounding: a kernel may go
    through log2 and back)."""
    torch.testing.assert_close(lse, sinks, atol=1e-6, rtol=1e-6)


def sink_logits(heads: int) -> torch.Tensor:
    """Distinct per head and of the size of a small row's logsumexp, so they matter."""
    return torch.linspace(-1.0, 3.0, heads)


# Each variant as the keyword arguments of both the API and the reference.
VARIANTS = {
    "window-both": lambda b, h: dict(window_size=(2, 1)),
    "window-left": lambda b, h: dict(window_size=(3, -1)),
    "window-right": lambda b, h: dict(window_size=(-1, 2)),
    "window-zero": lambda b, h: dict(window_size=(0, 0)),
    "softcap": lambda b, h: dict(softcap=1.5),
    "alibi-heads": lambda b, h: dict(alibi_slopes=alibi_slopes(h)),
    "alibi-batch": lambda b, h: dict(alibi_slopes=alibi_slopes(h, b)),
    "sinks": lambda b, h: dict(sinks=sink_logits(h)),
    "window+softcap": lambda b, h: dict(window_size=(3, 1), softcap=1.5),
    "window+sinks": lambda b, h: dict(window_size=(2, 0), sinks=sink_logits(h)),
    "alibi+sinks": lambda b, h: dict(alibi_slopes=alibi_slopes(h), sinks=sink_logits(h)),
    "everything": lambda b, h: dict(
        window_size=(3, 1), softcap=2.0, alibi_slopes=alibi_slopes(h, b), sinks=sink_logits(h)
    ),
}
# seqlen_q == seqlen_k, more keys (offset > 0), more queries (offset < 0: masked rows).
SHAPES = [(6, 6), (4, 9), (9, 4)]


def _reference(q, k, v, *, softmax_scale=None, **options):
    return reference_attention(q, k, v, scale=softmax_scale, **options)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seqlen_q,seqlen_k", SHAPES)
@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_matches_the_reference(variant, seqlen_q, seqlen_k, causal):
    q, k, v = _qkv(BATCH, seqlen_q, seqlen_k, seed=seqlen_q)
    options = VARIANTS[variant](BATCH, HEADS)
    expected_out, expected_lse = _reference(q, k, v, causal=causal, **options)
    out, lse = ff.flash_attn_fwd(q, k, v, causal=causal, return_lse=True, **options)
    assert out.shape == q.shape and lse.shape == (BATCH, HEADS, seqlen_q)
    assert_close_to_reference(out, expected_out, q.dtype)
    assert_lse_close(lse, expected_lse)
    # Without the LSE the naive path may take another route (SDPA): same answer.
    plain = ff.flash_attn_fwd(q, k, v, causal=causal, **options)
    assert_close_to_reference(plain, expected_out, q.dtype, "out without lse")


# On the CPU the naive path runs these on torch's fused CPU op (the window as a 0 / -inf mask,
# the sink and the LSE from its logsumexp); the explicit float32 scores, the definition on every
# device, serve where that op is missing and for softcap and ALiBi.
FUSED_OP_VARIANTS = [None, "window-both", "window-left", "window-right", "window-zero", "sinks",
                     "window+sinks"]  # fmt: skip


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seqlen_q,seqlen_k", SHAPES)
@pytest.mark.parametrize("variant", FUSED_OP_VARIANTS)
def test_the_naive_paths_two_ways_give_the_reference(
    monkeypatch, variant, seqlen_q, seqlen_k, causal
):
    from forge_flash.backends import naive

    fused = naive._cpu_flash_op()
    if fused is None:
        pytest.skip("this torch has no fused CPU attention op with masks and logsumexp")
    q, k, v = _qkv(BATCH, seqlen_q, seqlen_k, seed=seqlen_k)
    options = {} if variant is None else VARIANTS[variant](BATCH, HEADS)
    expected_out, expected_lse = _reference(q, k, v, causal=causal, **options)
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return fused(*args, **kwargs)

    for way in (lambda: counted, lambda: None):  # the fused op, then the explicit scores
        monkeypatch.setattr(naive, "_cpu_flash_op", way)
        out, lse = ff.flash_attn_fwd(q, k, v, causal=causal, return_lse=True, **options)
        assert_close_to_reference(out, expected_out, q.dtype)
        assert_lse_close(lse, expected_lse)
    assert calls, "the fused op did not serve the call"


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_changes_the_answer(variant):
    """The inputs above are such that each option matters (else the tests could not fail)."""
    q, k, v = _qkv(BATCH, 4, 9)
    options = VARIANTS[variant](BATCH, HEADS)
    with_options, _ = _reference(q, k, v, **options)
    without, _ = _reference(q, k, v)
    assert (with_options - without).abs().max() > 1e-2
    out = ff.flash_attn_fwd(q, k, v, **options)
    assert (out.double() - without).abs().max() > 1e-2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("variant", ["window+softcap", "window+sinks", "alibi-batch", "everything"])
def test_half_precision_inputs(variant, dtype):
    q, k, v = _qkv(BATCH, 11, 23, dtype=dtype, seed=3)
    options = VARIANTS[variant](BATCH, HEADS)
    expected_out, expected_lse = _reference(q, k, v, causal=True, **options)
    out, lse = ff.flash_attn_fwd(q, k, v, causal=True, return_lse=True, **options)
    assert out.dtype == dtype and lse.dtype == torch.float32
    assert_close_to_reference(out, expected_out, dtype)
    assert_lse_close(lse, expected_lse)
    assert_close_to_reference(
        ff.flash_attn_fwd(q, k, v, causal=True, **options), expected_out, dtype, "out without lse"
    )


@pytest.mark.parametrize("scale", [0.0, -0.7, 3.0])
def test_any_finite_scale_with_every_option(scale):
    q, k, v = _qkv(BATCH, 7, 10, seed=4)
    options = VARIANTS["everything"](BATCH, HEADS)
    expected_out, expected_lse = _reference(q, k, v, softmax_scale=scale, causal=True, **options)
    out, lse = ff.flash_attn_fwd(
        q, k, v, softmax_scale=scale, causal=True, return_lse=True, **options
    )
    assert_close_to_reference(out, expected_out, q.dtype)
    assert_lse_close(lse, expected_lse)


# -- the semantics by hand ---------------------------------------------------------------------

# (seqlen_q, seqlen_k, window_size, causal, the keys each query row sees), worked out by hand
# from "query i sees key j iff i + offset - left <= j <= i + offset + right".
HAND_WINDOWS = [
    (2, 5, (1, 0), False, [[2, 3], [3, 4]]),  # offset 3
    (5, 2, (0, 0), False, [[], [], [], [0], [1]]),  # offset -3: rows 0-2 see nothing
    (3, 3, (-1, -1), True, [[0], [0, 1], [0, 1, 2]]),
    (3, 6, (1, 1), False, [[2, 3, 4], [3, 4, 5], [4, 5]]),
    (3, 6, (1, 1), True, [[2, 3], [3, 4], [4, 5]]),  # causal: right edge 0
    (4, 4, (-1, 1), False, [[0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3]]),
    (4, 2, (1, -1), True, [[], [], [0], [0, 1]]),  # left-only window under causal
    (5, 3, (-1, 0), False, [[], [], [0], [0, 1], [0, 1, 2]]),  # right edge 0 == causal
    (2, 7, (10, 10), False, [list(range(7))] * 2),  # wider than the sequence
    (3, 1, (0, 1), False, [[], [0], [0]]),  # offset -2: row 0's band is keys -2..-1
]


@pytest.mark.parametrize("with_sinks", [False, True])
@pytest.mark.parametrize("seqlen_q,seqlen_k,window,causal,seen", HAND_WINDOWS)
def test_window_by_hand(seqlen_q, seqlen_k, window, causal, seen, with_sinks):
    heads = 2
    _, k, v = _qkv(1, seqlen_q, seqlen_k, heads, 1, 8, seed=seqlen_k)
    q = torch.zeros(1, seqlen_q, heads, 8)  # every score 0: weights 1 per visible key
    sinks = torch.tensor([0.5, -2.0]) if with_sinks else None
    out, lse = ff.flash_attn_fwd(
        q, k, v, causal=causal, window_size=window, sinks=sinks, return_lse=True
    )
    for i, keys in enumerate(seen):
        for h in range(heads):
            # The sink adds exp(sink) to the denominator and nothing to the numerator.
            denominator = len(keys) + (math.exp(sinks[h].item()) if with_sinks else 0.0)
            if denominator == 0:
                assert torch.equal(out[0, i, h], torch.zeros(8)), f"row {i} must be 0"
                assert lse[0, h, i].item() == -math.inf
                continue
            expected = v[0, keys, 0].double().sum(0) / denominator
            torch.testing.assert_close(out[0, i, h].double(), expected, atol=1e-6, rtol=1e-6)
            assert lse[0, h, i].item() == pytest.approx(math.log(denominator), abs=1e-5)
            if with_sinks and not keys:
                assert torch.equal(out[0, i, h], torch.zeros(8))
                assert lse[0, h, i].item() == pytest.approx(sinks[h].item(), rel=1e-6, abs=1e-6)


def test_alibi_by_hand():
    # seqlen_q 2, seqlen_k 4 (offset 2): row 0's diagonal is key 2, row 1's is key 3.
    distances = [[2, 1, 0, 1], [3, 2, 1, 0]]
    slopes = torch.tensor([[0.5, 0.25], [1.0, 0.0]])  # (batch, heads)
    _, k, v = _qkv(2, 2, 4, 2, 1, 8, seed=5)
    q = torch.zeros(2, 2, 2, 8)
    for causal in (False, True):
        out, lse = ff.flash_attn_fwd(q, k, v, causal=causal, alibi_slopes=slopes, return_lse=True)
        for b in range(2):
            for i in range(2):
                keys = range(4) if not causal else range(i + 3)  # causal: j <= i + 2
                for h in range(2):
                    weights = [math.exp(-slopes[b, h].item() * distances[i][j]) for j in keys]
                    expected = sum(
                        w * v[b, j, 0].double() for w, j in zip(weights, keys, strict=True)
                    )
                    expected = expected / sum(weights)
                    torch.testing.assert_close(
                        out[b, i, h].double(), expected, atol=1e-6, rtol=1e-6
                    )
                    assert lse[b, h, i].item() == pytest.approx(math.log(sum(weights)), abs=1e-5)


def test_softcap_by_hand():
    # head_dim 1 and scale 1: the score of key j is q * k_j, capped to c * tanh(q * k_j / c).
    cap = 2.0
    q = torch.tensor([3.0, -1.0]).view(1, 2, 1, 1)
    k = torch.tensor([1.0, 2.0, -0.5]).view(1, 3, 1, 1)
    v = torch.tensor([10.0, -4.0, 7.0]).view(1, 3, 1, 1)
    out, lse = ff.flash_attn_fwd(q, k, v, softmax_scale=1.0, softcap=cap, return_lse=True)
    for i, qi in enumerate([3.0, -1.0]):
        scores = [cap * math.tanh(qi * kj / cap) for kj in (1.0, 2.0, -0.5)]
        total = sum(math.exp(s) for s in scores)
        expected = (
            sum(math.exp(s) * vj for s, vj in zip(scores, (10.0, -4.0, 7.0), strict=True)) / total
        )
        assert out[0, i, 0, 0].item() == pytest.approx(expected, rel=1e-5)
        assert lse[0, 0, i].item() == pytest.approx(math.log(total), rel=1e-5)


def test_softcap_applies_before_the_alibi_bias():
    # One key: the LSE is its score; capped first, then biased (distance 2, slope 0.5).
    q = torch.tensor([4.0]).view(1, 1, 1, 1)
    k = torch.tensor([1.0, 5.0, 5.0]).view(1, 3, 1, 1)
    v = torch.ones(1, 3, 1, 1)
    _, lse = ff.flash_attn_fwd(
        q,
        k,
        v,
        softmax_scale=1.0,
        softcap=1.0,
        alibi_slopes=torch.tensor([0.5]),
        window_size=(2, 0),
        return_lse=True,
    )
    scores = [math.tanh(4.0 * kj) - 0.5 * d for kj, d in ((1.0, 2), (5.0, 1), (5.0, 0))]
    expected = math.log(sum(math.exp(s) for s in scores))
    assert lse.item() == pytest.approx(expected, rel=1e-5)


# -- relations between calls -------------------------------------------------------------------


@pytest.mark.parametrize("seqlen_q,seqlen_k", SHAPES)
def test_causal_forces_the_right_edge_to_zero(seqlen_q, seqlen_k):
    q, k, v = _qkv(BATCH, seqlen_q, seqlen_k, seed=6)
    causal_wide = ff.flash_attn_fwd(q, k, v, causal=True, window_size=(2, 3))
    causal_zero = ff.flash_attn_fwd(q, k, v, causal=True, window_size=(2, 0))
    plain_zero = ff.flash_attn_fwd(q, k, v, window_size=(2, 0))
    expected, _ = _reference(q, k, v, window_size=(2, 0))
    for got in (causal_wide, causal_zero, plain_zero):
        assert_close_to_reference(got, expected, q.dtype)
    torch.testing.assert_close(causal_wide, causal_zero, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("seqlen_q,seqlen_k", [*SHAPES, (1, 9), (9, 1)])
def test_a_window_wider_than_the_sequence_is_no_window(seqlen_q, seqlen_k, causal):
    # Left >= seqlen_k - 1 and right >= seqlen_q - 1 reach every key from every row.
    q, k, v = _qkv(BATCH, seqlen_q, seqlen_k, seed=7)
    unwindowed, unwindowed_lse = ff.flash_attn_fwd(q, k, v, causal=causal, return_lse=True)
    for window in [(seqlen_k - 1, seqlen_q - 1), (seqlen_k + 50, seqlen_q + 50), (1000, -1)]:
        out, lse = ff.flash_attn_fwd(q, k, v, causal=causal, window_size=window, return_lse=True)
        torch.testing.assert_close(out, unwindowed, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(lse, unwindowed_lse, atol=1e-6, rtol=1e-6)
    expected, _ = _reference(q, k, v, causal=causal)
    assert_close_to_reference(unwindowed, expected, q.dtype)


@pytest.mark.parametrize("with_sinks", [False, True])
@pytest.mark.parametrize(
    "window,causal,masked_rows",
    [((0, 0), True, 4), ((1, -1), True, 4), ((0, 0), False, 4), ((-1, 1), False, 3)],
)
def test_rows_that_see_no_key(window, causal, masked_rows, with_sinks):
    # seqlen_q 7 > seqlen_k 3: offset -4, so the first rows' bands end before key 0.
    q, k, v = _qkv(BATCH, 7, 3, seed=8)
    sinks = sink_logits(HEADS) if with_sinks else None
    out, lse = ff.flash_attn_fwd(
        q, k, v, causal=causal, window_size=window, sinks=sinks, return_lse=True
    )
    assert torch.equal(out[:, :masked_rows], torch.zeros_like(out[:, :masked_rows]))
    if with_sinks:
        expected_lse = sinks.view(1, HEADS, 1).expand(BATCH, HEADS, masked_rows)
        assert_is_the_sink(lse[:, :, :masked_rows], expected_lse)
    else:
        assert torch.isneginf(lse[:, :, :masked_rows]).all()
    assert torch.isfinite(lse[:, :, masked_rows:]).all()
    expected_out, expected_lse = _reference(q, k, v, causal=causal, window_size=window, sinks=sinks)
    assert_close_to_reference(out, expected_out, q.dtype)
    assert_lse_close(lse, expected_lse)
    plain = ff.flash_attn_fwd(q, k, v, causal=causal, window_size=window, sinks=sinks)
    assert torch.equal(plain[:, :masked_rows], torch.zeros_like(plain[:, :masked_rows]))
    assert_close_to_reference(plain, expected_out, q.dtype, "out without lse")


@pytest.mark.parametrize("causal", [False, True])
def test_sinks_rescale_the_output_and_join_the_lse(causal):
    """With a sink s: lse' = logaddexp(lse, s) and out' = out * exp(lse - lse')."""
    q, k, v = _qkv(BATCH, 5, 8, seed=9)
    sinks = sink_logits(HEADS)
    out, lse = ff.flash_attn_fwd(q, k, v, causal=causal, window_size=(2, 2), return_lse=True)
    out_s, lse_s = ff.flash_attn_fwd(
        q, k, v, causal=causal, window_size=(2, 2), sinks=sinks, return_lse=True
    )
    expected_lse = torch.logaddexp(lse.double(), sinks.double().view(1, HEADS, 1))
    torch.testing.assert_close(lse_s.double(), expected_lse, atol=1e-5, rtol=1e-5)
    weight = torch.exp(lse.double() - expected_lse).transpose(1, 2).unsqueeze(-1)  # (b, sq, h, 1)
    torch.testing.assert_close(out_s.double(), out.double() * weight, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("option", ["alibi_slopes", "sinks"])
def test_slopes_and_sinks_belong_to_query_heads(option):
    """MQA: four query heads share one KV head; head h uses entry h, whatever its KV head."""
    heads = 4
    q, k, v = _qkv(1, 6, 6, heads, 1, seed=10)
    values = alibi_slopes(heads) if option == "alibi_slopes" else sink_logits(heads)
    out, lse = ff.flash_attn_fwd(q, k, v, causal=True, return_lse=True, **{option: values})
    for h in range(heads):
        alone, alone_lse = ff.flash_attn_fwd(
            q[:, :, h : h + 1], k, v, causal=True, return_lse=True, **{option: values[h : h + 1]}
        )
        torch.testing.assert_close(out[:, :, h : h + 1], alone, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(lse[:, h : h + 1], alone_lse, atol=1e-6, rtol=1e-6)


def test_per_sequence_slopes_follow_the_batch():
    q, k, v = _qkv(3, 5, 7, seed=11)
    slopes = alibi_slopes(HEADS, 3)
    out = ff.flash_attn_fwd(q, k, v, alibi_slopes=slopes)
    for b in range(3):
        alone = ff.flash_attn_fwd(q[b : b + 1], k[b : b + 1], v[b : b + 1], alibi_slopes=slopes[b])
        torch.testing.assert_close(out[b : b + 1], alone, atol=1e-6, rtol=1e-6)


# -- varlen, batched decode, the flat projections ----------------------------------------------


def _packed(seqlens_q, seqlens_k, heads=HEADS, heads_k=HEADS_K, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(sum(seqlens_q), heads, HEAD_DIM, generator=gen).to(dtype)
    k = torch.randn(sum(seqlens_k), heads_k, HEAD_DIM, generator=gen).to(dtype)
    v = torch.randn(sum(seqlens_k), heads_k, HEAD_DIM, generator=gen).to(dtype)
    cu_q = torch.tensor([0, *torch.tensor(seqlens_q).cumsum(0).tolist()], dtype=torch.int32)
    cu_k = torch.tensor([0, *torch.tensor(seqlens_k).cumsum(0).tolist()], dtype=torch.int32)
    return q, k, v, cu_q, cu_k


VARLEN_CASES = [
    # empty query and key sequences, q longer than k (masked rows), k longer than q
    ([5, 0, 9, 1, 6, 3], [7, 3, 0, 1, 12, 1]),
    ([0], [0]),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("variant", ["window-both", "softcap", "alibi-batch", "everything"])
@pytest.mark.parametrize("seqlens_q,seqlens_k", VARLEN_CASES)
def test_varlen(seqlens_q, seqlens_k, variant, causal, dtype):
    q, k, v, cu_q, cu_k = _packed(seqlens_q, seqlens_k, dtype=dtype)
    options = VARIANTS[variant](len(seqlens_q), HEADS)
    expected_out, expected_lse = reference_varlen(
        q, k, v, seqlens_q, seqlens_k, causal=causal, **options
    )
    out, lse = ff.flash_attn_varlen_fwd(
        q,
        k,
        v,
        cu_q,
        cu_k,
        max(seqlens_q),
        max(seqlens_k),
        causal=causal,
        return_lse=True,
        **options,
    )
    assert lse.shape == (HEADS, sum(seqlens_q))
    assert_close_to_reference(out, expected_out, dtype)
    assert_lse_close(lse, expected_lse)


def test_varlen_sinks_on_an_empty_key_sequence():
    q, k, v, cu_q, cu_k = _packed([3, 2], [4, 0])
    sinks = sink_logits(HEADS)
    out, lse = ff.flash_attn_varlen_fwd(q, k, v, cu_q, cu_k, 3, 4, sinks=sinks, return_lse=True)
    assert torch.equal(out[3:], torch.zeros_like(out[3:]))
    assert_is_the_sink(lse[:, 3:], sinks.view(HEADS, 1).expand(HEADS, 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "variant", ["window-left", "window-zero", "softcap", "alibi-batch", "sinks", "everything"]
)
def test_batched_decode(variant, dtype):
    """Row b's one query is aligned with its last key: the offset is cache_seqlens[b] - 1."""
    gen = torch.Generator().manual_seed(12)
    lengths = [0, 1, 7, 12, 5]
    batch, max_len = len(lengths), 12
    q = torch.randn(batch, HEADS, HEAD_DIM, generator=gen).to(dtype)
    k_cache = torch.randn(batch, max_len, HEADS_K, HEAD_DIM, generator=gen).to(dtype)
    v_cache = torch.randn(batch, max_len, HEADS_K, HEAD_DIM, generator=gen).to(dtype)
    options = VARIANTS[variant](batch, HEADS)
    expected_out, expected_lse = reference_attention(
        q.unsqueeze(1), k_cache, v_cache, key_lengths=lengths, **options
    )
    seqlens = torch.tensor(lengths, dtype=torch.int32)
    out, lse = ff.batched_decode_attention(q, k_cache, v_cache, seqlens, return_lse=True, **options)
    assert out.shape == q.shape and lse.shape == (batch, HEADS)
    assert_close_to_reference(out, expected_out[:, 0], dtype)
    assert_lse_close(lse, expected_lse[:, :, 0])
    assert torch.equal(out[0], torch.zeros_like(out[0]))  # the empty cache
    if "sinks" in options:
        assert_is_the_sink(lse[0], options["sinks"])
    plain = ff.batched_decode_attention(q, k_cache, v_cache, seqlens, **options)
    assert_close_to_reference(plain, expected_out[:, 0], dtype, "out without lse")
    # Each row equals a one-query prefill over its own keys (same offset: length - 1).
    for b, length in enumerate(lengths):
        row_options = dict(options)
        if "alibi_slopes" in options and options["alibi_slopes"].dim() == 2:
            row_options["alibi_slopes"] = options["alibi_slopes"][b]
        alone = ff.flash_attn_fwd(
            q[b, None, None],
            k_cache[b : b + 1, :length],
            v_cache[b : b + 1, :length],
            **row_options,
        )
        torch.testing.assert_close(out[b], alone[0, 0], atol=1e-5, rtol=1e-5)


def _flat(lead, seqlen_q, seqlen_k, dtype=torch.float32, seed=13):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(*lead, seqlen_q, HEADS * HEAD_DIM, generator=gen).to(dtype)
    k = torch.randn(*lead, seqlen_k, HEADS_K * HEAD_DIM, generator=gen).to(dtype)
    v = torch.randn(*lead, seqlen_k, HEADS_K * HEAD_DIM, generator=gen).to(dtype)
    return q, k, v


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("variant", ["window+softcap", "window+sinks", "alibi-heads", "everything"])
@pytest.mark.parametrize("entry", ["attention_fwd", "multi_head_attention"])
def test_flat_projection_calls(entry, variant, causal, batched):
    lead = (BATCH,) if batched else ()
    q, k, v = _flat(lead, 6, 9)
    options = VARIANTS[variant](BATCH if batched else 1, HEADS)
    if not batched and "alibi_slopes" in options and options["alibi_slopes"].dim() == 2:
        options["alibi_slopes"] = options["alibi_slopes"][0]  # one sequence: (num_heads,)
    out = getattr(ff, entry)(q, k, v, HEADS, HEADS_K, HEAD_DIM, 0.3, causal, **options)
    assert out.shape == q.shape
    expected = reference_flat(
        q, k, v, HEADS, HEADS_K, HEAD_DIM, scale=0.3, causal=causal, **options
    )
    assert_close_to_reference(out, expected, q.dtype)


@pytest.mark.parametrize("variant", ["window+softcap", "window+sinks", "everything"])
def test_decoder_attention_prefill_and_decode(variant):
    options = VARIANTS[variant](BATCH, HEADS)
    # Prefill (causal by default): multi_head_attention.
    q, k, v = _flat((BATCH,), 6, 6)
    out = ff.decoder_attention(q, k, v, HEADS, HEADS_K, HEAD_DIM, **options)
    expected = reference_flat(q, k, v, HEADS, HEADS_K, HEAD_DIM, causal=True, **options)
    assert_close_to_reference(out, expected, q.dtype, "prefill")
    # Decode over a cache: batched decode; row b's query aligned with its cache_seqlens[b]-th key.
    q, k, v = _flat((BATCH,), 1, 10, seed=14)
    lengths = [10, 4]
    seqlens = torch.tensor(lengths, dtype=torch.int32)
    out = ff.decoder_attention(q, k, v, HEADS, HEADS_K, HEAD_DIM, cache_seqlens=seqlens, **options)
    expected, _ = reference_attention(
        q.unflatten(-1, (HEADS, HEAD_DIM)),
        k.unflatten(-1, (HEADS_K, HEAD_DIM)),
        v.unflatten(-1, (HEADS_K, HEAD_DIM)),
        key_lengths=lengths,
        **options,
    )
    assert_close_to_reference(out, expected.flatten(-2), q.dtype, "decode")


# -- NaN, out=, untouched inputs ---------------------------------------------------------------


@pytest.mark.parametrize("variant", ["window-both", "everything"])
def test_nan_in_a_query_row_stays_in_that_row(variant):
    q, k, v = _qkv(BATCH, 6, 6, seed=15)
    q[1, 3, 2, 5] = float("nan")  # sequence 1, row 3, query head 2
    options = VARIANTS[variant](BATCH, HEADS)
    out, lse = ff.flash_attn_fwd(q, k, v, causal=True, return_lse=True, **options)
    poisoned = torch.zeros(BATCH, 6, HEADS, dtype=torch.bool)
    poisoned[1, 3, 2] = True
    assert torch.isnan(out[poisoned]).all() and torch.isnan(lse.transpose(1, 2)[poisoned]).all()
    assert not torch.isnan(out[~poisoned]).any()
    clean = q.clone()
    clean[1, 3, 2, 5] = 0.0
    expected, _ = _reference(clean, k, v, causal=True, **options)
    assert_close_to_reference(out[~poisoned], expected[~poisoned], q.dtype)


@pytest.mark.parametrize("with_sinks", [False, True])
def test_nan_in_a_key_reaches_only_the_rows_whose_window_holds_it(with_sinks):
    q, k, v = _qkv(1, 8, 8, seed=16)
    k[0, 3, 1, 0] = float("nan")  # key 3 of KV head 1 (query heads 2 and 3)
    sinks = sink_logits(HEADS) if with_sinks else None
    out = ff.flash_attn_fwd(q, k, v, causal=True, window_size=(1, 0), sinks=sinks)
    # Window (1, 0): row i sees keys i - 1 and i, so key 3 reaches rows 3 and 4.
    poisoned = torch.zeros(1, 8, HEADS, dtype=torch.bool)
    poisoned[0, 3:5, 2:4] = True
    assert torch.isnan(out[poisoned]).all()
    assert not torch.isnan(out[~poisoned]).any()
    expected, _ = _reference(q, k, v, causal=True, window_size=(1, 0), sinks=sinks)
    assert_close_to_reference(out[~poisoned], expected[~poisoned], q.dtype)


def test_out_receives_the_result_and_inputs_stay_untouched():
    q, k, v = _qkv(BATCH, 5, 8, seed=17)
    options = VARIANTS["everything"](BATCH, HEADS)
    before = {name: t.clone() for name, t in [("q", q), ("k", k), ("v", v)]}
    before.update({name: t.clone() for name, t in options.items() if torch.is_tensor(t)})
    storage = torch.full((BATCH, HEADS, 5, HEAD_DIM), float("nan")).transpose(1, 2)
    returned = ff.flash_attn_fwd(q, k, v, causal=True, out=storage, **options)
    assert returned is storage
    expected, _ = _reference(q, k, v, causal=True, **options)
    assert_close_to_reference(storage, expected, q.dtype)
    after = {"q": q, "k": k, "v": v, **options}
    for name, tensor in before.items():
        assert torch.equal(after[name], tensor), f"{name} was modified"
    # Decode and varlen leave slopes and sinks alone too.
    seqlens = torch.tensor([5, 8], dtype=torch.int32)
    ff.batched_decode_attention(q[:, 0], k, v, seqlens, **options)
    cu = torch.tensor([0, 5, 10], dtype=torch.int32)
    cu_k = torch.tensor([0, 8, 16], dtype=torch.int32)
    ff.flash_attn_varlen_fwd(
        q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1), cu, cu_k, 5, 8, **options
    )
    for name in ("alibi_slopes", "sinks"):
        assert torch.equal(options[name], before[name]), f"{name} was modified"
