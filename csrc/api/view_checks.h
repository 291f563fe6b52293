// Checks of strided views shared by the C API's entry points that take any strides (the merge
// of partial states, the K/V append): pointers, strides, int64 offsets, overlaps. Host-only;
// nothing here dereferences a device pointer.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>

#include "forge_flash/flash_api.h"

namespace forge_flash {

// A strided view as a kernel addresses it: extents and strides in elements, the last
// dimension (if any) contiguous.
struct View {
  const char* name;
  const void* data;
  int64_t element_bytes;
  int ndim;
  int64_t extents[4], strides[4];
};

// The message of the first failed check, or "" when every check passed.
struct Check {
  ff_status status = FF_OK;
  std::string message;
  bool failed() const { return status != FF_OK; }
};

template <typename... Args>
Check fail(const char* fmt, Args... args) {
  char buf[512];
  std::snprintf(buf, sizeof(buf), fmt, args...);
  return {FF_ERROR_INVALID_ARGUMENT, buf};
}

// Pointer present and aligned to the element, strides non-negative, every offset in int64.
inline Check check_view(const View& v) {
  if (v.data == nullptr) return fail("%s is NULL", v.name);
  if (reinterpret_cast<uintptr_t>(v.data) % v.element_bytes != 0)
    return fail("%s must be aligned to its %lld-byte elements (got %p)", v.name,
                static_cast<long long>(v.element_bytes), v.data);
  int64_t max_offset = 0;
  for (int i = 0; i < v.ndim; ++i) {
    if (v.strides[i] < 0)
      return fail("%s: stride %d must be non-negative, got %lld", v.name, i, static_cast<long long>(v.strides[i]));
    if (v.extents[i] > 1 && v.strides[i] > 0) {
      if (v.extents[i] - 1 > (INT64_MAX / v.element_bytes - max_offset) / v.strides[i])
        return fail("%s: offsets overflow int64 (stride %d = %lld)", v.name, i, static_cast<long long>(v.strides[i]));
      max_offset += (v.extents[i] - 1) * v.strides[i];
    }
  }
  return {};
}

// Bytes [first, last] the view can touch (a view with an empty extent touches none: first > last).
inline void byte_range(const View& v, uintptr_t* first, uintptr_t* last) {
  int64_t span = 0;
  for (int i = 0; i < v.ndim; ++i) {
    if (v.extents[i] == 0) {
      *first = 1, *last = 0;
      return;
    }
    span += (v.extents[i] - 1) * v.strides[i];
  }
  *first = reinterpret_cast<uintptr_t>(v.data);
  *last = *first + static_cast<uintptr_t>((span + 1) * v.element_bytes) - 1;
}

inline bool bytes_overlap(const View& x, const View& y) {
  uintptr_t x0, x1, y0, y1;
  byte_range(x, &x0, &x1);
  byte_range(y, &y0, &y1);
  return x0 <= x1 && y0 <= y1 && !(x1 < y0 || y1 < x0);
}

// Two lanes must never write one element: sorted by stride, each dimension must step past
// everything the smaller dimensions span (true of every strided torch view).
inline Check check_no_self_overlap(const View& v) {
  struct Dim {
    int64_t stride, extent;
  } dims[4];
  for (int i = 0; i < v.ndim; ++i) dims[i] = {v.strides[i], v.extents[i]};
  std::sort(dims, dims + v.ndim, [](const Dim& x, const Dim& y) { return x.stride < y.stride; });
  int64_t span = 1;  // elements covered by the dimensions so far
  for (int i = 0; i < v.ndim; ++i) {
    if (dims[i].extent <= 1) continue;
    if (dims[i].stride < span)
      return fail("%s: strides make elements overlap (stride %lld < span %lld)", v.name,
                  static_cast<long long>(dims[i].stride), static_cast<long long>(span));
    span = dims[i].stride * (dims[i].extent - 1) + span;
  }
  return {};
}

}  // namespace forge_flash
