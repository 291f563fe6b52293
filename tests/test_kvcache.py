"""flash_attn_with_kvcache: the rotary + append step against plain loops, the argument checks,
and the whole call (append, then attention over the cache through
``forge_flash.api.cache_attention``) against the float64 reference.
"""

from __future__ import annotations

import math

import pytest
import torch

import forge_flash
from forge_flash.kvcache_append import append_kv, apply_rotary, query_positions

from helpers.kvcache_reference import (
    cache_case,
    cache_slot,
    randn,
    random_block_table,
    reference_append,
    reference_cache_attention,
    reference_rotary,
    rotary_tables,
)
from helpers.tolerance import assert_close_to_reference, assert_lse_close


def _assert_bitwise(actual, expected, what):
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True, msg=what)


# -- the append step ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("seqlen_new", [1, 3])
@pytest.mark.parametrize("with_batch_idx", [False, True], ids=["rows", "batch_idx"])
def test_append_contiguous_matches_loop(dtype, seqlen_new, with_batch_idx, gen):
    batch, capacity = 3, 12
    rows = [4, 0, 2] if with_batch_idx else None
    k_cache = randn(gen, 5 if with_batch_idx else batch, capacity, 2, 16, dtype=dtype)
    v_cache = randn(gen, *k_cache.shape, dtype=dtype)
    k = randn(gen, batch, seqlen_new, 2, 16, dtype=dtype)
    v = randn(gen, batch, seqlen_new, 2, 16, dtype=dtype)
    lengths = [0, 5, capacity - seqlen_new]  # empty, middle, filling the cache exactly
    expected_k, expected_v, _ = reference_append(k_cache, v_cache, k, v, lengths, cache_rows=rows)
    k_before, v_before = k.clone(), v.clone()
    idx = None if rows is None else torch.tensor(rows, dtype=torch.int32)
    seqlens = torch.tensor(lengths, dtype=torch.int32)
    append_kv(k_cache, v_cache, k, v, seqlens, cache_batch_idx=idx)
    _assert_bitwise(k_cache.double(), expected_k, "k_cache")
    _assert_bitwise(v_cache.double(), expected_v, "v_cache")
    assert torch.equal(k, k_before) and torch.equal(v, v_before), "k/v must not be modified"


@pytest.mark.parametrize("page_size", [1, 3, 16, 64])
def test_append_paged_matches_loop_across_page_boundaries(page_size, gen):
    batch, seqlen_new = 4, 2
    # Appends that start at a page's first row, end at a page's last row and straddle two.
    lengths = [0, page_size - 1, page_size, 2 * page_size - 2 if page_size > 1 else 3]
    max_blocks = (max(lengths) + seqlen_new) // page_size + 1
    num_blocks = batch * max_blocks + 3  # spare blocks that must stay untouched
    table = random_block_table(gen, batch, max_blocks, num_blocks)
    k_cache = randn(gen, num_blocks, page_size, 2, 8, dtype=torch.float16)
    v_cache = randn(gen, *k_cache.shape, dtype=torch.float16)
    k = randn(gen, batch, seqlen_new, 2, 8, dtype=torch.float16)
    v = randn(gen, batch, seqlen_new, 2, 8, dtype=torch.float16)
    expected_k, expected_v, written = reference_append(
        k_cache, v_cache, k, v, lengths, block_table=table.tolist()
    )
    assert written.sum() == batch * seqlen_new
    append_kv(k_cache, v_cache, k, v, torch.tensor(lengths, dtype=torch.int32), block_table=table)
    _assert_bitwise(k_cache.double(), expected_k, "k_cache")
    _assert_bitwise(v_cache.double(), expected_v, "v_cache")


