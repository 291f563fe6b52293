"""A reduced matrix that reaches every kernel path once, for compute-sanitizer:

    compute-sanitizer --tool memcheck  python tools/lab/sanitize_matrix.py
    compute-sanitizer --tool racecheck python tools/lab/sanitize_matrix.py

Paths: SM80 prefill tiles, decode tiles (keys divided over warps; one pass and split-KV), the
Hopper wgmma prefill kernel (plain, and persistent with several work tiles per CTA, head_dim 64,
96 (two Q buffers, deferred epilogues) and 128, tiles whose rows see no key among them, causal
calls whose K/V fit the L2 taking their tiles by query block height, at 192 too; its
tiles loaded through TMA for dense Q/K/V, strided views included, where the plain launch is the
TMA-only instance with its own tiles; varlen at head_dim 64, 96 and 128 by TMA over the packed
tensors in the kPackedSeqs twins of that instance (past 1024 keys) and of the persistent one,
which zero V rows past a sequence and whose CTAs draw their work tiles from a counter, else by
cp.async; varlen over a paged cache past 1024 keys by TMA in the PagedKV twin, pages of 16, 64
and 256, and in its wide instance at head_dim 64 and 96),
split-KV + combine kernel (launched programmatically behind the split kernel on Hopper),
split-KV merged in a thread-block cluster (Hopper decode), GQA packing, routed head dims, causal
tails, varlen with an empty sequence, KV-cache lengths (batched decode), strided views; the
variant kernels (window, softcap, ALiBi, sinks, any scale, paged K/V, a cache batch index, left
padding; windows and sinks alone over dense K/V in the instance of their own) and the Hopper
head dims 96/192/256; the K/V append fused into the decode kernel (paged and indexed caches,
rotary both ways), and the append kernel (16-byte and scalar paths) with the attention launched
programmatically behind it (a step of 8 tokens: 32 rows per KV head do not fit a decode tile);
Hopper decode grids that fill the GPU on CTAs of 3 warps, or a short wave split (dense, whole
pages, pages of 7, the fused append); steps of several query tokens whose GQA-packed rows pass a
decode tile (speculative decoding's verification), split and unsplit.
"""

from __future__ import annotations

import os
import time

import torch

os.environ.setdefault("FORGE_FLASH_BACKEND", "cuda")
import forge_flash
from forge_flash.call import NewKeys


