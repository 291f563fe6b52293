// Extreme values through every field of a C API argument struct, one field at a time and
// every pair of fields: the API must answer each call with a status (OK, or a refusal that
// names something, launches nothing), never crash, and never compute anything undefined.
// Run in the host-only test programs (validation_test.cpp, merge_validation_test.cpp,
// append_validation_test.cpp); test_c_api_validation.py also builds them under AddressSanitizer
// and UndefinedBehaviorSanitizer, where an overflowing size computation or a read past a
// struct aborts the program. The case tables pin each message; this looks for what they did
// not think of. (Its first run found the dtype enums: a bad code from a C caller was
// undefined behaviour to read in C++; flash_api.h now gives them the whole int32 range.)
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "forge_flash/flash_api.h"

// One field of Args and the values the sweep puts there (by index into its kind's list).
template <class Args>
struct Field {
  const char* name;
  int values;
  std::function<void(Args&, int)> set;
};

inline const std::vector<int64_t>& extreme_ints() {
  static const std::vector<int64_t> v = {INT32_MIN, -65536,        -2,       -1, 0, 1, 2, 3, 7, 8, 255, 256, 257,
                                         65537,     INT32_MAX - 1, INT32_MAX};
  return v;
}
inline const std::vector<int64_t>& extreme_int64s() {
  static const std::vector<int64_t> v = {INT64_MIN,        -(int64_t{1} << 40), -1,       0, 1, 3, int64_t{1} << 31,
                                         int64_t{1} << 40, INT64_MAX / 2,       INT64_MAX};
  return v;
}
inline const std::vector<float>& extreme_floats() {
  static const std::vector<float> v = {std::numeric_limits<float>::quiet_NaN(),
                                       std::numeric_limits<float>::infinity(),
                                       -std::numeric_limits<float>::infinity(),
                                       -1.f,
                                       0.f,
                                       1e-45f,
                                       1e-3f,
                                       1.f,
                                       3e38f};
  return v;
}
// A pointer field: NULL, or the given address shifted by 0-3 bytes (misaligned but for 0).
inline uintptr_t shifted_address(const void* base, int i) { return reinterpret_cast<uintptr_t>(base) + i; }

#define FF_INT_FIELD(Args, f)                                                       \
  Field<Args> {                                                                     \
    #f, static_cast<int>(extreme_ints().size()),                                    \
        [](Args& a, int i) { a.f = static_cast<decltype(a.f)>(extreme_ints()[i]); } \
  }
#define FF_INT64_FIELD(Args, f)                                                                      \
  Field<Args> {                                                                                      \
    #f, static_cast<int>(extreme_int64s().size()), [](Args& a, int i) { a.f = extreme_int64s()[i]; } \
  }
#define FF_FLOAT_FIELD(Args, f)                                                                      \
  Field<Args> {                                                                                      \
    #f, static_cast<int>(extreme_floats().size()), [](Args& a, int i) { a.f = extreme_floats()[i]; } \
  }
// `base`: an address of the test's buffer for a field that is NULL in the valid call.
#define FF_POINTER_FIELD(Args, f, base)                                                                    \
  Field<Args> {                                                                                            \
    #f, 5, [](Args& a, int i) {                                                                            \
      const void* start = a.f != nullptr ? static_cast<const void*>(a.f) : static_cast<const void*>(base); \
      a.f = i == 4 ? nullptr : reinterpret_cast<decltype(a.f)>(shifted_address(start, i));                 \
    }                                                                                                      \
  }
// The four fields of an ff_tensor member.
#define FF_TENSOR_FIELDS(Args, t, base)                                                                           \
  FF_POINTER_FIELD(Args, t.data, base), FF_INT64_FIELD(Args, t.batch_stride), FF_INT64_FIELD(Args, t.row_stride), \
      FF_INT64_FIELD(Args, t.head_stride)

// Runs `call` on `valid` with every field at every value, then with every pair of fields at
// every pair of values (`pairs`), and prints one PASS or FAIL line. A call must return OK with
// no message, or FF_ERROR_INVALID_ARGUMENT / FF_ERROR_UNSUPPORTED with one (or
// FF_WORKSPACE_REQUIRED), and a refused call must launch nothing (`launches` counts them).
template <class Args>
void sweep_extremes(const char* name, const Args& valid, const std::vector<Field<Args>>& fields,
                    const std::function<ff_status(const Args&)>& call, const int& launches, bool pairs, int& passed,
                    int& failed) {
  long calls = 0, accepted = 0, bad = 0;
  auto check = [&](const Args& a, const std::string& what) {
    const int before = launches;
    const ff_status status = call(a);
    const std::string message = ff_last_error();
    ++calls;
    bool ok;
    if (status == FF_OK) {
      ++accepted;
      ok = message.empty();
    } else {
      ok = (status == FF_ERROR_INVALID_ARGUMENT || status == FF_ERROR_UNSUPPORTED || status == FF_WORKSPACE_REQUIRED) &&
           launches == before && (status == FF_WORKSPACE_REQUIRED || !message.empty());
    }
    if (!ok && ++bad <= 10)
      std::printf("  %s, %s: status %d, message \"%s\"\n", name, what.c_str(), static_cast<int>(status),
                  message.c_str());
  };
  for (size_t f = 0; f < fields.size(); ++f)
    for (int i = 0; i < fields[f].values; ++i) {
      Args a = valid;
      fields[f].set(a, i);
      check(a, std::string(fields[f].name) + " value " + std::to_string(i));
    }
  if (pairs)
    for (size_t f = 0; f < fields.size(); ++f)
      for (size_t g = f + 1; g < fields.size(); ++g)
        for (int i = 0; i < fields[f].values; ++i)
          for (int j = 0; j < fields[g].values; ++j) {
            Args a = valid;
            fields[f].set(a, i);
            fields[g].set(a, j);
            check(a, std::string(fields[f].name) + " value " + std::to_string(i) + ", " + fields[g].name + " value " +
                         std::to_string(j));
          }
  std::printf("%s extreme values through %s: %ld calls, %ld accepted\n", bad == 0 ? "PASS" : "FAIL", name, calls,
              accepted);
  bad == 0 ? ++passed : ++failed;
}
