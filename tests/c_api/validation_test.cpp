// Host-only test of the C API's argument checks (csrc/api/flash_api.cpp), built without the
// kernels: plan_fwd/launch_fwd are replaced by stubs that record whether they were reached.
// Every invalid call must return FF_ERROR_INVALID_ARGUMENT with a message naming the
// argument, and must never reach the kernels. Run by tests/c_api/test_c_api_validation.py.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "../../csrc/kernels/append_kv.h"
#include "../../csrc/kernels/dispatch.h"
#include "case_runner.h"
#include "extremes.h"
#include "forge_flash/flash_api.h"

namespace forge_flash {
static int g_plans = 0, g_launches = 0;
static size_t g_workspace_needed = 0;
static bool g_decode = true;  // whether the stub plan runs the decode kernel (fused appends)
int routed_head_dim(int head_dim) { return head_dim <= 256 ? (head_dim + 31) / 32 * 32 : 0; }
// The stub plan's early-loading instances: dense K/V with plain scores, and (PagedKV) plain
// scores over power-of-two pages of at least 16 keys.
bool decode_loads_cached_keys_early(const FwdParams& p, DType) {
  return !p.features || (!p.score_mods && p.block_table != nullptr && p.page_shift >= 4);
}
static bool g_pushes_wave = false;  // what the stub says of the decode grid (append_pushes_decode_wave)
static int64_t g_append_ctas = -1;  // the append CTAs it was asked about
bool append_pushes_decode_wave(const FwdPlan&, int64_t append_ctas) {
  g_append_ctas = append_ctas;
  return g_pushes_wave;
}
const char* plan_fwd(FwdParams& p, DType, FwdPlan* plan, cudaError_t* err) {
  ++g_plans;
  *err = cudaSuccess;
  p.num_splits = 1;
  *plan = FwdPlan{};
  plan->workspace_bytes = g_workspace_needed;
  plan->decode = g_decode;
  plan->kernel.block_n = 32;
  return nullptr;
}
FwdParams g_last_fwd{};  // what the last launch_fwd was given
cudaError_t launch_fwd(FwdParams& p, DType, const FwdPlan&, void*, cudaStream_t) {
  ++g_launches;
  g_last_fwd = p;
  return cudaSuccess;
}
cudaError_t launch_append_kv(const ff_append_kv_args&, cudaStream_t) {  // append_api.cpp's, not called here
  ++g_launches;
  return cudaSuccess;
}
}  // namespace forge_flash

