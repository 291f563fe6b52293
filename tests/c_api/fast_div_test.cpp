// FastDiv (csrc/kernels/fast_div.h) against `/` and `%` on the host: every divisor up to 4096
// and the large ones a launch can have, each with the dividends around its multiples, both ends of
// the range, and random ones; divisors up to 64 with whole ranges of dividends. Prints the first
// mismatch and exits non-zero on any.
// Run by tests/c_api/test_fast_div.py.
#include "../../csrc/kernels/fast_div.h"

#include <climits>
#include <cstdio>
#include <random>
#include <vector>

int main() {
  std::vector<int> divisors;
  for (int d = 1; d <= 4096; ++d) divisors.push_back(d);
  for (int k = 12; k <= 30; ++k)
    for (int delta : {-1, 0, 1}) divisors.push_back((1 << k) + delta);
  for (int d : {INT_MAX, INT_MAX - 1, 1000003, 46341, 65535, 65537, 3 * 5 * 7 * 11 * 13 * 17 * 19})
    divisors.push_back(d);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> any(0, INT_MAX);
  for (int i = 0; i < 2000; ++i) divisors.push_back(1 + any(rng) % INT_MAX);

  long checked = 0;
  for (const int d : divisors) {
    const forge_flash::FastDiv fd(d);
    std::vector<int> dividends{0, 1, 2, INT_MAX, INT_MAX - 1, INT_MAX / 2, d - 1, d};
    for (long m : {1l, 2l, 3l, 7l, 1000l, static_cast<long>(INT_MAX / d)}) {
      for (long delta : {-1l, 0l, 1l}) {
        const long n = m * d + delta;
        if (n >= 0 && n <= INT_MAX) dividends.push_back(static_cast<int>(n));
      }
    }
    for (int i = 0; i < 64; ++i) dividends.push_back(any(rng));
    for (const int n : dividends) {
      if (n < 0) continue;
      const int q = fd.div(n), r = fd.mod(n, q);
      ++checked;
      if (q != n / d || r != n % d) {
        std::printf("FastDiv(%d): %d / %d gave %d rem %d, want %d rem %d\n", d, n, d, q, r, n / d, n % d);
        return 1;
      }
    }
  }
  // Every dividend below 2^22 and the top 2^20 below 2^31 for the divisors a GQA group or a
  // small grid takes.
  for (int d = 1; d <= 64; ++d) {
    const forge_flash::FastDiv fd(d);
    for (long n = 0; n <= INT_MAX; n = n == (1l << 22) ? INT_MAX - (1l << 20) : n + 1) {
      const int q = fd.div(static_cast<int>(n));
      ++checked;
      if (q != n / d || fd.mod(static_cast<int>(n), q) != n % d) {
        std::printf("FastDiv(%d): %ld / %d gave %d, want %ld\n", d, n, d, q, n / d);
        return 1;
      }
    }
  }
  std::printf("fast_div: %ld divisions by %zu divisors exact\n", checked, divisors.size());
  return 0;
}
