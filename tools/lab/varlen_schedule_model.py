"""A model of how evenly the persistent Hopper kernel's CTAs share a varlen batch's work tiles,
for three orders of the tiles and three ways of dealing them out (no GPU: arithmetic on the
lengths alone):

    python tools/lab/varlen_schedule_model.py            # varlen_rows.py's short draw
    python tools/lab/varlen_schedule_model.py --sweep    # 1,080 draws within 1024 tokens
    python tools/lab/varlen_schedule_model.py --causal --seed 3 --total 2048   # a tiny causal batch

A work tile is one query block of `block_m` rows of one (sequence, head); non-causal it walks all
of its sequence's K/V tiles, so it costs ceil(L / block_n) K/V tiles plus a fixed start-up
(`--overhead`, in K/V tiles), and a query block past its sequence's end costs only its
bookkeeping (`--empty`); causal (`--causal`, queries and keys of the same length) it walks the
K/V tiles up to its last row's diagonal. The kernel ends when its most loaded CTA does, so its
efficiency is the mean CTA load over the largest. Dealing:
- `static`: CTA c of G takes tiles c, c + G, c + 2G, ... (main's persistent kernel);
- `dynamic`: each CTA takes the next tile in order when it finishes one (a tile counter in
  global memory: sm90/work_queue.cuh on branch `dynamic-tiles`, 2026-12-05);
- `ahead`: each CTA claims its next tile when it starts one (the counter read a tile early, so
  that the read's latency hides under a tile's work; not built).
Orders:
- `batch-head`: (sequence, head)-major, query blocks inner: main's order (cta_work.cuh);
- `height`: query block height-major, the highest first, (sequence, head) inner: branch
  `varlen-lpt-persistent`'s order for persistent launches;
- `grouped`: causal calls' order in cta_work.cuh (main's for them): groups of 8 (sequence,
  head) pairs, each group's highest query blocks first;
- `sorted`: the tiles heaviest first, no empty blocks (a schedule sorted on the device; not
  built).
The same tokens in equal lengths (the dense call varlen_rows.py compares with) are printed
beside them.

Checked against the H200 (2026-12-05, docs/benchmarks.md, 47 sequences of 67-984 tokens,
non-causal): the model predicts static `height` / static `batch-head` = 1.22 at head_dim 64 and
1.13 at 128; measured 1.153 and 1.125, with main's varlen / equal-lengths ratio at 0.67-0.68 and
0.75-0.78 (the model: 0.69 / 0.98 and 0.65 / 0.95). On that draw the model put the dynamic dealing
at 1.43x the static one at head_dim 64 and 1.52x at 128; built, it measured 1.41x and 1.42x
(non-causal; docs/bench-raw/2026-12-05m-h200-dynamic-tiles-ab.txt).
"""

from __future__ import annotations

import argparse
import heapq
import math
import statistics

from varlen_rows import mixed_lengths  # this directory's fixed draws of lengths

# The persistent instances' tiles (sm90/tile_config.cuh, Sm90Tiles): head_dim 64, 96 and 128
# run 128 query rows against 128-key K/V tiles; 2048 // head_dim heads as in varlen_rows.py.
SHAPES = ((64, 32, 128, 128), (96, 21, 128, 128), (128, 16, 128, 128))
ORDERS = ("batch-head", "height", "sorted")
CAUSAL_ORDERS = ("grouped", "height", "sorted")
CAUSAL_GROUP = 8  # cta_work.cuh, kCausalHeadGroup
DEALINGS = ("static", "dynamic", "ahead")


