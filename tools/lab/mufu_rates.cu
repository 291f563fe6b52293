// Issue rates of the special-function (MUFU) instructions a softmax uses, per SM and clock:
// tanh.approx.f32 (the softcap), ex2.approx.ftz.f32 (every softmax) and rcp.approx.ftz.f32 (after
// an FADD, which runs on the FMA pipe), with FFMA as the yardstick; and P's conversion to 16 bits,
// cvt.rn.bf16x2.f32 (F2FP, two values packed; unpacked again by a shift on the integer pipe),
// alone and one per exp2: the CUDA guide's table gives "other type conversions" 16 results per SM
// per clock, the special-function unit's rate, so whether the two share a unit decides whether
// P's conversion adds to the exponentials' time. Each thread runs 8
// independent chains of one instruction, with 32 warps per SM, so the unit's throughput, not a
// chain's latency, sets the time. Whether the softcap's tanh costs as much as an exp2 decides how
// close a softcapped call can come to plain attention at head_dim 128, where the exp2s alone take
// half the special-function unit's time of a tile (docs/bench-history/2026-12-04.md, "What bounds the softcap").
//
// The second table runs a softmax's whole per-score program (the softcap's: multiply, tanh,
// multiply-add, exp2, add; plain attention's: multiply-add, exp2, add) on 64 independent scores
// per thread, as a consumer thread holds them at head_dim 128, with 1, 2 and 4 warps per
// scheduler (8 would not fit the registers). In the Hopper kernel one warp per scheduler runs
// its softmax while the other consumer's matrix products run: if one warp could not keep the
// special-function unit busy, a softcapped tile would take longer than the units' rates say.
// H200, 2026-12-04: one warp runs the softcap's program at 7.46 scores per SM per clock (the
// unit's bound is 8), the plain one at 13.78 (bound 16): it does keep the unit busy.
//
//   nvcc -O3 -arch=sm_90a -o mufu_rates tools/lab/mufu_rates.cu && ./mufu_rates
#include <cuda_runtime.h>

#include <cstdio>

namespace {

constexpr int kChains = 8, kIters = 4096, kThreads = 256, kBlocksPerSm = 4;
constexpr int kScores = 64, kScoreIters = 512;  // the second table: scores per thread, rounds

enum class Op { kTanh, kEx2, kRcp, kFfma, kCvt, kEx2Cvt, kSoftcapScore, kPlainScore };

template <Op kOp>
__device__ __forceinline__ float step(float x) {
  float y;
  if constexpr (kOp == Op::kTanh) {
    asm volatile("tanh.approx.f32 %0, %1;" : "=f"(y) : "f"(x));
  } else if constexpr (kOp == Op::kEx2) {  // 2^-x: stays in (0.5, 1]
    asm volatile("{ .reg .f32 t; neg.f32 t, %1; ex2.approx.ftz.f32 %0, t; }" : "=f"(y) : "f"(x));
  } else if constexpr (kOp == Op::kRcp) {  // 1 / (1 + x): rcp(rcp(x)) is folded away by ptxas
    asm volatile("{ .reg .f32 t; add.f32 t, %1, 0f3F800000; rcp.approx.ftz.f32 %0, t; }" : "=f"(y) : "f"(x));
  } else if constexpr (kOp == Op::kCvt || kOp == Op::kEx2Cvt) {  // [2^-x,] to bf16 and back
    float t = x;
    if constexpr (kOp == Op::kEx2Cvt)
      asm volatile("{ .reg .f32 u; neg.f32 u, %1; ex2.approx.ftz.f32 %0, u; }" : "=f"(t) : "f"(x));
    unsigned packed;
    asm volatile("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(packed) : "f"(t), "f"(t));
    y = __uint_as_float(packed << 16);
  } else {
    asm volatile("fma.rn.f32 %0, %1, %1, %2;" : "=f"(y) : "f"(x), "f"(-0.5f));
  }
  return y;
}

// Each chain stays in a range where the instruction neither overflows nor reaches a fixed point
// the hardware could shortcut: tanh of values below 1, 2^-x and 1 / (1 + x) of values in (0, 1].
template <Op kOp>
__global__ void chains(float* out, float seed) {
  float x[kChains];
#pragma unroll
  for (int c = 0; c < kChains; ++c) x[c] = seed + 0.01f * c + 1e-6f * threadIdx.x;
  for (int i = 0; i < kIters; ++i)
#pragma unroll
    for (int c = 0; c < kChains; ++c) x[c] = step<kOp>(x[c]);
  float sum = 0.f;
#pragma unroll
  for (int c = 0; c < kChains; ++c) sum += x[c];
  if (sum == 12345.f) out[blockIdx.x * blockDim.x + threadIdx.x] = sum;  // keeps the chains live
}

// One score's program, as the kernel's softmax runs it (softmax.cuh): the softcap's bounded
// softmax, p = 2^(c * tanh(s * a) - offset), and plain attention's p = 2^(s * scale - max); each
// adds p to the row's sum. The constants keep every score in (0.3, 1): no overflow, no shortcut.
template <Op kOp>
__device__ __forceinline__ float score_program(float s, float& sum) {
  float p;
  if constexpr (kOp == Op::kSoftcapScore) {
    float t;
    asm volatile("tanh.approx.f32 %0, %1;" : "=f"(t) : "f"(s * 0.75f));
    asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(p) : "f"(fmaf(t, 1.5f, -1.2f)));
  } else {
    asm volatile("ex2.approx.ftz.f32 %0, %1;" : "=f"(p) : "f"(fmaf(s, 0.9f, -1.1f)));
  }
  sum += p;
  return p;
}

// kScores independent scores per thread, each through kScoreIters rounds of the program, in
// the order the softmax issues them: every score of a round before the next round.
template <Op kOp>
__global__ void score_rounds(float* out, float seed) {
  float s[kScores], sum = 0.f;
#pragma unroll
  for (int c = 0; c < kScores; ++c) s[c] = seed + 0.004f * c + 1e-6f * threadIdx.x;
  for (int i = 0; i < kScoreIters; ++i)
#pragma unroll
    for (int c = 0; c < kScores; ++c) s[c] = score_program<kOp>(s[c], sum);
  if (sum == 12345.f) out[blockIdx.x * blockDim.x + threadIdx.x] = sum;  // keeps the scores live
}

bool check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) std::printf("%s: %s\n", what, cudaGetErrorString(e));
  return e == cudaSuccess;
}

