// Host-only test of ff_append_kv's argument checks (csrc/api/append_api.cpp), built without the
// kernels: launch_append_kv (and flash_api.cpp's kernel entry points, linked for
// ff_last_error) are stubs that record whether they were reached. Every invalid call must
// return FF_ERROR_INVALID_ARGUMENT with a message naming the argument and launch nothing.
// Run by tests/c_api/test_c_api_validation.py.
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "../../csrc/kernels/append_kv.h"
#include "../../csrc/kernels/dispatch.h"
#include "case_runner.h"
#include "extremes.h"
#include "forge_flash/flash_api.h"

namespace forge_flash {
static int g_launches = 0;
int routed_head_dim(int head_dim) { return head_dim; }
bool decode_loads_cached_keys_early(const FwdParams&, DType) { return false; }
bool append_pushes_decode_wave(const FwdPlan&, int64_t) { return false; }
const char* plan_fwd(FwdParams&, DType, FwdPlan*, cudaError_t*) { return "not in this test"; }
cudaError_t launch_fwd(FwdParams&, DType, const FwdPlan&, void*, cudaStream_t) { return cudaSuccess; }
cudaError_t launch_append_kv(const ff_append_kv_args&, cudaStream_t) {
  ++g_launches;
  return cudaSuccess;
}
}  // namespace forge_flash

namespace {

alignas(256) unsigned char g_buffer[1 << 20];
void* at(size_t offset) { return g_buffer + offset; }
int32_t* ints_at(size_t offset) { return reinterpret_cast<int32_t*>(at(offset)); }

// batch 2, one new token, 2 KV heads and 4 query heads of 64, a contiguous cache of 2 rows of
// 16 keys, rotary_dim 32 over 16 positions (float32 tables), q rotated; all contiguous and apart.
constexpr size_t kKv = 2 * 1 * 2 * 64 * 2, kCache = 2 * 16 * 2 * 64 * 2, kQ = 2 * 1 * 4 * 64 * 2;
constexpr size_t kK = 0, kV = kK + kKv, kKCache = kV + kKv, kVCache = kKCache + kCache, kQIn = kVCache + kCache,
                 kQOut = kQIn + kQ, kCos = kQOut + kQ, kSin = kCos + 16 * 16 * 4, kInts = kSin + 16 * 16 * 4;

ff_append_kv_args valid() {
  ff_append_kv_args a{};
  a.batch_size = 2, a.seqlen_new = 1, a.seqlen_q = 1, a.num_heads = 4, a.num_heads_k = 2, a.head_dim = 64;
  a.k = {at(kK), 2 * 64, 2 * 64, 64};
  a.v = {at(kV), 2 * 64, 2 * 64, 64};
  a.k_cache = {at(kKCache), 16 * 2 * 64, 2 * 64, 64};
  a.v_cache = {at(kVCache), 16 * 2 * 64, 2 * 64, 64};
  a.q = {at(kQIn), 4 * 64, 4 * 64, 64};
  a.q_out = {at(kQOut), 4 * 64, 4 * 64, 64};
  a.cache_batch = 2, a.cache_seqlen = 16;
  a.cache_seqlens = ints_at(kInts);
  a.seqlens_out = ints_at(kInts + 64);
  a.rotary_cos = {at(kCos), 16, 1};
  a.rotary_sin = {at(kSin), 16, 1};
  a.rotary_dtype = FF_MERGE_FLOAT32;
  a.rotary_dim = 32, a.seqlen_ro = 16, a.rotary_interleaved = 1, a.query_per_token = 1;
  a.dtype = FF_DTYPE_BFLOAT16;
  return a;
}

ff_status append(std::function<void(ff_append_kv_args&)> edit) {
  ff_append_kv_args a = valid();
  edit(a);
  return ff_append_kv(&a, nullptr);
}

void make_paged(ff_append_kv_args& a) {  // 4 blocks of 8 keys, 2 per sequence
  a.cache_batch = 4, a.cache_seqlen = 8;
  a.k_cache = {at(kKCache), 8 * 2 * 64, 2 * 64, 64};
  a.v_cache = {at(kVCache), 8 * 2 * 64, 2 * 64, 64};
  a.block_table = ints_at(kInts + 128);
  a.block_table_stride = 2, a.max_blocks = 2;
}

std::vector<Field<ff_append_kv_args>> append_fields() {  // for sweep_extremes (extremes.h)
  using A = ff_append_kv_args;
  return {FF_TENSOR_FIELDS(A, k, at(0)),
          FF_TENSOR_FIELDS(A, v, at(0)),
          FF_TENSOR_FIELDS(A, k_cache, at(0)),
          FF_TENSOR_FIELDS(A, v_cache, at(0)),
          FF_TENSOR_FIELDS(A, q, at(0)),
          FF_TENSOR_FIELDS(A, q_out, at(0)),
          FF_POINTER_FIELD(A, cache_seqlens, at(0)),
          FF_POINTER_FIELD(A, seqlens_out, at(0)),
          FF_POINTER_FIELD(A, cache_batch_idx, ints_at(kInts + 128)),
          FF_POINTER_FIELD(A, block_table, ints_at(kInts + 192)),
          FF_INT64_FIELD(A, block_table_stride),
          FF_INT_FIELD(A, max_blocks),
          FF_INT_FIELD(A, cache_batch),
          FF_INT_FIELD(A, cache_seqlen),
          FF_POINTER_FIELD(A, rotary_cos.data, at(0)),
          FF_INT64_FIELD(A, rotary_cos.row_stride),
          FF_INT64_FIELD(A, rotary_cos.col_stride),
          FF_POINTER_FIELD(A, rotary_sin.data, at(0)),
          FF_INT_FIELD(A, rotary_dtype),
          FF_INT_FIELD(A, rotary_dim),
          FF_INT_FIELD(A, seqlen_ro),
          FF_INT_FIELD(A, rotary_interleaved),
          FF_INT_FIELD(A, query_per_token),
          FF_INT_FIELD(A, batch_size),
          FF_INT_FIELD(A, seqlen_new),
          FF_INT_FIELD(A, seqlen_q),
          FF_INT_FIELD(A, num_heads),
          FF_INT_FIELD(A, num_heads_k),
          FF_INT_FIELD(A, head_dim),
          FF_INT_FIELD(A, dtype),
          FF_INT_FIELD(A, programmatic_launch)};
}

}  // namespace

