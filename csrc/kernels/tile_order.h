// The persistent kernel's causal order by query block height (cta_work, p.causal_by_height) as
// host/device arithmetic, so that tests/c_api/split_plan_test.cpp checks on the host that it
// hands out every work tile once.
#pragma once

#include "fast_div.h"
#include "host_device.h"

namespace forge_flash {

// The place in the by-height order (every (batch, head) pair's heaviest query block, then the
// next height, ...) of the work tile a persistent CTA takes as `tile` = blockIdx.x + round *
// gridDim.x (`rounds` divides by gridDim.x; last_round = (tiles - 1) / gridDim.x): every other
// round, counted back from the last, walks the CTAs backwards (snake order), so that a CTA that
// drew a heavy tile in one round draws a light one in the next, and a partial last round keeps
// its CTAs' order (its tiles exist for the first CTAs only).
FF_HOST_DEVICE_INLINE int by_height_index(int tile, const FastDiv& rounds, int last_round) {
  const int round = rounds.div(tile), c = rounds.mod(tile, round);
  return (last_round - round) & 1 ? tile + rounds.divisor - 1 - 2 * c : tile;
}

}  // namespace forge_flash