// The best of five timed launches after a warm-up one, in ms (through *best_ms); false after a
// CUDA error, which it prints.
template <typename Launch>
bool best_launch_ms(const char* name, Launch launch, float* best_ms) {
  launch();  // warm-up
  if (!check(cudaGetLastError(), name) || !check(cudaDeviceSynchronize(), name)) return false;
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  *best_ms = 1e30f;
  bool ok = true;
  for (int r = 0; r < 5 && ok; ++r) {
    cudaEventRecord(start);
    launch();
    cudaEventRecord(stop);
    ok = check(cudaEventSynchronize(stop), name);
    float ms = 0.f;
    cudaEventElapsedTime(&ms, start, stop);
    *best_ms = ms < *best_ms ? ms : *best_ms;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ok;
}

template <Op kOp>
bool measure(const char* name, int sms, int clock_khz, float* out) {
  const int blocks = sms * kBlocksPerSm;
  float best_ms = 0.f;
  if (!best_launch_ms(name, [&] { chains<kOp><<<blocks, kThreads>>>(out, 0.5f); }, &best_ms)) return false;
  const double per_sm = static_cast<double>(kBlocksPerSm) * kThreads * kIters * kChains;
  const double clocks = best_ms * 1e-3 * clock_khz * 1e3;  // at the reported clock (boost)
  std::printf("%-22s %8.3f ms  %6.2f results per SM per clock (at %d MHz)\n", name, best_ms, per_sm / clocks,
              clock_khz / 1000);
  return true;
}

// Scores per SM per clock of one score program with `warps` warps per scheduler (one CTA of
// 4 * warps warps per SM, as many CTAs as SMs).
template <Op kOp>
bool measure_scores(const char* name, int warps, int sms, int clock_khz, float* out) {
  const int threads = 128 * warps;
  float best_ms = 0.f;
  if (!best_launch_ms(name, [&] { score_rounds<kOp><<<sms, threads>>>(out, 0.5f); }, &best_ms)) return false;
  const double per_sm = static_cast<double>(threads) * kScoreIters * kScores;
  const double clocks = best_ms * 1e-3 * clock_khz * 1e3;
  std::printf("%-16s %d warp(s) per scheduler %8.3f ms  %6.2f scores per SM per clock\n", name, warps, best_ms,
              per_sm / clocks);
  return true;
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  if (!check(cudaGetDeviceProperties(&prop, 0), "device")) return 1;
  int clock_khz = 0;
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, 0);
  std::printf("%s, %d SMs\n", prop.name, prop.multiProcessorCount);
  float* out = nullptr;
  if (!check(cudaMalloc(&out, sizeof(float) * prop.multiProcessorCount * kBlocksPerSm * kThreads), "malloc")) return 1;
  const int sms = prop.multiProcessorCount;
  const bool ok = measure<Op::kFfma>("fma.rn.f32", sms, clock_khz, out) &&
                  measure<Op::kEx2>("ex2.approx.ftz.f32", sms, clock_khz, out) &&
                  measure<Op::kTanh>("tanh.approx.f32", sms, clock_khz, out) &&
                  measure<Op::kRcp>("rcp.approx.ftz.f32", sms, clock_khz, out) &&
                  measure<Op::kCvt>("cvt.rn.bf16x2.f32", sms, clock_khz, out) &&
                  measure<Op::kEx2Cvt>("ex2 + cvt.bf16x2 (steps)", sms, clock_khz, out);
  // Two special-function results per softcapped score, one per plain one: at 16 a clock the
  // unit's bounds are 8 and 16 scores per SM per clock.
  std::printf("\nA softmax's per-score program, %d scores per thread (bounds: softcap 8, plain 16)\n", kScores);
  bool scores_ok = ok;
  for (int warps : {1, 2, 4})
    scores_ok = scores_ok && measure_scores<Op::kSoftcapScore>("softcap score", warps, sms, clock_khz, out) &&
                measure_scores<Op::kPlainScore>("plain score", warps, sms, clock_khz, out);
  cudaFree(out);
  return scores_ok ? 0 : 1;
}
