// Host-only test of ff_merge_states's argument checks (csrc/api/merge_api.cpp), built without
// the kernels: launch_merge_states (and flash_api.cpp's kernel entry points, linked for
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
#include "../../csrc/kernels/merge_states.h"
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
cudaError_t launch_merge_states(const ff_merge_args&, cudaStream_t) {
  ++g_launches;
  return cudaSuccess;
}
cudaError_t launch_append_kv(const ff_append_kv_args&, cudaStream_t) { return cudaSuccess; }  // not in this test
}  // namespace forge_flash

namespace {

alignas(256) unsigned char g_buffer[1 << 20];
void* at(size_t offset) { return g_buffer + offset; }
float* lse_at(size_t offset) { return reinterpret_cast<float*>(at(offset)); }

// Two parts (float32, bfloat16) of (batch 2, seqlen 8, heads 4, head_dim 16), contiguous,
// merged into a float16 out; LSEs (2, 4, 8) contiguous.
constexpr int64_t kOutBytes = 2 * 8 * 4 * 16 * 4, kLseBytes = 2 * 4 * 8 * 4;
ff_merge_args valid() {
  ff_merge_args a{};
  a.num_parts = 2;
  a.batch_size = 2, a.seqlen = 8, a.num_heads = 4, a.head_dim = 16;
  const ff_merge_dtype dtypes[] = {FF_MERGE_FLOAT32, FF_MERGE_BFLOAT16};
  for (int i = 0; i < 2; ++i) {
    a.parts[i].out = {at(i * kOutBytes), 8 * 4 * 16, 4 * 16, 16};
    a.parts[i].dtype = dtypes[i];
    a.parts[i].lse = {lse_at(4 * kOutBytes + i * kLseBytes), 4 * 8, 8, 1};
  }
  a.out = {at(2 * kOutBytes), 8 * 4 * 16, 4 * 16, 16};
  a.out_dtype = FF_MERGE_FLOAT16;
  a.out_lse = {lse_at(4 * kOutBytes + 2 * kLseBytes), 4 * 8, 8, 1};
  return a;
}

ff_status merge(std::function<void(ff_merge_args&)> edit) {
  ff_merge_args a = valid();
  edit(a);
  return ff_merge_states(&a, nullptr);
}

std::vector<Field<ff_merge_args>> merge_fields() {  // for sweep_extremes (extremes.h)
  using A = ff_merge_args;
  return {FF_TENSOR_FIELDS(A, parts[0].out, at(0)),
          FF_INT_FIELD(A, parts[0].dtype),
          FF_POINTER_FIELD(A, parts[0].lse.data, lse_at(0)),
          FF_INT64_FIELD(A, parts[0].lse.batch_stride),
          FF_INT64_FIELD(A, parts[0].lse.head_stride),
          FF_INT64_FIELD(A, parts[0].lse.row_stride),
          FF_TENSOR_FIELDS(A, parts[1].out, at(0)),
          FF_INT_FIELD(A, parts[1].dtype),
          FF_POINTER_FIELD(A, parts[2].out.data, at(0)),
          FF_INT_FIELD(A, num_parts),
          FF_TENSOR_FIELDS(A, out, at(0)),
          FF_INT_FIELD(A, out_dtype),
          FF_POINTER_FIELD(A, out_lse.data, lse_at(0)),
          FF_INT64_FIELD(A, out_lse.row_stride),
          FF_INT_FIELD(A, batch_size),
          FF_INT_FIELD(A, seqlen),
          FF_INT_FIELD(A, num_heads),
          FF_INT_FIELD(A, head_dim)};
}

}  // namespace