def test_rotary_pairs_rotate_by_the_given_angle():
    """A quarter turn (cos 0, sin 1) maps each pair (a, b) to (-b, a): interleaved pairs are
    neighbours, GPT-NeoX pairs are half the rotary width apart; features past it stay."""
    x = torch.arange(1.0, 9.0).view(1, 1, 1, 8)  # features 1..8
    cos, sin = torch.zeros(1, 2), torch.ones(1, 2)  # rotary_dim 4
    at_zero = torch.zeros(1, 1, dtype=torch.int64)
    interleaved = apply_rotary(x, cos, sin, at_zero, True).flatten().tolist()
    neox = apply_rotary(x, cos, sin, at_zero, False).flatten().tolist()
    assert interleaved == [-2.0, 1.0, -4.0, 3.0, 5.0, 6.0, 7.0, 8.0]
    assert neox == [-3.0, -4.0, 1.0, 2.0, 5.0, 6.0, 7.0, 8.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("rotary_dim", [32, 16, 2])
@pytest.mark.parametrize("interleaved", [True, False], ids=["interleaved", "neox"])
def test_apply_rotary_matches_reference(dtype, rotary_dim, interleaved, gen):
    x = randn(gen, 2, 3, 4, 32, dtype=dtype)
    cos, sin = rotary_tables(gen, 20, rotary_dim, dtype)
    positions = [[0, 7, 19], [5, 5, 12]]
    x_before = x.clone()
    got = apply_rotary(x, cos, sin, torch.tensor(positions), interleaved)
    expected = reference_rotary(x, cos, sin, positions, interleaved)
    assert got.dtype == dtype and got.shape == x.shape
    assert_close_to_reference(got, expected, dtype, "rotated x")
    assert torch.equal(got[..., rotary_dim:], x[..., rotary_dim:]), "unrotated features changed"
    assert torch.equal(x, x_before), "x must not be modified"


@pytest.mark.parametrize("layout", ["contiguous", "paged-3"])
def test_append_rotates_new_keys_at_their_positions(layout, gen):
    batch, seqlen_new, heads_k, head_dim, dtype = 3, 2, 2, 16, torch.bfloat16
    lengths = [0, 4, 7]
    if layout == "contiguous":
        rows, table = [2, 0, 3], None
        k_cache = randn(gen, 4, 10, heads_k, head_dim, dtype=dtype)
    else:
        rows, page = None, 3
        table = random_block_table(gen, batch, 3, 12)
        k_cache = randn(gen, 12, page, heads_k, head_dim, dtype=dtype)
    v_cache = randn(gen, *k_cache.shape, dtype=dtype)
    k = randn(gen, batch, seqlen_new, heads_k, head_dim, dtype=dtype)
    v = randn(gen, batch, seqlen_new, heads_k, head_dim, dtype=dtype)
    cos, sin = rotary_tables(gen, 9, 8, dtype)  # rotary_dim 8 < head_dim
    positions = [[length + i for i in range(seqlen_new)] for length in lengths]
    k_rotated = reference_rotary(k, cos, sin, positions, False)
    table_rows = None if table is None else table.tolist()
    expected_k, expected_v, written = reference_append(
        k_cache, v_cache, k, v, lengths, cache_rows=rows, block_table=table_rows,
        k_rotated=k_rotated,
    )  # fmt: skip
    k_before = k.clone()
    append_kv(
        k_cache, v_cache, k, v, torch.tensor(lengths, dtype=torch.int32),
        cache_batch_idx=None if rows is None else torch.tensor(rows, dtype=torch.int32),
        block_table=table, rotary_cos=cos, rotary_sin=sin, rotary_interleaved=False,
    )  # fmt: skip
    assert_close_to_reference(k_cache[written], expected_k[written], dtype, "rotated keys")
    _assert_bitwise(k_cache[~written].double(), expected_k[~written], "untouched k slots")
    _assert_bitwise(v_cache.double(), expected_v, "v_cache (values are never rotated)")
    assert torch.equal(k, k_before), "k must not be modified"


def test_query_positions_follow_the_mask():
    seqlens = torch.tensor([5, 0], dtype=torch.int32)
    assert query_positions(seqlens, 3, True).tolist() == [[5, 6, 7], [0, 1, 2]]
    assert query_positions(seqlens, 3, False).tolist() == [[5, 5, 5], [0, 0, 0]]


# -- argument checks: every bad call raises before the caches change ----------------------


def _valid_call(paged: bool = False) -> dict:
    gen = torch.Generator().manual_seed(5)
    batch, heads, heads_k, head_dim = 2, 4, 2, 16
    args = {
        "q": randn(gen, batch, 1, heads, head_dim),
        "k": randn(gen, batch, 1, heads_k, head_dim),
        "v": randn(gen, batch, 1, heads_k, head_dim),
        "cache_seqlens": torch.tensor([3, 8], dtype=torch.int32),
        "rotary_cos": torch.ones(16, 4),
        "rotary_sin": torch.zeros(16, 4),
    }
    if paged:  # capacity 3 blocks x 4 = 12 keys
        args["k_cache"] = randn(gen, 7, 4, heads_k, head_dim)
        args["block_table"] = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    else:  # capacity 10 keys
        args["k_cache"] = randn(gen, batch, 10, heads_k, head_dim)
    args["v_cache"] = torch.randn_like(args["k_cache"])
    return args


def _set(**changes):
    return lambda args: args.update(changes)


BAD_CALLS = [
    # (id, change to a valid call, exception, start of the message)
    ("q-3d", lambda a: a.update(q=a["q"][0]), ValueError, "q must have 4 dimensions"),
    ("q-int", lambda a: a.update(q=a["q"].int()), TypeError, "q must be float16"),
    ("k_cache-dtype", lambda a: a.update(k_cache=a["k_cache"].half()), TypeError, "k_cache must"),
    ("v_cache-shape", lambda a: a.update(v_cache=a["v_cache"][:, :5]), ValueError, "v_cache must"),
    ("k_cache-head_dim", lambda a: a.update(k_cache=a["k_cache"][..., :8]), ValueError, "k_cache"),
    (
        "cache-rows",
        lambda a: a.update(k_cache=a["k_cache"][:1], v_cache=a["v_cache"][:1]),
        ValueError,
        "k_cache must have batch",
    ),
    ("heads", lambda a: a.update(q=a["q"][:, :, :3]), ValueError, "q.shape[2]"),
    ("k-without-v", _set(v=None), ValueError, "v must be given with k"),
    ("v-without-k", _set(k=None, rotary_cos=None, rotary_sin=None), ValueError, "k must be given"),
    (
        "k-heads",
        lambda a: a.update(k=a["k"][:, :, :1], v=a["v"][:, :, :1]),
        ValueError,
        "k must have shape",
    ),
    ("v-shape", lambda a: a.update(v=torch.zeros(2, 2, 2, 16)), ValueError, "v must have the"),
    (
        "k-too-long",
        lambda a: a.update(k=torch.zeros(2, 11, 2, 16), v=torch.zeros(2, 11, 2, 16)),
        ValueError,
        "k must have seqlen_new",
    ),
    ("seqlens-missing", _set(cache_seqlens=None), ValueError, "cache_seqlens must be given"),
    ("seqlens-int64", _set(cache_seqlens=torch.tensor([3, 8])), TypeError, "cache_seqlens must"),
    (
        "seqlens-length",
        _set(cache_seqlens=torch.tensor([3], dtype=torch.int32)),
        ValueError,
        "cache_seqlens must have length 2",
    ),
    (
        "seqlens-past-capacity",
        _set(cache_seqlens=torch.tensor([3, 10], dtype=torch.int32)),
        ValueError,
        "cache_seqlens must lie in",
    ),
    (
        "seqlens-negative",
        _set(cache_seqlens=torch.tensor([-1, 2], dtype=torch.int32)),
        ValueError,
        "cache_seqlens must lie in",
    ),
    ("seqlens-int-too-big", _set(cache_seqlens=10), ValueError, "cache_seqlens + seqlen_new"),
    ("seqlens-float", _set(cache_seqlens=2.0), TypeError, "cache_seqlens must be an int"),
    (
        "batch_idx-range",
        _set(cache_batch_idx=torch.tensor([0, 2], dtype=torch.int32)),
        ValueError,
        "cache_batch_idx must lie in",
    ),
    (
        "batch_idx-length",
        _set(cache_batch_idx=torch.tensor([0], dtype=torch.int32)),
        ValueError,
        "cache_batch_idx must have length",
    ),
    (
        "leftpad-too-long",
        _set(cache_leftpad=torch.tensor([4, 0], dtype=torch.int32)),
        ValueError,
        "cache_leftpad must be at most",
    ),
    (
        "leftpad-negative",
        _set(cache_leftpad=torch.tensor([0, -1], dtype=torch.int32)),
        ValueError,
        "cache_leftpad must be >= 0",
    ),
    ("leftpad-dtype", _set(cache_leftpad=torch.tensor([0.0, 1.0])), TypeError, "cache_leftpad"),
    ("cos-without-sin", _set(rotary_sin=None), ValueError, "rotary_sin must be given"),
    (
        "rotary-without-k",
        _set(k=None, v=None, cache_seqlens=None),
        ValueError,
        "rotary_cos applies to the new keys",
    ),
    (
        "cos-too-wide",
        _set(rotary_cos=torch.ones(16, 9), rotary_sin=torch.ones(16, 9)),
        ValueError,
        "rotary_cos must have shape",
    ),
    ("sin-shape", _set(rotary_sin=torch.ones(16, 2)), ValueError, "rotary_sin must have the"),
    (
        "cos-rows",
        _set(rotary_cos=torch.ones(8, 4), rotary_sin=torch.ones(8, 4)),
        ValueError,
        "rotary_cos must have a row",
    ),
    ("cos-int", _set(rotary_cos=torch.ones(16, 4, dtype=torch.int32)), TypeError, "rotary_cos"),
    ("interleaved-int", _set(rotary_interleaved=1), TypeError, "rotary_interleaved must be"),
    ("scale-inf", _set(softmax_scale=math.inf), ValueError, "softmax_scale must be finite"),
    ("causal-str", _set(causal="yes"), TypeError, "causal must be a bool"),
    ("window-edge", _set(window_size=(-2, 0)), ValueError, "window_size edges"),
    ("window-int", _set(window_size=4), TypeError, "window_size must be a (left, right)"),
    ("window-3", _set(window_size=(1, 2, 3)), ValueError, "window_size must be a (left, right)"),
    ("window-float", _set(window_size=(1.5, 0)), TypeError, "window_size must hold ints"),
    ("window-bool", _set(window_size=(True, 0)), TypeError, "window_size must hold ints"),
    ("softcap-negative", _set(softcap=-1.0), ValueError, "softcap must be finite"),
    ("softcap-str", _set(softcap="1"), TypeError, "softcap must be a float"),
    (
        "alibi-dtype",
        _set(alibi_slopes=torch.ones(4, dtype=torch.float16)),
        TypeError,
        "alibi_slopes must have dtype",
    ),
    ("alibi-shape", _set(alibi_slopes=torch.ones(3)), ValueError, "alibi_slopes must have shape"),
    ("sinks-shape", _set(sinks=torch.ones(2, 4)), ValueError, "sinks must have shape"),
    ("num_splits", _set(num_splits=-1), ValueError, "num_splits must be at least 0"),
    ("return_lse", _set(return_softmax_lse=None), TypeError, "return_softmax_lse must be"),
]

PAGED_BAD_CALLS = [
    (
        "block-id-too-big",
        lambda a: a["block_table"].__setitem__((1, 2), 7),
        ValueError,
        "block_table ids must lie in [0, num_blocks = 7)",
    ),
    (
        "block-id-negative",
        lambda a: a["block_table"].__setitem__((0, 0), -1),
        ValueError,
        "block_table ids must lie in",
    ),
    (
        "table-dtype",
        lambda a: a.update(block_table=a["block_table"].long()),
        TypeError,
        "block_table must have dtype torch.int32",
    ),
    (
        "table-rows",
        lambda a: a.update(block_table=a["block_table"][:1]),
        ValueError,
        "block_table must have shape",
    ),
    (
        "table-short",
        lambda a: a.update(block_table=a["block_table"][:, :2]),
        ValueError,
        "cache_seqlens must lie in",
    ),  # 8 + 1 keys do not fit 2 blocks of 4
    (
        "batch_idx-rows",
        _set(cache_batch_idx=torch.tensor([0, 2], dtype=torch.int32)),
        ValueError,
        "cache_batch_idx must lie in [0, block_table.shape[0] = 2)",
    ),
]


@pytest.mark.parametrize(
    "paged,change,error,message",
    [pytest.param(False, *case[1:], id=case[0]) for case in BAD_CALLS]
    + [pytest.param(True, *case[1:], id=f"paged-{case[0]}") for case in PAGED_BAD_CALLS],
)
def test_bad_argument_raises_before_any_write(paged, change, error, message):
    args = _valid_call(paged)
    change(args)
    k_cache, v_cache = args["k_cache"].clone(), args["v_cache"].clone()
    with pytest.raises(error) as info:
        forge_flash.flash_attn_with_kvcache(**args)
    assert str(info.value).startswith(message), str(info.value)
    assert torch.equal(args["k_cache"], k_cache) and torch.equal(args["v_cache"], v_cache)


@pytest.mark.parametrize(
    "change",
    [
        lambda a: None,  # 8 + 1 keys
        _set(cache_seqlens=8),
        _set(k=torch.zeros(2, 9, 2, 16), v=torch.zeros(2, 9, 2, 16), cache_seqlens=0),
    ],
    ids=["seqlens-tensor", "seqlens-int", "k-too-long"],
)
def test_a_paged_cache_too_short_for_the_lengths_names_block_table(change):
    # FlashAttention's own test of this bound (a table one block wide) looks for "block_table"
    # in the message: over a paged cache that is what bounds a sequence, 2 blocks of 4 here.
    args = _valid_call(paged=True)
    args["block_table"] = args["block_table"][:, :2]
    change(args)
    with pytest.raises(ValueError, match=r"capacity of block_table \(8 keys per sequence"):
        forge_flash.flash_attn_with_kvcache(**args)


# -- the whole call -----------------------------------------------------------------------

LAYOUTS = ["contiguous", "paged-1", "paged-3", "paged-16", "paged-64"]


def _index(values):
    return None if values is None else torch.tensor(values, dtype=torch.int32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_append_rotary_batch_idx_leftpad_match_reference(layout, causal, dtype, gen):
    seqlen_new, heads, heads_k, head_dim = 2, 4, 2, 32
    case = cache_case(layout, dtype, seqlen_new, gen)
    batch = len(case.lengths)
    q = randn(gen, batch, seqlen_new, heads, head_dim, dtype=dtype)
    k = randn(gen, batch, seqlen_new, heads_k, head_dim, dtype=dtype)
    v = randn(gen, batch, seqlen_new, heads_k, head_dim, dtype=dtype)
    cos, sin = rotary_tables(gen, case.capacity, 16, dtype)
    interleaved = causal  # both conventions, without doubling the cases
    k_cache, v_cache = case.k_cache.clone(), case.v_cache.clone()
    inputs_before = [x.clone() for x in (q, k, v)]

    out, lse = forge_flash.flash_attn_with_kvcache(
        q, k_cache, v_cache, k, v, rotary_cos=cos, rotary_sin=sin,
        cache_seqlens=_index(case.lengths), cache_batch_idx=_index(case.rows),
        cache_leftpad=_index(case.pads), block_table=case.table, causal=causal,
        rotary_interleaved=interleaved, return_softmax_lse=True,
    )  # fmt: skip

    new_positions = [[n + i for i in range(seqlen_new)] for n in case.lengths]
    # Queries rotate per token only under a mask that orders them (causal here).
    q_positions = new_positions if causal else [[n] * seqlen_new for n in case.lengths]
    k_rotated = reference_rotary(k, cos, sin, new_positions, interleaved)
    expected_k, expected_v, written = reference_append(
        case.k_cache, case.v_cache, k, v, case.lengths, cache_rows=case.rows,
        block_table=case.table_rows, k_rotated=k_rotated,
    )  # fmt: skip
    # The call attends with the rotated q and keys as stored: in the inputs' dtype.
    q_rotated = reference_rotary(q, cos, sin, q_positions, interleaved).to(dtype)
    expected_out, expected_lse = reference_cache_attention(
        q_rotated, expected_k.to(dtype), expected_v.to(dtype),
        [n + seqlen_new for n in case.lengths], key_starts=case.pads,
        cache_rows=case.rows, block_table=case.table_rows, causal=causal,
    )  # fmt: skip
    assert out.shape == q.shape and lse.shape == (batch, heads, seqlen_new)
    assert_close_to_reference(out, expected_out, dtype)
    assert_lse_close(lse, expected_lse)
    assert_close_to_reference(k_cache[written], expected_k[written], dtype, "appended keys")
    _assert_bitwise(k_cache[~written].double(), expected_k[~written], "other k slots")
    _assert_bitwise(v_cache.double(), expected_v, "v_cache")
    for before, after in zip(inputs_before, (q, k, v), strict=True):
        assert torch.equal(before, after), "q, k and v must not be modified"


@pytest.mark.parametrize("layout", LAYOUTS)
def test_paged_equals_contiguous(layout, gen):
    """The same logical caches, paged and contiguous, give the same attention."""
    dtype, batch, heads, heads_k, head_dim = torch.float16, 3, 8, 2, 64
    case = cache_case(layout, dtype, 0, gen, heads_k=heads_k, head_dim=head_dim)
    q = randn(gen, batch, 1, heads, head_dim, dtype=dtype)
    lengths, pads = case.lengths, case.pads
    where = {"cache_rows": case.rows, "block_table": case.table_rows}
    dense_k = torch.full((batch, max(lengths), heads_k, head_dim), float("nan"), dtype=dtype)
    dense_v = dense_k.clone()
    for b in range(batch):
        for t in range(pads[b], lengths[b]):
            slot = cache_slot(
                b, t, where["cache_rows"], where["block_table"], case.k_cache.shape[1]
            )
            dense_k[b, t], dense_v[b, t] = case.k_cache[slot], case.v_cache[slot]
    seqlens, leftpad = _index(lengths), _index(pads)
    common = {"cache_seqlens": seqlens, "cache_leftpad": leftpad, "return_softmax_lse": True}
    paged_out, paged_lse = forge_flash.flash_attn_with_kvcache(
        q, case.k_cache, case.v_cache, cache_batch_idx=_index(case.rows),
        block_table=case.table, **common,
    )  # fmt: skip
    dense_out, dense_lse = forge_flash.flash_attn_with_kvcache(q, dense_k, dense_v, **common)
    expected_out, expected_lse = reference_cache_attention(
        q, dense_k, dense_v, lengths, key_starts=pads
    )
    for out, lse in ((paged_out, paged_lse), (dense_out, dense_lse)):
        assert_close_to_reference(out, expected_out, dtype)
        assert_lse_close(lse, expected_lse)


def test_without_new_keys_attends_to_the_given_lengths(gen):
    """k=None: no write; cache_seqlens as a tensor, as an int, or None (the whole cache)."""
    batch, capacity, heads, head_dim = 2, 9, 2, 16
    q = randn(gen, batch, 3, heads, head_dim)
    k_cache = randn(gen, batch, capacity, heads, head_dim)
    v_cache = randn(gen, batch, capacity, heads, head_dim)
    before = (k_cache.clone(), v_cache.clone())
    for seqlens, lengths in (
        (torch.tensor([4, 9], dtype=torch.int32), [4, 9]),
        (6, [6, 6]),
        (None, [capacity, capacity]),
    ):
        out = forge_flash.flash_attn_with_kvcache(
            q, k_cache, v_cache, cache_seqlens=seqlens, causal=True
        )
        expected, _ = reference_cache_attention(q, k_cache, v_cache, lengths, causal=True)
        assert_close_to_reference(out, expected, torch.float32, f"cache_seqlens={seqlens}")
    assert torch.equal(k_cache, before[0]) and torch.equal(v_cache, before[1])


VARIANTS = {
    "window": {"window_size": (3, 0)},
    "softcap": {"softcap": 2.0},
    "alibi": {"alibi_slopes": torch.tensor([0.5, 0.25, 0.125, 0.0625])},
    "alibi-batch": {"alibi_slopes": torch.rand(3, 4, generator=torch.Generator().manual_seed(1))},
    "sinks": {"sinks": torch.tensor([0.0, 1.0, -2.0, 3.0])},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("layout", ["contiguous", "paged-3"])
def test_variants_over_an_appended_cache(layout, variant, gen):
    dtype, seqlen_new, heads, heads_k, head_dim = torch.float32, 2, 4, 2, 32
    case = cache_case(layout, dtype, seqlen_new, gen)
    batch = len(case.lengths)
    q = randn(gen, batch, seqlen_new, heads, head_dim)
    k = randn(gen, batch, seqlen_new, heads_k, head_dim)
    v = randn(gen, batch, seqlen_new, heads_k, head_dim)
    options = VARIANTS[variant]
    k_cache, v_cache = case.k_cache.clone(), case.v_cache.clone()
    out, lse = forge_flash.flash_attn_with_kvcache(
        q, k_cache, v_cache, k, v, cache_seqlens=_index(case.lengths),
        cache_batch_idx=_index(case.rows), cache_leftpad=_index(case.pads),
        block_table=case.table, causal=True, return_softmax_lse=True, **options,
    )  # fmt: skip
    expected_k, expected_v, _ = reference_append(
        case.k_cache, case.v_cache, k, v, case.lengths, cache_rows=case.rows,
        block_table=case.table_rows,
    )  # fmt: skip
    expected_out, expected_lse = reference_cache_attention(
        q, expected_k, expected_v, [n + seqlen_new for n in case.lengths],
        key_starts=case.pads, cache_rows=case.rows, block_table=case.table_rows,
        causal=True, **options,
    )  # fmt: skip
    assert_close_to_reference(out, expected_out, dtype)
    assert_lse_close(lse, expected_lse)


def test_paged_cache_batch_idx_selects_block_table_rows(gen):
    """An extension of FlashAttention-2 (which refuses the pair): with block_table,
    cache_batch_idx picks each sequence's row of the table, for the append and the attention
    alike, as if the table had been indexed first."""
    case = cache_case("paged-3", torch.float32, 1, gen)
    q = randn(gen, 2, 1, 4, 32)
    k, v = randn(gen, 2, 1, 2, 32), randn(gen, 2, 1, 2, 32)
    idx = [2, 0]  # sequences 0 and 1 live in table rows 2 and 0
    lengths, pads = [case.lengths[i] for i in idx], [case.pads[i] for i in idx]
    selected = case.table[torch.tensor(idx)]
    results = []
    for table, batch_idx in ((case.table, _index(idx)), (selected, None)):
        k_cache, v_cache = case.k_cache.clone(), case.v_cache.clone()
        out = forge_flash.flash_attn_with_kvcache(
            q, k_cache, v_cache, k, v, cache_seqlens=_index(lengths), cache_batch_idx=batch_idx,
            cache_leftpad=_index(pads), block_table=table, causal=True,
        )  # fmt: skip
        results.append((out, k_cache, v_cache))
    (out, k_cache, v_cache), (plain_out, plain_k, plain_v) = results
    _assert_bitwise(k_cache, plain_k, "k_cache")
    _assert_bitwise(v_cache, plain_v, "v_cache")
    torch.testing.assert_close(out, plain_out, rtol=0, atol=0)
    expected_k, expected_v, _ = reference_append(
        case.k_cache, case.v_cache, k, v, lengths, block_table=selected.tolist()
    )
    expected, _ = reference_cache_attention(
        q, expected_k, expected_v, [n + 1 for n in lengths], key_starts=pads,
        block_table=selected.tolist(), causal=True,
    )  # fmt: skip
    assert_close_to_reference(out, expected, torch.float32)
