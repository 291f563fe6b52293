// The C API of the merge of partial attention states: check every argument, then launch.
// Nothing here dereferences a device pointer.
#include <cstdint>
#include <cstdio>
#include <string>

#include "../kernels/merge_states.h"
#include "forge_flash/flash_api.h"
#include "view_checks.h"

namespace forge_flash {

// flash_api.cpp's: the thread's message for ff_last_error().
void set_last_error(const std::string& message);

namespace {

View out_view(const char* name, const ff_tensor& t, ff_merge_dtype dtype, const ff_merge_args& a) {
  return {name,
          t.data,
          dtype == FF_MERGE_FLOAT32 ? 4 : 2,
          4,
          {a.batch_size, a.seqlen, a.num_heads, a.head_dim},
          {t.batch_stride, t.row_stride, t.head_stride, 1}};
}

View lse_view(const char* name, const ff_lse_tensor& t, const ff_merge_args& a) {
  return {
      name, t.data, 4, 3, {a.batch_size, a.num_heads, a.seqlen, 1}, {t.batch_stride, t.head_stride, t.row_stride, 1}};
}

bool valid_dtype(ff_merge_dtype d) { return d == FF_MERGE_FLOAT16 || d == FF_MERGE_BFLOAT16 || d == FF_MERGE_FLOAT32; }

bool same_view(const View& x, const View& y) {
  if (x.data != y.data || x.element_bytes != y.element_bytes) return false;
  for (int i = 0; i < x.ndim; ++i)
    if (x.extents[i] > 1 && x.strides[i] != y.strides[i]) return false;
  return true;
}

// The destination is either exactly the part (in place) or apart from it.
Check check_apart(const View& dst, const View& part) {
  if (!bytes_overlap(dst, part) || same_view(dst, part)) return {};
  return fail("%s overlaps %s without being the same view (an in-place merge must pass the part itself)", dst.name,
              part.name);
}

Check check_merge(const ff_merge_args* a) {
  if (a == nullptr) return fail("args is NULL");
  if (a->num_parts < 1 || a->num_parts > FF_MERGE_MAX_PARTS)
    return fail("num_parts must be in [1, %d], got %d", FF_MERGE_MAX_PARTS, a->num_parts);
  if (a->batch_size < 0 || a->seqlen < 0 || a->num_heads < 0)
    return fail("batch_size (%d), seqlen (%d) and num_heads (%d) must be >= 0", a->batch_size, a->seqlen, a->num_heads);
  if (a->head_dim < 1) return fail("head_dim must be >= 1, got %d", a->head_dim);
  if (!valid_dtype(a->out_dtype)) return fail("out_dtype must be an ff_merge_dtype, got %d", a->out_dtype);
  if (a->batch_size == 0 || a->seqlen == 0 || a->num_heads == 0) return {};  // nothing to read or write
  // Two factors below 2^31 fit int64; the third may not (found by tests/c_api/extremes.h).
  const int64_t per_head = static_cast<int64_t>(a->batch_size) * a->seqlen;
  if (per_head > INT64_MAX / a->num_heads ||
      (per_head * a->num_heads + kMergeRowsPerCta - 1) / kMergeRowsPerCta > INT32_MAX)
    return fail("batch_size * seqlen * num_heads (%d x %d x %d) is too large for one launch", a->batch_size, a->seqlen,
                a->num_heads);

  const View out = out_view("out", a->out, a->out_dtype, *a);
  const View out_lse = lse_view("out_lse", a->out_lse, *a);
  Check c;
  if ((c = check_view(out)).failed() || (c = check_no_self_overlap(out)).failed()) return c;
  if (out_lse.data != nullptr && ((c = check_view(out_lse)).failed() || (c = check_no_self_overlap(out_lse)).failed()))
    return c;
  for (int i = 0; i < a->num_parts; ++i) {
    const ff_merge_part& part = a->parts[i];
    char out_name[32], lse_name[32];
    std::snprintf(out_name, sizeof(out_name), "parts[%d].out", i);
    std::snprintf(lse_name, sizeof(lse_name), "parts[%d].lse", i);
    if (!valid_dtype(part.dtype)) return fail("parts[%d].dtype must be an ff_merge_dtype, got %d", i, part.dtype);
    const View part_out = out_view(out_name, part.out, part.dtype, *a);
    const View part_lse = lse_view(lse_name, part.lse, *a);
    if ((c = check_view(part_out)).failed() || (c = check_view(part_lse)).failed()) return c;
    if ((c = check_apart(out, part_out)).failed()) return c;
    if (out_lse.data != nullptr && (c = check_apart(out_lse, part_lse)).failed()) return c;
  }
  return {};
}

}  // namespace
}  // namespace forge_flash

extern "C" ff_status ff_merge_states(const ff_merge_args* args, cudaStream_t stream) {
  using namespace forge_flash;
  Check c = check_merge(args);
  if (!c.failed() && args->batch_size > 0 && args->seqlen > 0 && args->num_heads > 0) {
    const cudaError_t err = launch_merge_states(*args, stream);
    if (err != cudaSuccess) {
      char buf[256];
      std::snprintf(buf, sizeof(buf), "merge kernel launch failed: %s", cudaGetErrorString(err));
      c = {FF_ERROR_CUDA, buf};
    }
  }
  set_last_error(c.message);
  return c.status;
}