int main() {
  using forge_flash::g_launches;
  const ff_status bad = FF_ERROR_INVALID_ARGUMENT;
  std::vector<Case> cases = {
      {"valid", [] { return merge([](ff_merge_args&) {}); }, FF_OK, ""},
      {"null args", [] { return ff_merge_states(nullptr, nullptr); }, bad, "args"},
      {"no parts", [] { return merge([](ff_merge_args& a) { a.num_parts = 0; }); }, bad, "num_parts"},
      {"17 parts", [] { return merge([](ff_merge_args& a) { a.num_parts = 17; }); }, bad, "num_parts"},
      {"negative seqlen", [] { return merge([](ff_merge_args& a) { a.seqlen = -1; }); }, bad, "seqlen"},
      {"head_dim 0", [] { return merge([](ff_merge_args& a) { a.head_dim = 0; }); }, bad, "head_dim"},
      {"bad out dtype", [] { return merge([](ff_merge_args& a) { a.out_dtype = static_cast<ff_merge_dtype>(3); }); },
       bad, "out_dtype"},
      {"bad part dtype",
       [] { return merge([](ff_merge_args& a) { a.parts[1].dtype = static_cast<ff_merge_dtype>(-1); }); }, bad,
       "parts[1].dtype"},
      {"null out", [] { return merge([](ff_merge_args& a) { a.out.data = nullptr; }); }, bad, "out is NULL"},
      {"null part out", [] { return merge([](ff_merge_args& a) { a.parts[0].out.data = nullptr; }); }, bad,
       "parts[0].out is NULL"},
      {"null part lse", [] { return merge([](ff_merge_args& a) { a.parts[1].lse.data = nullptr; }); }, bad,
       "parts[1].lse is NULL"},
      {"misaligned float32 part", [] { return merge([](ff_merge_args& a) { a.parts[0].out.data = at(2); }); }, bad,
       "parts[0].out must be aligned"},
      {"misaligned bfloat16 part",
       [] { return merge([](ff_merge_args& a) { a.parts[1].out.data = at(kOutBytes + 1); }); }, bad,
       "parts[1].out must be aligned"},
      {"misaligned out_lse",
       [] { return merge([](ff_merge_args& a) { a.out_lse.data = reinterpret_cast<float*>(at(7 * 1024 + 1)); }); }, bad,
       "out_lse must be aligned"},
      {"negative stride", [] { return merge([](ff_merge_args& a) { a.parts[1].out.head_stride = -16; }); }, bad,
       "parts[1].out: stride 2"},
      {"int64 overflow", [] { return merge([](ff_merge_args& a) { a.parts[0].lse.batch_stride = INT64_MAX / 2; }); },
       bad, "overflow"},
      {"overlapping out rows", [] { return merge([](ff_merge_args& a) { a.out.row_stride = 0; }); }, bad,
       "out: strides make elements overlap"},
      {"overlapping out heads", [] { return merge([](ff_merge_args& a) { a.out.head_stride = 8; }); }, bad,
       "out: strides make elements overlap"},
      {"overlapping out_lse", [] { return merge([](ff_merge_args& a) { a.out_lse.head_stride = 4; }); }, bad,
       "out_lse: strides make elements overlap"},
      {"out shifted over a part", [] { return merge([](ff_merge_args& a) { a.out.data = at(64); }); }, bad,
       "out overlaps parts[0].out"},
      {"out over a part with other strides",
       [] {
         return merge([](ff_merge_args& a) {
           a.out = a.parts[1].out;
           a.out_dtype = FF_MERGE_BFLOAT16;
           a.out.batch_stride *= 2;
         });
       },
       bad, "out overlaps parts[1].out"},
      {"out_lse over a part's lse",
       [] { return merge([](ff_merge_args& a) { a.out_lse.data = a.parts[0].lse.data + 1; }); }, bad,
       "out_lse overlaps parts[0].lse"},
      {"in place is fine",
       [] {
         return merge([](ff_merge_args& a) {
           a.out = a.parts[0].out;
           a.out_dtype = FF_MERGE_FLOAT32;
           a.out_lse = a.parts[0].lse;
         });
       },
       FF_OK, ""},
      {"no out_lse is fine", [] { return merge([](ff_merge_args& a) { a.out_lse.data = nullptr; }); }, FF_OK, ""},
      {"strided views are fine",
       [] {
         return merge([](ff_merge_args& a) {
           a.parts[1].out.row_stride = 4 * 16 + 3;  // any stride of any element count
           a.parts[1].out.batch_stride = 8 * (4 * 16 + 3);
         });
       },
       FF_OK, ""},
  };
  int passed = 0, failed = 0;
  run_cases(cases, g_launches, true, passed, failed);
  // Nothing to merge: no launch, no error.
  const int launches_before = g_launches;
  const bool ok =
      merge([](ff_merge_args& a) { a.batch_size = 0, a.out.data = nullptr; }) == FF_OK && g_launches == launches_before;
  std::printf("%s empty batch launches nothing\n", ok ? "PASS" : "FAIL");
  ok ? ++passed : ++failed;
  sweep_extremes<ff_merge_args>(
      "ff_merge_states", valid(), merge_fields(), [](const ff_merge_args& a) { return ff_merge_states(&a, nullptr); },
      g_launches, true, passed, failed);
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