namespace {

alignas(256) unsigned char g_buffer[1 << 16];
void* at(size_t offset) { return g_buffer + offset; }

ff_fwd_args valid_fwd() {  // q/out (2, 64, 4, 64), k/v (2, 32, 2, 64), contiguous
  ff_fwd_args a{};
  a.q = {at(0), 64 * 4 * 64, 4 * 64, 64};
  a.k = {at(1024), 32 * 2 * 64, 2 * 64, 64};
  a.v = {at(2048), 32 * 2 * 64, 2 * 64, 64};
  a.out = {at(4096), 64 * 4 * 64, 4 * 64, 64};
  a.batch_size = 2, a.seqlen_q = 64, a.seqlen_k = 32;
  a.num_heads = 4, a.num_heads_k = 2, a.head_dim = 64;
  a.softmax_scale = 0.125f, a.dtype = FF_DTYPE_BFLOAT16;
  return a;
}

ff_varlen_fwd_args valid_varlen() {
  ff_varlen_fwd_args a{};
  a.q = {at(0), 0, 4 * 64, 64};
  a.k = {at(1024), 0, 2 * 64, 64};
  a.v = {at(2048), 0, 2 * 64, 64};
  a.out = {at(4096), 0, 4 * 64, 64};
  a.cu_seqlens_q = reinterpret_cast<const int32_t*>(at(8192));
  a.cu_seqlens_k = reinterpret_cast<const int32_t*>(at(8256));
  a.batch_size = 2, a.max_seqlen_q = 10, a.max_seqlen_k = 20, a.total_q = 15, a.total_k = 30;
  a.num_heads = 4, a.num_heads_k = 2, a.head_dim = 64;
  a.softmax_scale = 0.125f, a.dtype = FF_DTYPE_FLOAT16;
  return a;
}

// A decode step (one query token) over valid_fwd's k/v as caches of 32 keys, with one new
// key per sequence: the attention and the append of ff_attn_fwd_append.
ff_fwd_args decode_fwd() {
  ff_fwd_args a = valid_fwd();
  a.seqlen_q = 1;
  a.seqused_k = reinterpret_cast<const int32_t*>(at(8192));
  return a;
}
ff_append_kv_args append_for(const ff_fwd_args& a) {
  ff_append_kv_args b{};
  b.k = {at(40960), 2 * 64, 2 * 64, 64};
  b.v = {at(43008), 2 * 64, 2 * 64, 64};
  b.k_cache = a.k, b.v_cache = a.v;
  b.cache_seqlens = a.seqused_k;
  b.cache_batch = 2, b.cache_seqlen = 32;
  b.batch_size = 2, b.seqlen_new = 1, b.seqlen_q = 1, b.num_heads = 4, b.num_heads_k = 2, b.head_dim = 64;
  b.dtype = a.dtype;
  return b;
}

ff_status fwd(std::function<void(ff_fwd_args&)> edit) {
  ff_fwd_args a = valid_fwd();
  edit(a);
  size_t bytes = 0;
  return ff_attn_fwd(&a, nullptr, &bytes, nullptr);
}
void with_rotary(ff_fwd_args&, ff_append_kv_args& b) {
  b.rotary_cos = {at(47104), 32, 1}, b.rotary_sin = {at(49152), 32, 1};
  b.rotary_dim = 64, b.seqlen_ro = 8, b.rotary_dtype = FF_MERGE_BFLOAT16;
}
// Rotary over valid_fwd's k/v read as paged caches of `page_size` keys (32 keys a sequence).
std::function<void(ff_fwd_args&, ff_append_kv_args&)> paged_rotary(int page_size) {
  return [page_size](ff_fwd_args& a, ff_append_kv_args& b) {
    with_rotary(a, b);
    const int columns = 32 / page_size;
    a.options.block_table = reinterpret_cast<const int32_t*>(at(8448));
    a.options.page_size = page_size, a.options.num_blocks = 2 * columns, a.options.max_blocks = columns;
    a.options.block_table_stride = columns;
    a.k.batch_stride = a.v.batch_stride = page_size * 2 * 64;
    b.k_cache = a.k, b.v_cache = a.v;
    b.block_table = a.options.block_table, b.block_table_stride = columns, b.max_blocks = columns;
    b.cache_batch = 2 * columns, b.cache_seqlen = page_size;
  };
}
ff_status fused(std::function<void(ff_fwd_args&, ff_append_kv_args&)> edit, bool decode = true) {
  ff_fwd_args a = decode_fwd();
  ff_append_kv_args b = append_for(a);
  edit(a, b);
  size_t bytes = 0;
  forge_flash::g_decode = decode;
  const ff_status status = ff_attn_fwd_append(&a, &b, nullptr, &bytes, nullptr);
  forge_flash::g_decode = true;
  return status;
}
ff_status varlen(std::function<void(ff_varlen_fwd_args&)> edit) {
  ff_varlen_fwd_args a = valid_varlen();
  edit(a);
  size_t bytes = 0;
  return ff_attn_varlen_fwd(&a, nullptr, &bytes, nullptr);
}

// The fields of the attention calls for sweep_extremes (extremes.h); the optional pointers
// that are NULL in the valid calls point into the buffer's last kilobytes when set.
#define FF_OPTION_FIELDS(Args)                                                                                   \
  FF_INT_FIELD(Args, options.has_window), FF_INT_FIELD(Args, options.window_left),                               \
      FF_INT_FIELD(Args, options.window_right), FF_FLOAT_FIELD(Args, options.softcap),                           \
      FF_POINTER_FIELD(Args, options.alibi_slopes, at(63488)), FF_INT64_FIELD(Args, options.alibi_batch_stride), \
      FF_POINTER_FIELD(Args, options.sinks, at(63744)), FF_POINTER_FIELD(Args, options.block_table, at(64000)),  \
      FF_INT64_FIELD(Args, options.block_table_stride), FF_INT_FIELD(Args, options.max_blocks),                  \
      FF_INT_FIELD(Args, options.page_size), FF_INT_FIELD(Args, options.num_blocks),                             \
      FF_POINTER_FIELD(Args, options.kv_batch_idx, at(64256)), FF_INT_FIELD(Args, options.kv_batch_rows),        \
      FF_POINTER_FIELD(Args, options.k_start, at(64512)), FF_INT_FIELD(Args, options.programmatic_launch),       \
      FF_INT_FIELD(Args, options.num_splits)
// The fields both attention calls have (their tensors, heads, scale, mask and dtype).
#define FF_ATTENTION_FIELDS(Args)                                                                                   \
  FF_TENSOR_FIELDS(Args, q, at(0)), FF_TENSOR_FIELDS(Args, k, at(0)), FF_TENSOR_FIELDS(Args, v, at(0)),             \
      FF_TENSOR_FIELDS(Args, out, at(0)), FF_POINTER_FIELD(Args, softmax_lse, at(62464)),                           \
      FF_POINTER_FIELD(Args, seqused_k, at(62976)), FF_INT_FIELD(Args, num_heads), FF_INT_FIELD(Args, num_heads_k), \
      FF_INT_FIELD(Args, head_dim), FF_FLOAT_FIELD(Args, softmax_scale), FF_INT_FIELD(Args, is_causal),             \
      FF_INT_FIELD(Args, dtype), FF_OPTION_FIELDS(Args)
std::vector<Field<ff_fwd_args>> fwd_fields() {
  using A = ff_fwd_args;
  return {FF_ATTENTION_FIELDS(A), FF_INT_FIELD(A, batch_size), FF_INT_FIELD(A, seqlen_q), FF_INT_FIELD(A, seqlen_k)};
}
std::vector<Field<ff_varlen_fwd_args>> varlen_fields() {
  using A = ff_varlen_fwd_args;
  return {FF_ATTENTION_FIELDS(A),
          FF_POINTER_FIELD(A, cu_seqlens_q, at(0)),
          FF_POINTER_FIELD(A, cu_seqlens_k, at(0)),
          FF_INT_FIELD(A, batch_size),
          FF_INT_FIELD(A, max_seqlen_q),
          FF_INT_FIELD(A, max_seqlen_k),
          FF_INT_FIELD(A, total_q),
          FF_INT_FIELD(A, total_k)};
}
// A fused decode step: the attention's and the append's arguments together.
struct FusedStep {
  ff_fwd_args a;
  ff_append_kv_args b;
};
std::vector<Field<FusedStep>> fused_fields() {
  using F = FusedStep;
  return {FF_TENSOR_FIELDS(F, a.q, at(0)),
          FF_TENSOR_FIELDS(F, a.k, at(0)),
          FF_POINTER_FIELD(F, a.seqused_k, at(0)),
          FF_INT_FIELD(F, a.batch_size),
          FF_INT_FIELD(F, a.seqlen_q),
          FF_INT_FIELD(F, a.seqlen_k),
          FF_INT_FIELD(F, a.num_heads),
          FF_INT_FIELD(F, a.num_heads_k),
          FF_INT_FIELD(F, a.head_dim),
          FF_INT_FIELD(F, a.options.page_size),
          FF_POINTER_FIELD(F, a.options.block_table, at(64000)),
          FF_TENSOR_FIELDS(F, b.k, at(0)),
          FF_TENSOR_FIELDS(F, b.v, at(0)),
          FF_TENSOR_FIELDS(F, b.k_cache, at(0)),
          FF_TENSOR_FIELDS(F, b.q, at(0)),
          FF_TENSOR_FIELDS(F, b.q_out, at(0)),
          FF_POINTER_FIELD(F, b.cache_seqlens, at(0)),
          FF_POINTER_FIELD(F, b.seqlens_out, at(62976)),
          FF_POINTER_FIELD(F, b.cache_batch_idx, at(64256)),
          FF_POINTER_FIELD(F, b.block_table, at(64000)),
          FF_INT64_FIELD(F, b.block_table_stride),
          FF_INT_FIELD(F, b.max_blocks),
          FF_INT_FIELD(F, b.cache_batch),
          FF_INT_FIELD(F, b.cache_seqlen),
          FF_POINTER_FIELD(F, b.rotary_cos.data, at(47104)),
          FF_INT64_FIELD(F, b.rotary_cos.row_stride),
          FF_INT_FIELD(F, b.rotary_dtype),
          FF_INT_FIELD(F, b.rotary_dim),
          FF_INT_FIELD(F, b.seqlen_ro),
          FF_INT_FIELD(F, b.rotary_interleaved),
          FF_INT_FIELD(F, b.query_per_token),
          FF_INT_FIELD(F, b.batch_size),
          FF_INT_FIELD(F, b.seqlen_new),
          FF_INT_FIELD(F, b.seqlen_q),
          FF_INT_FIELD(F, b.num_heads),
          FF_INT_FIELD(F, b.num_heads_k),
          FF_INT_FIELD(F, b.head_dim),
          FF_INT_FIELD(F, b.dtype)};
}

}  // namespace