def tile_costs(
    lengths: list[int],
    heads: int,
    block_m: int,
    block_n: int,
    order: str,
    overhead: float = 0.5,
    empty: float = 0.05,
    causal: bool = False,
) -> list[float]:
    """The work tiles' costs in launch order."""

    def cost(length: int, block: int) -> float:
        """A query block's K/V tiles (causal: to its last row's diagonal) and its start-up."""
        keys = min((block + 1) * block_m, length) if causal else length
        return math.ceil(keys / block_n) + overhead

    if order == "sorted":
        costs = [
            cost(n, b) for n in lengths for b in range(math.ceil(n / block_m)) for _ in range(heads)
        ]
        return sorted(costs, reverse=True)
    blocks = max(math.ceil(length / block_m) for length in lengths)
    pairs = len(lengths) * heads
    costs = []
    for tile in range(blocks * pairs):
        if order == "batch-head":
            pair, block = divmod(tile, blocks)
        elif order == "grouped":
            group, rest = divmod(tile, CAUSAL_GROUP * blocks)
            in_group = min(CAUSAL_GROUP, pairs - group * CAUSAL_GROUP)
            level, member = divmod(rest, in_group)
            pair, block = group * CAUSAL_GROUP + member, blocks - 1 - level
        else:
            level, pair = divmod(tile, pairs)
            block = blocks - 1 - level
        length = lengths[pair // heads]
        costs.append(empty if block * block_m >= length else cost(length, block))
    return costs


def efficiency(costs: list[float], ctas: int, dealing: str = "static") -> float:
    """Mean CTA load over the largest (the kernel's end: when its last CTA finishes)."""
    if dealing == "static":
        end = max(sum(costs[c::ctas]) for c in range(ctas))
    elif dealing == "dynamic":
        loads = [0.0] * ctas  # a heap: the CTA that finishes first takes the next tile
        for cost in costs:
            heapq.heapreplace(loads, loads[0] + cost)
        end = max(loads)
    else:
        end = _claimed_ahead_end(costs, ctas)
    return sum(costs) / ctas / end


def _claimed_ahead_end(costs: list[float], ctas: int) -> float:
    """When the last CTA finishes if CTA c starts tile c and each CTA claims the next tile in
    order as it starts one (at the start, in CTA order): a heap of (finish, CTA, claimed)."""
    tiles = iter(costs)
    # range first: zip stops at the last CTA without drawing one more tile
    running = [[cost, c, None] for c, cost in zip(range(ctas), tiles, strict=False)]
    for entry in running:
        entry[2] = next(tiles, None)
    heapq.heapify(running)
    end = 0.0
    while running:
        end, c, claimed = heapq.heappop(running)
        if claimed is not None:
            heapq.heappush(running, [end + claimed, c, next(tiles, None)])
    return end


def one_draw(args: argparse.Namespace) -> None:
    draw = {"total": args.total} if args.total else {}
    if args.seed is not None:
        draw["seed"] = args.seed
    lengths = mixed_lengths(high=args.high, **draw)
    equal = [round(sum(lengths) / len(lengths))] * len(lengths)
    kind = "causal" if args.causal else "non-causal"
    shortest, longest = min(lengths), max(lengths)
    print(f"{len(lengths)} sequences of {shortest}-{longest} tokens, {kind}, {args.ctas} CTAs")
    orders, main_order = (CAUSAL_ORDERS, "grouped") if args.causal else (ORDERS, "batch-head")
    for head_dim, heads, block_m, block_n in SHAPES:
        row = [f"head_dim {head_dim}:"]
        for dealing in DEALINGS:
            for order in orders:
                costs = tile_costs(
                    lengths, heads, block_m, block_n, order, args.overhead, args.empty, args.causal
                )
                row.append(f"{dealing} {order} {efficiency(costs, args.ctas, dealing):.2f}")
        costs = tile_costs(
            equal, heads, block_m, block_n, main_order, args.overhead, args.empty, args.causal
        )
        row.append(f"| equal lengths {efficiency(costs, args.ctas):.2f}")
        print("  ".join(row))


def sweep(args: argparse.Namespace) -> None:
    """Draws of 40 seeds x shortest 16/64/256 x 4k/16k/64k tokens x 32/16/8 heads, all within
    1024 tokens (the persistent launch's keys), at head_dim 64's tiles; each way against main's."""
    runs: dict[str, list[float]] = {f"{d} {o}": [] for d in DEALINGS for o in ORDERS}
    for seed in range(40):
        for low in (16, 64, 256):
            for total in (4096, 16384, 65536):
                lengths = mixed_lengths(total=total, low=low, high=1024, seed=seed)
                for heads in (32, 16, 8):
                    for order in ORDERS:
                        costs = tile_costs(
                            lengths, heads, 128, 128, order, args.overhead, args.empty
                        )
                        for dealing in DEALINGS:
                            runs[f"{dealing} {order}"].append(efficiency(costs, args.ctas, dealing))
    main_runs = runs["static batch-head"]
    print(f"{len(main_runs)} draws; efficiency, and speed against main's static batch-head order")
    for name, effs in runs.items():
        ratios = sorted(e / m for e, m in zip(effs, main_runs, strict=True))
        print(
            f"{name:19s} efficiency median {statistics.median(effs):.2f} min {min(effs):.2f} | "
            f"against main: min {ratios[0]:.2f} median {statistics.median(ratios):.2f}, "
            f"{sum(r < 0.99 for r in ratios)} draws slower by more than 1%"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--high", type=int, default=1024, help="the draw's longest length")
    parser.add_argument("--ctas", type=int, default=132, help="the persistent grid (H200: 132)")
    parser.add_argument("--overhead", type=float, default=0.5, help="a tile's start-up, K/V tiles")
    parser.add_argument("--empty", type=float, default=0.05, help="an empty tile's cost, K/V tiles")
    parser.add_argument("--sweep", action="store_true", help="many draws, summarised")
    parser.add_argument("--causal", action="store_true", help="causal tiles (one draw)")
    parser.add_argument("--seed", type=int, default=None, help="the draw's seed (varlen_rows')")
    parser.add_argument("--total", type=int, default=0, help="the draw's tokens (default 16k)")
    args = parser.parse_args()
    (sweep if args.sweep else one_draw)(args)


if __name__ == "__main__":
    main()