int main() {
  using forge_flash::g_launches;
  const ff_status bad = FF_ERROR_INVALID_ARGUMENT;
  using A = ff_append_kv_args&;
  std::vector<Case> cases = {
      {"valid", [] { return append([](A) {}); }, FF_OK, ""},
      {"valid paged", [] { return append(make_paged); }, FF_OK, ""},
      {"valid without rotary or q",
       [] {
         return append([](A a) {
           a.rotary_cos.data = a.rotary_sin.data = nullptr;
           a.q.data = a.q_out.data = nullptr;
         });
       },
       FF_OK, ""},
      {"valid with cache_batch_idx over more rows",
       [] {
         return append([](A a) {
           a.cache_batch_idx = ints_at(kInts + 256);
           a.cache_batch = 1;  // rows are picked by the index: any count >= 1
           a.k_cache.batch_stride = a.v_cache.batch_stride = 0;
         });
       },
       FF_OK, ""},
      {"valid unaligned strides (scalar path)",
       [] {
         return append([](A a) {
           a.head_dim = 36, a.rotary_dim = 36;
           a.k.head_stride = a.v.head_stride = 37;
           a.k.row_stride = a.k.batch_stride = a.v.row_stride = a.v.batch_stride = 2 * 37;
         });
       },
       FF_OK, ""},
      {"null args", [] { return ff_append_kv(nullptr, nullptr); }, bad, "args"},
      {"negative batch", [] { return append([](A a) { a.batch_size = -1; }); }, bad, "batch_size"},
      {"no kv heads", [] { return append([](A a) { a.num_heads_k = 0; }); }, bad, "num_heads_k"},
      {"head_dim 0", [] { return append([](A a) { a.head_dim = 0; }); }, bad, "head_dim"},
      {"head_dim 512", [] { return append([](A a) { a.head_dim = 512; }); }, bad, "head_dim"},
      {"bad dtype", [] { return append([](A a) { a.dtype = static_cast<ff_dtype>(2); }); }, bad, "dtype"},
      {"empty cache", [] { return append([](A a) { a.cache_seqlen = 0; }); }, bad, "cache_seqlen"},
      {"too few cache rows", [] { return append([](A a) { a.cache_batch = 1; }); }, bad, "cache_batch (1) must be"},
      {"paged without columns",
       [] {
         return append([](A a) {
           make_paged(a);
           a.max_blocks = 0;
         });
       },
       bad, "max_blocks"},
      {"paged short table stride",
       [] {
         return append([](A a) {
           make_paged(a);
           a.block_table_stride = 1;
         });
       },
       bad, "block_table_stride"},
      {"paged with cache_batch_idx",
       [] {
         return append([](A a) {
           make_paged(a);
           a.cache_batch_idx = ints_at(kInts + 256);
         });
       },
       bad, "cache_batch_idx"},
      {"cos without sin", [] { return append([](A a) { a.rotary_sin.data = nullptr; }); }, bad, "rotary_cos and"},
      {"bad table dtype", [] { return append([](A a) { a.rotary_dtype = static_cast<ff_merge_dtype>(5); }); }, bad,
       "rotary_dtype"},
      {"odd rotary_dim", [] { return append([](A a) { a.rotary_dim = 31; }); }, bad, "rotary_dim"},
      {"rotary_dim above head_dim", [] { return append([](A a) { a.rotary_dim = 66; }); }, bad, "rotary_dim"},
      {"no rotary rows", [] { return append([](A a) { a.seqlen_ro = 0; }); }, bad, "seqlen_ro"},
      {"q without q_out", [] { return append([](A a) { a.q_out.data = nullptr; }); }, bad, "q and q_out"},
      {"q without rotary", [] { return append([](A a) { a.rotary_cos.data = a.rotary_sin.data = nullptr; }); }, bad,
       "needs rotary_cos"},
      {"q without heads", [] { return append([](A a) { a.num_heads = 0; }); }, bad, "num_heads"},
      {"null cache_seqlens", [] { return append([](A a) { a.cache_seqlens = nullptr; }); }, bad,
       "cache_seqlens is NULL"},
      {"misaligned cache_seqlens",
       [] { return append([](A a) { a.cache_seqlens = reinterpret_cast<const int32_t*>(at(kInts + 2)); }); }, bad,
       "cache_seqlens must be aligned"},
      {"seqlens_out over cache_seqlens", [] { return append([](A a) { a.seqlens_out = ints_at(kInts + 4); }); }, bad,
       "seqlens_out must not overlap"},
      {"misaligned block_table",
       [] {
         return append([](A a) {
           make_paged(a);
           a.block_table = reinterpret_cast<const int32_t*>(at(kInts + 129));
         });
       },
       bad, "block_table must be aligned"},
      {"misaligned float32 table", [] { return append([](A a) { a.rotary_cos.data = at(kCos + 2); }); }, bad,
       "rotary_cos must be aligned"},
      {"negative table stride", [] { return append([](A a) { a.rotary_sin.col_stride = -1; }); }, bad,
       "rotary_sin: stride 1"},
      {"null k", [] { return append([](A a) { a.k.data = nullptr; }); }, bad, "k is NULL"},
      {"null v_cache", [] { return append([](A a) { a.v_cache.data = nullptr; }); }, bad, "v_cache is NULL"},
      {"odd k pointer", [] { return append([](A a) { a.k.data = at(kK + 1); }); }, bad, "k must be aligned"},
      {"negative cache stride", [] { return append([](A a) { a.k_cache.row_stride = -128; }); }, bad,
       "k_cache: stride 1"},
      {"offsets overflow", [] { return append([](A a) { a.v.batch_stride = INT64_MAX / 2; }); }, bad, "overflow"},
      {"cache rows overlap", [] { return append([](A a) { a.k_cache.row_stride = 64; }); }, bad,
       "k_cache: strides make elements overlap"},
      {"k inside k_cache", [] { return append([](A a) { a.k.data = at(kKCache + 256); }); }, bad,
       "k must not overlap k_cache"},
      {"v inside v_cache", [] { return append([](A a) { a.v.data = at(kVCache); }); }, bad,
       "v must not overlap v_cache"},
      {"q_out over q", [] { return append([](A a) { a.q_out.data = a.q.data; }); }, bad, "q_out must not overlap q"},
      {"q_out over k_cache", [] { return append([](A a) { a.q_out.data = at(kKCache); }); }, bad,
       "q_out must not overlap k_cache"},
      {"q_out rows overlap", [] { return append([](A a) { a.q_out.head_stride = 8; }); }, bad,
       "q_out: strides make elements overlap"},
  };
  int passed = 0, failed = 0;
  run_cases(cases, g_launches, true, passed, failed);
  // Nothing to write: no launch, no error, pointers unread.
  const int launches_before = g_launches;
  const bool ok = append([](A a) {
                    a.batch_size = 0;
                    a.k.data = nullptr, a.cache_seqlens = nullptr;
                  }) == FF_OK &&
                  g_launches == launches_before;
  std::printf("%s empty batch launches nothing\n", ok ? "PASS" : "FAIL");
  ok ? ++passed : ++failed;
  sweep_extremes<ff_append_kv_args>(
      "ff_append_kv", valid(), append_fields(), [](const ff_append_kv_args& a) { return ff_append_kv(&a, nullptr); },
      g_launches, true, passed, failed);
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
