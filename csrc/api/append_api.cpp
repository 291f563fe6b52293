// The C API of the K/V append (ff_append_kv): check every argument, then launch. Nothing here
// dereferences a device pointer: the lengths, cache rows and block ids on the device are
// clamped by the kernel instead.
#include <cstdint>
#include <cstdio>
#include <string>

#include "../kernels/append_kv.h"
#include "forge_flash/flash_api.h"
#include "view_checks.h"

namespace forge_flash {

// flash_api.cpp's: the thread's message for ff_last_error().
void set_last_error(const std::string& message);

namespace {

View rows_view(const char* name, const ff_tensor& t, int64_t batch, int64_t rows, int64_t heads, int head_dim) {
  return {name, t.data, 2, 4, {batch, rows, heads, head_dim}, {t.batch_stride, t.row_stride, t.head_stride, 1}};
}

View index_view(const char* name, const int32_t* data, int64_t count) {
  return {name, data, 4, 1, {count, 1, 1, 1}, {1, 0, 0, 0}};
}

bool valid_table_dtype(ff_merge_dtype d) {
  return d == FF_MERGE_FLOAT16 || d == FF_MERGE_BFLOAT16 || d == FF_MERGE_FLOAT32;
}

Check check_sizes(const ff_append_kv_args& a) {
  if (a.batch_size < 0 || a.seqlen_new < 0 || a.seqlen_q < 0)
    return fail("batch_size (%d), seqlen_new (%d) and seqlen_q (%d) must be >= 0", a.batch_size, a.seqlen_new,
                a.seqlen_q);
  if (a.num_heads_k < 1) return fail("num_heads_k must be >= 1, got %d", a.num_heads_k);
  if (a.head_dim < 1 || a.head_dim > FF_MAX_HEAD_DIM)
    return fail("head_dim must be in [1, %d], got %d", FF_MAX_HEAD_DIM, a.head_dim);
  if (a.dtype != FF_DTYPE_FLOAT16 && a.dtype != FF_DTYPE_BFLOAT16)
    return fail("dtype must be FF_DTYPE_FLOAT16 or FF_DTYPE_BFLOAT16, got %d", static_cast<int>(a.dtype));
  if (a.cache_batch < 1 || a.cache_seqlen < 1)
    return fail("cache_batch (%d) and cache_seqlen (%d) must be >= 1 (paged: num_blocks and page_size)", a.cache_batch,
                a.cache_seqlen);
  if (a.block_table != nullptr) {
    if (a.max_blocks < 1 || a.block_table_stride < a.max_blocks)
      return fail("a block_table needs max_blocks (%d) >= 1 and block_table_stride (%lld) >= max_blocks", a.max_blocks,
                  static_cast<long long>(a.block_table_stride));
    if (a.cache_batch_idx != nullptr)  // the table already maps each sequence to its pages
      return fail("cache_batch_idx does not combine with a block_table (select the table's rows instead)");
  } else if (a.cache_batch_idx == nullptr && a.cache_batch < a.batch_size) {
    return fail("cache_batch (%d) must be >= batch_size (%d) without cache_batch_idx (sequence b writes row b)",
                a.cache_batch, a.batch_size);
  }
  const bool rotary = a.rotary_cos.data != nullptr || a.rotary_sin.data != nullptr;
  if (rotary) {
    if (a.rotary_cos.data == nullptr || a.rotary_sin.data == nullptr)
      return fail("rotary_cos and rotary_sin go together (one of them is NULL)");
    if (!valid_table_dtype(a.rotary_dtype))
      return fail("rotary_dtype must be float16, bfloat16 or float32 (an ff_merge_dtype), got %d",
                  static_cast<int>(a.rotary_dtype));
    if (a.rotary_dim < 2 || a.rotary_dim > a.head_dim || a.rotary_dim % 2 != 0)
      return fail("rotary_dim must be even and in [2, head_dim = %d], got %d", a.head_dim, a.rotary_dim);
    if (a.seqlen_ro < 1) return fail("seqlen_ro must be >= 1 with rotary tables, got %d", a.seqlen_ro);
  }
  if (a.q.data != nullptr || a.q_out.data != nullptr) {
    if (a.q.data == nullptr || a.q_out.data == nullptr) return fail("q and q_out go together (one of them is NULL)");
    if (!rotary) return fail("q is rotated into q_out: it needs rotary_cos and rotary_sin");
    if (a.num_heads < 1) return fail("num_heads must be >= 1 with q, got %d", a.num_heads);
  }
  if (append_kv_threads(a) > INT32_MAX)
    return fail("batch_size * seqlen * heads * head_dim is too large for one launch (%lld threads)",
                static_cast<long long>(append_kv_threads(a)));
  return {};
}

}  // namespace

// Every argument of ff_append_kv (also checked by flash_api.cpp's fused decode step).
Check check_append(const ff_append_kv_args* args) {
  if (args == nullptr) return fail("args is NULL");
  const ff_append_kv_args& a = *args;
  Check c;
  if ((c = check_sizes(a)).failed()) return c;
  if (append_kv_threads(a) == 0) return {};  // nothing to read or write

  const View cache_seqlens = index_view("cache_seqlens", a.cache_seqlens, a.batch_size);
  if ((c = check_view(cache_seqlens)).failed()) return c;
  const View seqlens_out = index_view("seqlens_out", a.seqlens_out, a.batch_size);
  if (a.seqlens_out != nullptr) {
    if ((c = check_view(seqlens_out)).failed()) return c;
    if (bytes_overlap(seqlens_out, cache_seqlens)) return fail("seqlens_out must not overlap cache_seqlens");
  }
  if (a.cache_batch_idx != nullptr &&
      (c = check_view(index_view("cache_batch_idx", a.cache_batch_idx, a.batch_size))).failed())
    return c;
  if (a.block_table != nullptr) {
    const View table = {
        "block_table", a.block_table, 4, 2, {a.batch_size, a.max_blocks, 1, 1}, {a.block_table_stride, 1, 0, 0}};
    if ((c = check_view(table)).failed()) return c;
  }
  if (a.rotary_cos.data != nullptr) {
    const int64_t element = a.rotary_dtype == FF_MERGE_FLOAT32 ? 4 : 2;
    const ff_rotary_table* tables[] = {&a.rotary_cos, &a.rotary_sin};
    const char* names[] = {"rotary_cos", "rotary_sin"};
    for (int i = 0; i < 2; ++i) {
      const View table = {names[i],
                          tables[i]->data,
                          element,
                          2,
                          {a.seqlen_ro, a.rotary_dim / 2, 1, 1},
                          {tables[i]->row_stride, tables[i]->col_stride, 0, 0}};
      if ((c = check_view(table)).failed()) return c;
    }
  }

  const View k_cache = rows_view("k_cache", a.k_cache, a.cache_batch, a.cache_seqlen, a.num_heads_k, a.head_dim);
  const View v_cache = rows_view("v_cache", a.v_cache, a.cache_batch, a.cache_seqlen, a.num_heads_k, a.head_dim);
  const View k = rows_view("k", a.k, a.batch_size, a.seqlen_new, a.num_heads_k, a.head_dim);
  const View v = rows_view("v", a.v, a.batch_size, a.seqlen_new, a.num_heads_k, a.head_dim);
  const View q = rows_view("q", a.q, a.batch_size, a.seqlen_q, a.num_heads, a.head_dim);
  const View q_out = rows_view("q_out", a.q_out, a.batch_size, a.seqlen_q, a.num_heads, a.head_dim);
  const bool writes_kv = static_cast<int64_t>(a.batch_size) * a.seqlen_new > 0;
  const bool writes_q = append_rotates_q(a) && static_cast<int64_t>(a.batch_size) * a.seqlen_q > 0;
  if (writes_kv) {
    for (const View* view : {&k, &v, &k_cache, &v_cache})
      if ((c = check_view(*view)).failed()) return c;
    for (const View* cache : {&k_cache, &v_cache}) {
      if ((c = check_no_self_overlap(*cache)).failed()) return c;
      for (const View* source : {&k, &v})
        if (bytes_overlap(*source, *cache)) return fail("%s must not overlap %s", source->name, cache->name);
    }
  }
  if (writes_q) {
    if ((c = check_view(q)).failed() || (c = check_view(q_out)).failed()) return c;
    if ((c = check_no_self_overlap(q_out)).failed()) return c;
    for (const View* other : {&q, &k, &v, &k_cache, &v_cache})
      if ((other == &q || writes_kv) && bytes_overlap(q_out, *other))
        return fail("q_out must not overlap %s", other->name);
  }
  return {};
}

}  // namespace forge_flash

extern "C" ff_status ff_append_kv(const ff_append_kv_args* args, cudaStream_t stream) {
  using namespace forge_flash;
  Check c = check_append(args);
  if (!c.failed() && append_kv_threads(*args) > 0) {
    const cudaError_t err = launch_append_kv(*args, stream);
    if (err == cudaErrorNoKernelImageForDevice || err == cudaErrorInvalidDeviceFunction ||
        err == cudaErrorUnsupportedPtxVersion) {
      c = {FF_ERROR_UNSUPPORTED,
           std::string("the append kernel cannot run on this device: ") + cudaGetErrorString(err)};
    } else if (err != cudaSuccess) {
      c = {FF_ERROR_CUDA, std::string("append kernel launch failed: ") + cudaGetErrorString(err)};
    }
  }
  set_last_error(c.message);
  return c.status;
}