def rand(*shape: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    return torch.randn(*shape, device="cuda", dtype=dtype)


def paged_and_appended_steps(batch: int, keys: int) -> None:
    """Decode steps of `batch` sequences of up to `keys` ragged keys over 2 KV heads of 128:
    whole pages of 16 (PagedKV), pages of 7 (IndexedKV), and a contiguous cache with one new
    key appended (the C API's two launches: the append kernel, then the decode kernel loading its
    first cached tiles before it waits for it)."""
    ragged = torch.randint(0, keys, (batch,), dtype=torch.int32, device="cuda")
    for page in (16, 7):
        blocks = -(-keys // page)
        table = torch.randperm(batch * blocks, device="cuda", dtype=torch.int32)
        k_pages, v_pages = (rand(batch * blocks, page, 2, 128) for _ in "kv")
        forge_flash.batched_decode_attention(
            rand(batch, 8, 128), k_pages, v_pages, ragged, block_table=table.view(batch, blocks)
        )
    forge_flash.flash_attn_with_kvcache(
        rand(batch, 1, 8, 128), rand(batch, keys + 1, 2, 128), rand(batch, keys + 1, 2, 128),
        rand(batch, 1, 2, 128), rand(batch, 1, 2, 128), cache_seqlens=ragged,
    )  # fmt: skip


_START = time.monotonic()


def step(name: str) -> None:
    """Waits for the calls so far, then says which come next: under a sanitizer a call that
    never ends (a kernel that hangs) shows as the last step printed."""
    torch.cuda.synchronize()
    print(f"sanitize matrix: {time.monotonic() - _START:7.1f} s, {name}", flush=True)


def main() -> None:
    assert forge_flash.active_backend().name == "cuda"
    fwd_cases = [  # b, sq, sk, h, hk, d, causal
        (8, 256, 256, 16, 16, 128, True),  # Hopper persistent: 256 work tiles
        (8, 200, 333, 16, 4, 128, False),  # Hopper persistent, tails
        (4, 300, 300, 32, 8, 64, False),  # Hopper persistent, head_dim 64
        (4, 700, 333, 16, 4, 96, True),  # persistent at 96: two Q buffers, deferred epilogues,
        (4, 700, 333, 16, 4, 64, True),  # work tiles whose rows see no key among the others
        (1, 1000, 1000, 24, 8, 192, True),  # persistent causal tiles by height at 192, GQA
        (1, 1100, 1100, 4, 4, 64, True),  # Hopper plain (more than 1024 keys): TMA-only,
        (2, 1300, 1300, 4, 2, 64, False),  # 3 consumer warpgroups at head_dim 64, tails, GQA
        (2, 1300, 1300, 24, 8, 96, False),  # head_dim 96 non-causal: 3 consumers, P in smem
        (1, 1300, 1300, 4, 2, 128, False),  # TMA-only, 176-key tiles at head_dim 128
        (2, 70, 130, 4, 2, 64, True),  # SM80 prefill, split-KV (small grid)
        (1, 1, 3000, 8, 2, 128, False),  # decode tile, GQA packing, split-KV (Hopper: cluster)
        (1, 1, 70000, 8, 2, 128, False),  # decode split-KV + combine kernel
        (2, 1, 700, 16, 1, 64, False),  # decode, 16 packed rows, cluster combine
        (160, 1, 300, 8, 2, 128, False),  # decode, grid full: one pass, no split
        (1, 4, 500, 16, 4, 256, True),  # decode tile of 4 causal queries x 4 heads, head_dim 256
        (1, 8, 6000, 32, 8, 128, True),  # a step of 8 tokens x a group of 4: 32 packed rows,
        (1, 5, 3001, 32, 8, 64, False),  # past a decode tile, split over long keys
        (8, 8, 4100, 32, 8, 128, True),  # and unsplit (8 sequences: the Hopper grid fills enough)
        (2, 33, 17, 2, 2, 40, True),  # routed head_dim, rows that see no key
        (1, 20, 200, 4, 4, 256, True),
    ]
    for b, sq, sk, h, hk, d, causal in fwd_cases:
        step(f"prefill/decode b={b} sq={sq} sk={sk} h={h}/{hk} d={d} causal={causal}")
        q, k, v = rand(b, sq, h, d), rand(b, sk, hk, d), rand(b, sk, hk, d)
        forge_flash.flash_attn_fwd(q, k, v, causal=causal, return_lse=True)
    step("strided views of one projection")
    qkv = rand(2, 100, (8 + 2 * 2) * 64, dtype=torch.float16)  # strided views of one projection
    q = qkv[..., :512].view(2, 100, 8, 64)
    k = qkv[..., 512:640].view(2, 100, 2, 64)
    v = qkv[..., 640:].view(2, 100, 2, 64)
    forge_flash.flash_attn_fwd(q, k, v, causal=True)

    step("varlen, queries shorter than keys")
    lens_q, lens_k = [5, 0, 130], [300, 17, 130]
    cu_q, cu_k = (
        torch.tensor([0, *torch.tensor(x).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
        for x in (lens_q, lens_k)
    )
    q, k, v = rand(sum(lens_q), 16, 128), rand(sum(lens_k), 4, 128), rand(sum(lens_k), 4, 128)
    forge_flash.flash_attn_varlen_fwd(
        q, k, v, cu_q, cu_k, max(lens_q), max(lens_k), causal=True, return_lse=True
    )
    # Past 1024 keys: the TMA-only instance's packed twin; within them, the persistent one's
    # (sequences that end inside a K/V tile, an empty one).
    for d, causal, lens in (
        (128, False, [1100, 0, 1300]),
        (64, True, [1100, 0, 1300]),
        (128, True, [1100, 0, 1300]),
        (64, False, [300, 0, 129, 1000, 77]),
        (128, True, [300, 0, 129, 1000, 77]),
        (96, False, [1100, 0, 1300]),
        (96, True, [300, 0, 129, 1000, 77]),
    ):
        step(f"varlen d={d} causal={causal} lengths={lens}")
        cu = torch.tensor(
            [0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device="cuda"
        )
        q, k, v = (rand(sum(lens), 2, d) for _ in range(3))
        forge_flash.flash_attn_varlen_fwd(q, k, v, cu, cu, max(lens), max(lens), causal=causal)
    # The persistent twin with more work tiles than CTAs: each draws its next tiles from the
    # counter and posts them to its consumers through the shared-memory queue.
    lens = [300, 0, 129, 1000, 77, 1, 640, 999, 256, 512, 13, 800]
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    for d, causal in ((64, True), (96, False), (128, False)):
        step(f"varlen d={d} causal={causal}: tiles drawn from the counter")
        q, k, v = rand(sum(lens), 8, d), rand(sum(lens), 2, d), rand(sum(lens), 2, d)
        forge_flash.flash_attn_varlen_fwd(q, k, v, cu, cu, max(lens), max(lens), causal=causal)

    step("batched decode over a contiguous cache")
    cache_k, cache_v = rand(4, 1000, 2, 128), rand(4, 1000, 2, 128)
    lens = torch.tensor([1000, 1, 0, 517], dtype=torch.int32, device="cuda")
    forge_flash.batched_decode_attention(rand(4, 8, 128), cache_k, cache_v, lens, return_lse=True)

    # The variant kernels: window + softcap, ALiBi, sinks (split-KV: the merges add them), any
    # scale, on the Hopper, SM80 and decode kernels; the new Hopper head dims.
    step("variants: window + softcap, ALiBi, sinks")
    f32 = {"device": "cuda", "dtype": torch.float32}
    for b, sq, sk, h, hk, d, causal in [
        (2, 300, 300, 8, 2, 128, True),
        (1, 1, 9000, 8, 2, 128, False),
        (2, 70, 130, 4, 2, 40, True),
        (1, 200, 700, 8, 8, 256, True),
    ]:
        q, k, v = rand(b, sq, h, d), rand(b, sk, hk, d), rand(b, sk, hk, d)
        forge_flash.flash_attn_fwd(q, k, v, causal=causal, window_size=(64, 16), softcap=30.0)
        forge_flash.flash_attn_fwd(q, k, v, causal=causal, alibi_slopes=torch.rand(b, h, **f32))
        forge_flash.flash_attn_fwd(
            q, k, v, causal=causal, sinks=torch.randn(h, **f32), return_lse=True
        )
        forge_flash.flash_attn_fwd(q, k, v, causal=causal, softmax_scale=-0.1)
    for d in (96, 192, 256):
        q, k, v = rand(2, 300, 4, d), rand(2, 300, 4, d), rand(2, 300, 4, d)
        forge_flash.flash_attn_fwd(q, k, v, causal=True)
        q, k, v = rand(1, 1100, 4, d), rand(1, 1100, 4, d), rand(1, 1100, 4, d)
        forge_flash.flash_attn_fwd(q, k, v, causal=True, window_size=(100, 0))
        forge_flash.flash_attn_fwd(q, k, v, causal=True, softcap=30.0)  # bounded logits (bf16)
    # The softcap-only TMA instance (BoundedSoftcap, whose turn passes once S has landed:
    # kTurnAfterS) at head_dim 64, 96 and 128: session 82's windowed call, which the profiler
    # showed running that instance at all three (a grid too large to split, query blocks that
    # see more than 1,024 keys: not the persistent kernel).
    for d in (64, 96, 128):
        q, k, v = rand(2, 2345, 16, d), rand(2, 2345, 4, d), rand(2, 2345, 4, d)
        forge_flash.flash_attn_fwd(q, k, v, causal=True, softcap=30.0, window_size=(1500, 0))
    step("windows and sinks over dense K/V")
    # Windows and sinks over dense K/V (TMA-only BandSinks instance, the plain instance's tiles).
    for d in (64, 128):
        q, k, v = rand(2, 1300, 4, d), rand(2, 1300, 2, d), rand(2, 1300, 2, d)
        forge_flash.flash_attn_fwd(q, k, v, window_size=(300, 40), sinks=torch.randn(4, **f32))
        forge_flash.flash_attn_fwd(q, k, v, causal=True, window_size=(500, 0))
    step("ALiBi alone over dense K/V")
    # ALiBi alone over dense K/V (TMA-only AlibiOnly instance).
    for d in (64, 96, 128, 192):
        q, k, v = rand(2, 1300, 4, d), rand(2, 1300, 2, d), rand(2, 1300, 2, d)
        forge_flash.flash_attn_fwd(q, k, v, alibi_slopes=torch.rand(4, **f32))
        forge_flash.flash_attn_fwd(q, k, v, causal=True, alibi_slopes=torch.rand(2, 4, **f32))
    step("paged K/V")
    # Paged K/V (page 16 and an odd 7), decode and chunked prefill, and a cache batch index.
    for page in (16, 7):
        blocks = -(-1000 // page)
        table = torch.randperm(4 * blocks, device="cuda", dtype=torch.int32).view(4, blocks)
        k_pages, v_pages = rand(4 * blocks, page, 2, 128), rand(4 * blocks, page, 2, 128)
        forge_flash.batched_decode_attention(
            rand(4, 8, 128), k_pages, v_pages, lens, block_table=table, return_lse=True
        )
        cu_q = torch.tensor([0, 5, 5, 25, 26], dtype=torch.int32, device="cuda")
        cu_k = torch.tensor([0, 1000, 1001, 1001, 1518], dtype=torch.int32, device="cuda")
        forge_flash.flash_attn_varlen_fwd(
            rand(26, 8, 128), k_pages, v_pages, cu_q, cu_k, 20, 1000, causal=True, block_table=table
        )
    # Chunked prefill past 1024 keys over pages of 16, 64 and 256: the TMA-only instance's PagedKV
    # twin (boxes within one page; the last page's rows past a sequence's keys masked and
    # zeroed), at head_dim 64, 96 and 128 (and 80: its loads of a column block by 8 rows); over
    # 16 heads its wide instance at 64 and 96 (three consumers: a grid of 4 waves of 128-row
    # blocks, 3 of 192-row ones; causal from 2k keys). Within 1024 keys the twin's persistent
    # instance (its producer warp draws the work tiles from a counter).
    long_q, short_q = [700, 0, 1100], [300, 0, 900]
    for d, page, heads, causal, lens_q, lens_k in (
        (128, 16, 8, True, long_q, [1300, 40, 1100]),
        (64, 256, 8, False, long_q, [1300, 40, 1100]),
        (96, 16, 8, True, long_q, [1300, 40, 1100]),
        (64, 16, 16, True, long_q, [4200, 40, 1100]),
        (96, 16, 16, False, long_q, [1300, 40, 1100]),
        (96, 16, 16, True, long_q, [2100, 40, 1100]),
        (80, 16, 8, True, long_q, [1300, 40, 1100]),  # zero-filled columns: no grouped maps
        # the persistent instance, where takes_paged_persistent sends calls up to head_dim 192:
        # two Q buffers up to 128, one at 192; at 64 its lagged turns (one causal, two not)
        (64, 16, 8, True, short_q, [500, 40, 1000]),
        (64, 16, 8, False, short_q, [500, 40, 1000]),
        (128, 16, 8, False, short_q, [500, 40, 1000]),
        (192, 16, 8, True, short_q, [500, 40, 1000]),
    ):
        step(f"paged varlen through TMA d={d} page={page} heads={heads} causal={causal}")
        per_seq = -(-max(lens_k) // page)
        table = torch.randperm(3 * per_seq, device="cuda", dtype=torch.int32).view(3, per_seq)
        k_pages, v_pages = rand(3 * per_seq, page, 2, d), rand(3 * per_seq, page, 2, d)
        cu_q, cu_k = (
            torch.tensor([0, *torch.tensor(n).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
            for n in (lens_q, lens_k)
        )
        forge_flash.flash_attn_varlen_fwd(
            rand(sum(lens_q), heads, d), k_pages, v_pages, cu_q, cu_k, max(lens_q), max(lens_k),
            causal=causal, block_table=table,
        )  # fmt: skip
    index = torch.tensor([3, 0, 0, 2], dtype=torch.int32, device="cuda")
    forge_flash.api.cache_attention(
        rand(4, 3, 8, 128), cache_k, cache_v, lens, cache_batch_idx=index, causal=True,
        cache_leftpad=torch.tensor([0, 0, 0, 100], dtype=torch.int32, device="cuda"),
    )  # fmt: skip
    step("decode steps with the K/V append")
    # Decode steps of 2 tokens (8 rows per KV head): over pages of 16 the append kernel, then
    # the whole-page decode instance loading cached keys before it waits; over pages of 7 the
    # append inside the decode kernel. 8 tokens take the K/V append kernel (then the attention
    # launched programmatically behind it), as do views no 16-byte access fits (scalar path:
    # head_dim 40, odd offsets, GPT-NeoX pairs 12 apart).
    angles = torch.rand(1024, 64, device="cuda", dtype=torch.float64) * 6.28
    cos, sin = angles.cos().to(torch.bfloat16), angles.sin().to(torch.bfloat16)
    grown = torch.tensor([990, 1, 0, 500], dtype=torch.int32, device="cuda")
    for page, interleaved, tokens in ((16, True, 2), (7, False, 2), (16, True, 8)):
        blocks = -(-1000 // page)
        table = torch.randperm(4 * blocks, device="cuda", dtype=torch.int32).view(4, blocks)
        k_pages, v_pages = rand(4 * blocks, page, 2, 128), rand(4 * blocks, page, 2, 128)
        forge_flash.flash_attn_with_kvcache(
            rand(4, tokens, 8, 128), k_pages, v_pages, rand(4, tokens, 2, 128),
            rand(4, tokens, 2, 128),
            rotary_cos=cos, rotary_sin=sin, cache_seqlens=grown, block_table=table,
            causal=True, rotary_interleaved=interleaved,
        )  # fmt: skip
    step("rotary over a contiguous cache")
    # Rotary over a contiguous cache (here with cache rows): the C API's two launches, the
    # decode kernel waiting for the append kernel first (IndexedKV loads nothing early).
    forge_flash.flash_attn_with_kvcache(
        rand(4, 1, 8, 128), cache_k, cache_v, rand(4, 1, 2, 128), rand(4, 1, 2, 128),
        rotary_cos=cos[:, :32], rotary_sin=sin[:, :32], cache_seqlens=grown,
        cache_batch_idx=torch.tensor([3, 0, 1, 2], dtype=torch.int32, device="cuda"),
    )  # fmt: skip
    wide = rand(3, 2, 2, 83)
    table = torch.randperm(11, device="cuda", dtype=torch.int32)[:9].view(3, 3)
    new = NewKeys(wide[..., 1:41], wide[..., 42:82], cos[:15, :12], sin[:15, :12], False, True)
    forge_flash.kvcache_append.append_step(
        rand(3, 2, 4, 41)[..., 1:], rand(11, 5, 2, 40), rand(11, 5, 2, 40),
        torch.tensor([0, 4, 13], dtype=torch.int32, device="cuda"), new, cache_batch_idx=None,
        block_table=table,
    )  # fmt: skip
    step("Hopper decode grids of 3-warp CTAs")
    # Hopper decode grids of one wave of 3-warp CTAs (DecodeFullGridConfig: 4 per SM at
    # head_dim 128, 5 at 64; 2 KV heads, a CTA each): dense, whole pages of 16, pages of 7
    # (IndexedKV), the fused append. Ragged lengths, some empty.
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for d, per_sm in ((128, 4), (64, 5)):
        b = per_sm * sms // 2
        forge_flash.flash_attn_fwd(rand(b, 1, 8, d), rand(b, 300, 2, d), rand(b, 300, 2, d))
    paged_and_appended_steps(4 * sms // 2, 300)
    step("Hopper decode grids of 8-warp CTAs")
    # Hopper decode grids of 8-warp CTAs (DecodeWideConfig): one per SM at head_dim 128 (more
    # CTAs than half the SMs, no split), a small split grid at head_dim 64 (two per SM); dense,
    # whole pages of 16, pages of 7 (IndexedKV), the fused append. Ragged lengths over several
    # tiles per warp, some empty.
    b = sms // 2
    for d, batch in ((128, b), (64, 4)):
        forge_flash.flash_attn_fwd(
            rand(batch, 1, 8, d), rand(batch, 900, 2, d), rand(batch, 900, 2, d)
        )
    paged_and_appended_steps(b, 900)
    step("Hopper decode grids past one wave")
    # Hopper decode grids just past one wave of 8-warp CTAs at head_dim 128 (a short wave of
    # 4-warp ones) over 4096 keys or more: 3-warp CTAs split to fill a wave, merged in clusters
    # of 3; dense, whole pages of 16, pages of 7, the fused append.
    b = (sms + 4) // 2
    forge_flash.flash_attn_fwd(rand(b, 1, 8, 128), rand(b, 4200, 2, 128), rand(b, 4200, 2, 128))
    paged_and_appended_steps(b, 4200)
    step("pages of one key")
    # Pages of one key at two sequences: 8-warp CTAs, the splits merged in clusters or by the
    # combine kernel (head_dim 128).
    lengths = torch.tensor([5000, 4093], dtype=torch.int32, device="cuda")
    table = torch.randperm(2 * 5000, device="cuda", dtype=torch.int32).view(2, 5000)
    forge_flash.batched_decode_attention(
        rand(2, 8, 128), rand(2 * 5000, 1, 2, 128), rand(2 * 5000, 1, 2, 128), lengths,
        block_table=table,
    )  # fmt: skip
    step("done")
    print("sanitize matrix done")


if __name__ == "__main__":
    main()
