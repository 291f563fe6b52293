// Division by a divisor that is fixed for a launch (the GQA group, the query blocks per head, the
// heads per batch row) as a multiply-high, an add and a shift. The kernels map work tiles and
// tile rows to (batch, head, query block, query position) with such divisions at the start of
// every work tile and in every epilogue; `/` by a runtime int compiles to about 25 instructions
// (a reciprocal on the special-function unit and its corrections), this to 3: 34 of them in
// the persistent head_dim-64 kernel, 12 left. Measured against `/` (H200, 2026-12-02,
// docs/bench-history/2026-12-02.md): prefill beside cuDNN +3.1% geomean over the benchmark's 36 rows, the
// short causal ones most (head_dim 64 at 512 tokens +14%, 1k +9%); one-query decode 5% faster at
// 4k keys, 4-5% at 8k (the divisions stood before its first loads).
//
// The method (round-up multiplier, as in Granlund and Montgomery, "Division by invariant integers
// using multiplication", 1994): for 1 <= d <= 2^31 - 1 let s = ceil(log2 d) and
// m = floor(2^32 (2^s - d) / d) + 1 (< 2^32). Then for 0 <= n < 2^31,
//   n / d = (umulhi(n, m) + n) >> s,
// and umulhi(n, m) + n stays below 2^32 because umulhi(n, m) < n. tests/c_api/fast_div_test.cpp
// checks it against `/` and `%` on the host.
#pragma once

#include <stdint.h>

#include "host_device.h"

namespace forge_flash {

struct FastDiv {
  int divisor = 1;
  uint32_t multiplier = 1;  // m above (1 for powers of two, whose quotient is the shift alone)
  int shift = 0;            // s above

  FastDiv() = default;
  // d < 1 is taken as 1 (a launch never divides by less).
  explicit FastDiv(int d) : divisor(d < 1 ? 1 : d) {
    while ((1ll << shift) < divisor) ++shift;
    multiplier = static_cast<uint32_t>(((1ull << 32) * ((1ull << shift) - divisor)) / divisor + 1);
  }

  // n / divisor for 0 <= n < 2^31.
  FF_HOST_DEVICE int div(int n) const {
    const uint32_t u = static_cast<uint32_t>(n);
#if defined(__CUDA_ARCH__)
    const uint32_t high = __umulhi(u, multiplier);
#else
    const uint32_t high = static_cast<uint32_t>((static_cast<uint64_t>(u) * multiplier) >> 32);
#endif
    return static_cast<int>((high + u) >> shift);
  }
  // n % divisor, given q = div(n).
  FF_HOST_DEVICE int mod(int n, int q) const { return n - q * divisor; }
};

}  // namespace forge_flash