int main() {
  using forge_flash::g_launches;
  const ff_status bad = FF_ERROR_INVALID_ARGUMENT;
  std::vector<Case> cases = {
      {"valid fwd", [] { return fwd([](ff_fwd_args&) {}); }, FF_OK, ""},
      {"valid varlen", [] { return varlen([](ff_varlen_fwd_args&) {}); }, FF_OK, ""},
      // ff_attn_fwd_append: both calls checked, and checked to describe one decode step.
      {"fused step", [] { return fused([](ff_fwd_args&, ff_append_kv_args&) {}); }, FF_OK, ""},
      {"fused step without append",
       [] {
         ff_fwd_args a = decode_fwd();
         size_t b = 0;
         return ff_attn_fwd_append(&a, nullptr, nullptr, &b, nullptr);
       },
       bad, "append is NULL"},
      {"fused step, invalid append",
       [] { return fused([](ff_fwd_args&, ff_append_kv_args& b) { b.seqlen_new = -1; }); }, bad, "append: batch_size"},
      {"fused step, other caches",
       [] { return fused([](ff_fwd_args&, ff_append_kv_args& b) { b.k_cache.data = at(3072); }); }, bad, "k_cache"},
      {"fused step, other lengths",
       [] { return fused([](ff_fwd_args& a, ff_append_kv_args&) { a.seqused_k = nullptr; }); }, bad,
       "seqused_k must be append.cache_seqlens"},
      {"fused step, other heads", [] { return fused([](ff_fwd_args&, ff_append_kv_args& b) { b.num_heads = 2; }); },
       bad, "num_heads"},
      {"fused step, q_out given",
       [] {
         return fused([](ff_fwd_args&, ff_append_kv_args& b) {
           b.q = {at(0), 4 * 64, 4 * 64, 64};
           b.q_out = {at(45056), 4 * 64, 4 * 64, 64};
           b.rotary_cos = {at(47104), 32, 1}, b.rotary_sin = {at(49152), 32, 1};
           b.rotary_dim = 64, b.seqlen_ro = 8;
         });
       },
       bad, "q_out"},
      {"fused step, other block table",
       [] {
         return fused([](ff_fwd_args&, ff_append_kv_args& b) {
           b.cache_batch_idx = reinterpret_cast<const int32_t*>(at(8448));
         });
       },
       bad, "cache_batch_idx"},
      {"fused step, not the decode kernel", [] { return fused([](ff_fwd_args&, ff_append_kv_args&) {}, false); },
       FF_ERROR_UNSUPPORTED, "does not fuse"},
      {"fused step, too many new keys",
       [] {
         return fused([](ff_fwd_args&, ff_append_kv_args& b) {
           b.seqlen_new = 33;
           b.k.row_stride = b.v.row_stride = 2 * 64;
           b.k.batch_stride = b.v.batch_stride = 0;
         });
       },
       FF_ERROR_UNSUPPORTED, "does not fuse"},
      {"fused step, left padding",
       [] {
         return fused([](ff_fwd_args& a, ff_append_kv_args&) {
           a.options.k_start = reinterpret_cast<const int32_t*>(at(8320));
         });
       },
       FF_ERROR_UNSUPPORTED, "left padding"},
      // Rotary over a contiguous cache: two launches inside the call, q rotated into the
      // workspace (the protocol below); not where the attention leaves the decode kernel.
      {"fused step, rotary over a contiguous cache, no workspace", [] { return fused(with_rotary); },
       FF_WORKSPACE_REQUIRED, "rotated q"},
      {"fused step, rotary over a contiguous cache, not the decode kernel", [] { return fused(with_rotary, false); },
       FF_ERROR_UNSUPPORTED, "does not fuse"},
      // Rotary over pages the whole-page instance takes: the same two launches; other pages fuse.
      {"fused step, rotary over whole pages, no workspace", [] { return fused(paged_rotary(16)); },
       FF_WORKSPACE_REQUIRED, "rotated q"},
      {"fused step, rotary over pages of 8", [] { return fused(paged_rotary(8)); }, FF_OK, ""},
      {"fused step, unaligned new keys",
       [] { return fused([](ff_fwd_args&, ff_append_kv_args& b) { b.k.data = at(40962); }); }, FF_ERROR_UNSUPPORTED,
       "16-byte"},
      {"null args",
       [] {
         size_t b = 0;
         return ff_attn_fwd(nullptr, nullptr, &b, nullptr);
       },
       bad, "args"},
      {"null workspace_bytes",
       [] {
         ff_fwd_args a = valid_fwd();
         return ff_attn_fwd(&a, nullptr, nullptr, nullptr);
       },
       bad, "workspace_bytes"},
      {"head_dim 12", [] { return fwd([](ff_fwd_args& a) { a.head_dim = 12; }); }, bad, "head_dim"},
      {"head_dim 264", [] { return fwd([](ff_fwd_args& a) { a.head_dim = 264; }); }, bad, "head_dim"},
      {"head_dim 0", [] { return fwd([](ff_fwd_args& a) { a.head_dim = 0; }); }, bad, "head_dim"},
      {"heads_k does not divide", [] { return fwd([](ff_fwd_args& a) { a.num_heads_k = 3; }); }, bad, "num_heads_k"},
      {"no heads", [] { return fwd([](ff_fwd_args& a) { a.num_heads = 0; }); }, bad, "num_heads"},
      {"negative batch", [] { return fwd([](ff_fwd_args& a) { a.batch_size = -1; }); }, bad, "batch_size"},
      {"negative seqlen_k", [] { return fwd([](ff_fwd_args& a) { a.seqlen_k = -3; }); }, bad, "seqlen_k"},
      // Any finite scale is a valid one (the variant kernels compute it); only non-finite ones fail.
      {"scale 0", [] { return fwd([](ff_fwd_args& a) { a.softmax_scale = 0.f; }); }, FF_OK, ""},
      {"scale -2", [] { return fwd([](ff_fwd_args& a) { a.softmax_scale = -2.f; }); }, FF_OK, ""},
      {"valid window and softcap",
       [] {
         return fwd([](ff_fwd_args& a) {
           a.options.has_window = 1, a.options.window_left = 8, a.options.window_right = -1;
           a.options.softcap = 30.f;
         });
       },
       FF_OK, ""},
      {"window edge -2",
       [] { return fwd([](ff_fwd_args& a) { a.options.has_window = 1, a.options.window_left = -2; }); }, bad, "window"},
      {"negative softcap", [] { return fwd([](ff_fwd_args& a) { a.options.softcap = -1.f; }); }, bad, "softcap"},
      {"nan softcap", [] { return fwd([](ff_fwd_args& a) { a.options.softcap = __builtin_nanf(""); }); }, bad,
       "softcap"},
      {"negative num_splits", [] { return fwd([](ff_fwd_args& a) { a.options.num_splits = -1; }); }, bad, "num_splits"},
      {"num_splits 7", [] { return fwd([](ff_fwd_args& a) { a.options.num_splits = 7; }); }, FF_OK, ""},
      {"misaligned alibi_slopes",
       [] { return fwd([](ff_fwd_args& a) { a.options.alibi_slopes = reinterpret_cast<const float*>(at(2)); }); }, bad,
       "alibi_slopes"},
      {"misaligned sinks",
       [] { return fwd([](ff_fwd_args& a) { a.options.sinks = reinterpret_cast<const float*>(at(6)); }); }, bad,
       "sinks"},
      {"paged without a page size",
       [] {
         return fwd([](ff_fwd_args& a) {
           a.options.block_table = reinterpret_cast<const int32_t*>(at(8192));
           a.options.num_blocks = 4, a.options.max_blocks = 2, a.options.block_table_stride = 2;
         });
       },
       bad, "page_size"},
      {"paged seqlen_k beyond the table",
       [] {
         return fwd([](ff_fwd_args& a) {
           a.options.block_table = reinterpret_cast<const int32_t*>(at(8192));
           a.options.page_size = 8, a.options.num_blocks = 8, a.options.max_blocks = 2;
           a.options.block_table_stride = 2;  // 16 keys a row < seqlen_k 32
           a.k.batch_stride = a.v.batch_stride = 8 * 2 * 64;
         });
       },
       bad, "seqlen_k"},
      {"kv_batch_idx without rows",
       [] { return fwd([](ff_fwd_args& a) { a.options.kv_batch_idx = reinterpret_cast<const int32_t*>(at(8192)); }); },
       bad, "kv_batch_rows"},
      {"varlen k_start",
       [] {
         return varlen([](ff_varlen_fwd_args& a) { a.options.k_start = reinterpret_cast<const int32_t*>(at(8192)); });
       },
       bad, "k_start"},
      {"scale nan", [] { return fwd([](ff_fwd_args& a) { a.softmax_scale = __builtin_nanf(""); }); }, bad,
       "softmax_scale"},
      {"scale inf", [] { return fwd([](ff_fwd_args& a) { a.softmax_scale = __builtin_inff(); }); }, bad,
       "softmax_scale"},
      {"bad dtype", [] { return fwd([](ff_fwd_args& a) { a.dtype = static_cast<ff_dtype>(9); }); }, bad, "dtype"},
      {"null q", [] { return fwd([](ff_fwd_args& a) { a.q.data = nullptr; }); }, bad, "q.data"},
      {"null v", [] { return fwd([](ff_fwd_args& a) { a.v.data = nullptr; }); }, bad, "v.data"},
      {"misaligned k", [] { return fwd([](ff_fwd_args& a) { a.k.data = at(1026); }); }, bad,
       "k.data must be 16-byte aligned"},
      {"odd row stride", [] { return fwd([](ff_fwd_args& a) { a.q.row_stride = 260; }); }, bad, "q.row_stride"},
      {"negative head stride", [] { return fwd([](ff_fwd_args& a) { a.v.head_stride = -64; }); }, bad, "v.head_stride"},
      {"int64 overflow",
       [] {
         return fwd([](ff_fwd_args& a) {
           a.batch_size = 4;
           a.q.batch_stride = INT64_MAX / 2 / 8 * 8;
         });
       },
       bad, "overflow"},
      {"overlapping out rows", [] { return fwd([](ff_fwd_args& a) { a.out.row_stride = 0; }); }, bad, "overlap"},
      {"overlapping out heads", [] { return fwd([](ff_fwd_args& a) { a.out.head_stride = 8; }); }, bad, "overlap"},
      {"misaligned lse", [] { return fwd([](ff_fwd_args& a) { a.softmax_lse = reinterpret_cast<float*>(at(6)); }); },
       bad, "softmax_lse"},
      {"misaligned seqused_k",
       [] { return fwd([](ff_fwd_args& a) { a.seqused_k = reinterpret_cast<const int32_t*>(at(2)); }); }, bad,
       "seqused_k"},
      {"empty batch is fine",
       [] {
         return fwd([](ff_fwd_args& a) {
           a.batch_size = 0;
           a.q.data = nullptr;
         });
       },
       FF_OK, ""},
      {"no keys is fine",
       [] {
         return fwd([](ff_fwd_args& a) {
           a.seqlen_k = 0;
           a.k.data = a.v.data = nullptr;
         });
       },
       FF_OK, ""},
      {"varlen null cu_seqlens_q", [] { return varlen([](ff_varlen_fwd_args& a) { a.cu_seqlens_q = nullptr; }); }, bad,
       "cu_seqlens_q"},
      {"varlen misaligned cu_seqlens_k",
       [] {
         return varlen([](ff_varlen_fwd_args& a) { a.cu_seqlens_k = reinterpret_cast<const int32_t*>(at(8194)); });
       },
       bad, "cu_seqlens_k"},
      {"varlen negative total_k", [] { return varlen([](ff_varlen_fwd_args& a) { a.total_k = -1; }); }, bad, "total_k"},
      {"varlen bad out stride", [] { return varlen([](ff_varlen_fwd_args& a) { a.out.row_stride = 4; }); }, bad,
       "out.row_stride"},
      {"varlen overlapping out", [] { return varlen([](ff_varlen_fwd_args& a) { a.out.head_stride = 0; }); }, bad,
       "overlap"},
  };
  int passed = 0, failed = 0;
  run_cases(cases, g_launches, false, passed, failed);

  // Workspace protocol: too little -> FF_WORKSPACE_REQUIRED with the size, nothing launched;
  // enough (and 256-byte aligned) -> launched.
  forge_flash::g_workspace_needed = 4096;
  ff_fwd_args a = valid_fwd();
  size_t bytes = 0;
  const int launches_before = g_launches;
  bool ok = ff_attn_fwd(&a, nullptr, &bytes, nullptr) == FF_WORKSPACE_REQUIRED && bytes == 4096 &&
            g_launches == launches_before;
  bytes = 4096;
  ok = ok && ff_attn_fwd(&a, at(16), &bytes, nullptr) == bad;  // misaligned workspace
  bytes = 4096;
  ok = ok && ff_attn_fwd(&a, at(256), &bytes, nullptr) == FF_OK && g_launches == launches_before + 1;
  std::printf("%s workspace protocol\n", ok ? "PASS" : "FAIL");
  ok ? ++passed : ++failed;

  // The two-launch step (rotary over a contiguous cache): the rotated q (2 x 1 x 4 x 64
  // bf16, in 256-byte units) before the split partials; with it, the append, then the attention.
  ff_fwd_args step = decode_fwd();
  ff_append_kv_args append = append_for(step);
  with_rotary(step, append);
  bytes = 0;
  const int step_launches = g_launches;
  ok = ff_attn_fwd_append(&step, &append, nullptr, &bytes, nullptr) == FF_WORKSPACE_REQUIRED && bytes == 1024 + 4096 &&
       g_launches == step_launches;
  ok = ok && ff_attn_fwd_append(&step, &append, at(256), &bytes, nullptr) == FF_OK && g_launches == step_launches + 2;
  std::printf("%s workspace protocol of the two-launch step\n", ok ? "PASS" : "FAIL");
  ok ? ++passed : ++failed;

  // The q a two-launch step's attention reads: with rotary tables the append kernel's rotated
  // copy at the workspace's start (q_from_append: the decode kernel waits for that kernel before
  // loading it), without them the caller's (loaded before the wait).
  const forge_flash::FwdParams& last = forge_flash::g_last_fwd;
  ok = last.new_keys_in_cache && last.q_from_append && last.q == at(256);
  ff_fwd_args plain_step = decode_fwd();
  ff_append_kv_args plain_append = append_for(plain_step);
  bytes = 4096;
  ok = ok && ff_attn_fwd_append(&plain_step, &plain_append, at(256), &bytes, nullptr) == FF_OK &&
       last.new_keys_in_cache && !last.q_from_append && last.q == plain_step.q.data;
  std::printf("%s the q a two-launch step's attention reads\n", ok ? "PASS" : "FAIL");
  ok ? ++passed : ++failed;

  // Where the append kernel's CTAs would push part of a one-wave decode grid into a second wave,
  // one new token over a contiguous cache fuses into the decode kernel's launch (one launch, the
  // append's k/v in FwdParams), rotary or not; pages, and two new tokens, keep the two launches.
  // The append CTAs asked about are those the two-launch step would launch: k/v rows, and q's
  // rows where there are rotary tables.
  forge_flash::g_pushes_wave = true;
  const auto launches_of = [&](ff_fwd_args s, ff_append_kv_args b) {
    const int before = g_launches;
    size_t have = 8192;
    const bool done = ff_attn_fwd_append(&s, &b, at(256), &have, nullptr) == FF_OK;
    return done ? g_launches - before : -1;
  };
  ff_fwd_args full = decode_fwd();
  ff_append_kv_args full_append = append_for(full);
  ok = launches_of(full, full_append) == 1 && last.seqlen_new == 1 && !last.new_keys_in_cache &&
       last.k_new == full_append.k.data &&
       forge_flash::g_append_ctas == forge_flash::append_kv_ctas(full_append, false);
  ff_fwd_args full_rotary = decode_fwd();
  ff_append_kv_args full_rotary_append = append_for(full_rotary);
  with_rotary(full_rotary, full_rotary_append);
  ok = ok && launches_of(full_rotary, full_rotary_append) == 1 && !last.new_keys_in_cache && last.rotary.half > 0 &&
       last.q == full_rotary.q.data &&
       forge_flash::g_append_ctas == forge_flash::append_kv_ctas(full_rotary_append, true);
  ff_fwd_args full_paged = decode_fwd();
  ff_append_kv_args full_paged_append = append_for(full_paged);
  paged_rotary(16)(full_paged, full_paged_append);
  ok = ok && launches_of(full_paged, full_paged_append) == 2 && last.new_keys_in_cache;
  ff_fwd_args two_tokens = decode_fwd();
  two_tokens.seqlen_q = 2;
  two_tokens.seqlen_k = 32;
  ff_append_kv_args two_tokens_append = append_for(two_tokens);
  two_tokens_append.seqlen_new = 2, two_tokens_append.seqlen_q = 2;
  ok = ok && launches_of(two_tokens, two_tokens_append) == 2 && last.new_keys_in_cache;
  forge_flash::g_pushes_wave = false;
  ok = ok && launches_of(full, full_append) == 2 && last.new_keys_in_cache;  // a grid the append leaves whole
  std::printf(
      "%s one new token over a contiguous cache fuses where the append would push the decode into a second wave\n",
      ok ? "PASS" : "FAIL");
  ok ? ++passed : ++failed;

  // The rule's arithmetic and its inputs, at a step of batch 64 over 8 KV heads of 128 (32 query
  // heads) on 132 SMs of four 3-warp decode CTAs each (528 slots): the append kernel covers
  // 64 x 8 k/v rows of 16 units (8192 threads: 32 CTAs of 256), and with rotary 64 x 32 q rows
  // too (40960: 160 CTAs). 512 decode CTAs leave 16 slots: fewer than either, so both fuse;
  // batch 48 (384 CTAs, 144 free) leaves room for its 24 or 120; batch 96 (768) takes two
  // waves anyway.
  ff_append_kv_args b64{};
  b64.batch_size = 64, b64.seqlen_new = 1, b64.seqlen_q = 1, b64.num_heads = 32, b64.num_heads_k = 8;
  b64.head_dim = 128;
  ff_append_kv_args b48 = b64;
  b48.batch_size = 48;
  using forge_flash::append_kv_ctas;
  using forge_flash::append_pushes_wave;
  ok = append_kv_ctas(b64, false) == 32 && append_kv_ctas(b64, true) == 160 && append_kv_ctas(b48, false) == 24 &&
       append_kv_ctas(b48, true) == 120;
  ok = ok && append_pushes_wave(512, 528, 32) && append_pushes_wave(512, 528, 160) &&
       !append_pushes_wave(384, 528, 24) && !append_pushes_wave(384, 528, 120) && !append_pushes_wave(768, 528, 160) &&
       !append_pushes_wave(512, 528, 16) && append_pushes_wave(528, 528, 1);
  std::printf("%s the append CTAs a step launches, and when they push a one-wave decode grid into a second\n",
              ok ? "PASS" : "FAIL");
  ok ? ++passed : ++failed;

  // Extreme values through every field (extremes.h), with the stubs as for the valid calls.
  forge_flash::g_workspace_needed = 0, forge_flash::g_decode = true, forge_flash::g_pushes_wave = false;

  // A window edge as wide as the keys (left) or the queries (right) masks nothing: the kernels
  // get no window (-1), so no edge near INT_MAX enters their int sums of positions and edges.
  const auto window_of = [&](int left, int right, int causal) {
    ff_fwd_args w = valid_fwd();  // 64 queries over 32 keys
    w.options.has_window = 1, w.options.window_left = left, w.options.window_right = right, w.is_causal = causal;
    size_t none = 0;
    const bool done = ff_attn_fwd(&w, nullptr, &none, nullptr) == FF_OK;
    const forge_flash::FwdParams& got = forge_flash::g_last_fwd;
    return done ? std::make_pair(got.window_left, got.window_right) : std::make_pair(-2, -2);
  };
  ok = window_of(INT32_MAX, INT32_MAX, 0) == std::make_pair(-1, -1) && !forge_flash::g_last_fwd.features;
  ok = ok && window_of(INT32_MAX, 5, 1) == std::make_pair(-1, 0) && !forge_flash::g_last_fwd.features;
  ok = ok && window_of(32, 64, 0) == std::make_pair(-1, -1) && window_of(31, 63, 0) == std::make_pair(31, 63) &&
       window_of(7, INT32_MAX, 1) == std::make_pair(7, 0);
  std::printf("%s window edges past the keys or queries are no edges\n", ok ? "PASS" : "FAIL");
  ok ? ++passed : ++failed;
  size_t workspace = 0;
  sweep_extremes<ff_fwd_args>(
      "ff_attn_fwd", valid_fwd(), fwd_fields(),
      [&](const ff_fwd_args& a) { return ff_attn_fwd(&a, nullptr, &workspace, nullptr); }, g_launches, true, passed,
      failed);
  sweep_extremes<ff_varlen_fwd_args>(
      "ff_attn_varlen_fwd", valid_varlen(), varlen_fields(),
      [&](const ff_varlen_fwd_args& a) { return ff_attn_varlen_fwd(&a, nullptr, &workspace, nullptr); }, g_launches,
      true, passed, failed);
  FusedStep fused_step{decode_fwd(), {}};
  fused_step.b = append_for(fused_step.a);
  sweep_extremes<FusedStep>(
      "ff_attn_fwd_append", fused_step, fused_fields(),
      [&](const FusedStep& f) { return ff_attn_fwd_append(&f.a, &f.b, nullptr, &workspace, nullptr); }, g_launches,
      true, passed, failed);

  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
