// Self-test of csrc/kernels/sm90/wgmma.cuh on a Hopper GPU: tile layout, descriptors,
// wgmma instructions, accumulator layout and the S -> P register conversion.
//
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a
//        tools/lab/wgmma_selftest.cu -o /tmp/wgmma_selftest && /tmp/wgmma_selftest
//
// For bf16 and fp16 and every (head_dim D, keys N) tile of the Hopper kernel (Sm90Tiles in
// sm90/tile_config.cuh: D 64, 128 with N 64, 128; D 96 with N 64, 128; D 192 with N 64,
// 112; D 256 with N 64, 80), two warpgroups as in the kernel (64 query rows each):
//   random Q (128 x D), K (N x D), V (N x D) in global memory
//   -> shared memory with 16-byte cp.async at sm90::tile_offset (128B swizzle; 64B at D 96)
//   -> S = Q K^T      (wgmma SS, K-major descriptors, fp32; warpgroup g reads Q rows from
//                      64 g on, as a consumer does)              -> global via acc_row/acc_col
//   -> P = S packed to 16 bits into the RS A registers (acc_to_a)
//   -> O = P V        (wgmma RS, MN-major V descriptor)     -> global via acc_row/acc_col
//   -> the same P through shared memory where N is a multiple of 32 (store_a_slice: stmatrix
//      into each warpgroup's K-major P tile, 128B swizzle), O = P V again by the SS form
//      (wgmma_pv_ss)                                            -> global, a second O
// and compares S with a double-precision Q K^T, and both O with a double-precision
// round16(S_gpu) V (so the O check sees only the P V path, not S's last-bit rounding). Then
// the same with K and V in the paged twin's grouped layout (sm90::GroupedTile, its descriptors
// desc_kmajor_of / desc_mnmajor_of) at the twin's K/V tile per head dim.
// Exits non-zero on any failure.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <type_traits>
#include <vector>

#include "../../csrc/kernels/sm90/wgmma.cuh"

#define CUDA_CHECK(expr)                                                                                   \
  do {                                                                                                     \
    cudaError_t err_ = (expr);                                                                             \
    if (err_ != cudaSuccess) {                                                                             \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(err_)); \
      std::exit(2);                                                                                        \
    }                                                                                                      \
  } while (0)

namespace ff = forge_flash;
namespace sm90 = forge_flash::sm90;

constexpr int kM = 128;        // query rows: two warpgroups of one wgmma M (64) each
constexpr int kThreads = 256;  // two warpgroups

// The swizzled offset of row `row`, 16-byte chunk `chunk` (column / 8) in a grouped [rows][kD]
// tile (sm90::GroupedTile: each 8-row group holds all its column blocks), stated as the
// hardware's rule: the unswizzled address with bits [4, 4 + log2(W / 16)) XORed with the bits
// from 7 up (W = the swizzle width; every group starts on a swizzle atom).
template <int kD>
__host__ __device__ uint32_t grouped_offset(int row, int chunk) {
  constexpr int kSwizzle = sm90::swizzle_bytes_for(kD), kPerBlock = kSwizzle / 16;
  const uint32_t plain =
      sm90::unswizzled_offset<sm90::GroupedTile<kD, kSwizzle>, kSwizzle>(chunk / kPerBlock, row, chunk % kPerBlock);
  return plain ^ (((plain >> 7) & uint32_t(kPerBlock - 1)) << 4);
}

// Copies a row-major [kRows][kD] global tile into shared memory at `tile` (1024-aligned)
// in the sm90 swizzled layout (kGrouped: the grouped one), one 16-byte chunk per cp.async.
template <typename T, int kRows, int kD, bool kGrouped = false>
__device__ void load_tile(uint32_t tile, const T* src) {
  constexpr int kChunks = kD / 8, kSwizzle = sm90::swizzle_bytes_for(kD);
  for (int i = threadIdx.x; i < kRows * kChunks; i += kThreads) {
    const int row = i / kChunks, chunk = i % kChunks;
    const uint32_t offset = kGrouped ? grouped_offset<kD>(row, chunk) : sm90::tile_offset(kRows, row, chunk, kSwizzle);
    ff::cp_async_16(tile + offset, src + row * kD + chunk * 8, true);
  }
}

// kGroupedKV: K and V in the grouped layout (the paged twin's), read through desc_kmajor_of and
// desc_mnmajor_of with sm90::GroupedTile.
template <typename T, int kD, int kN, bool kGroupedKV = false>
__global__ void __launch_bounds__(kThreads, 1) selftest_kernel(const T* q, const T* k, const T* v, float* s_out,
                                                               float* o_out, float* o_smem_out, float* o_sum_out) {
  extern __shared__ unsigned char smem_raw[];
  // The swizzle atoms must start 1024-aligned: round the dynamic allocation up.
  const uint32_t base = (ff::smem_addr(smem_raw) + 1023u) & ~1023u;
  const uint32_t sQ = base;
  const uint32_t sK = sQ + sm90::tile_bytes(kM, kD);
  const uint32_t sV = sK + sm90::tile_bytes(kN, kD);

  load_tile<T, kM, kD>(sQ, q);
  load_tile<T, kN, kD, kGroupedKV>(sK, k);
  load_tile<T, kN, kD, kGroupedKV>(sV, v);
  // head_dim 64: 16 rows of ones after the tiles, V's extra columns in O += P V with N = 72
  // (sm90::desc_mnmajor_ones).
  const uint32_t ones = sV + sm90::tile_bytes(kN, kD) + (kN % 32 == 0 ? sm90::tile_bytes(kM, kN) : 0);
  if constexpr (kD == 64)
    sm90::fill_ones<T>(smem_raw + (ones - ff::smem_addr(smem_raw)), sm90::kOnesBytes, threadIdx.x, kThreads);
  ff::cp_async_commit();
  ff::cp_async_wait<0>();
  sm90::fence_proxy_async_smem();  // cp.async writes -> visible to the async proxy
  __syncthreads();

  constexpr int kSwizzle = sm90::swizzle_bytes_for(kD);
  using KvLayout = std::conditional_t<kGroupedKV, sm90::GroupedTile<kD, kSwizzle>, sm90::BlockedTile<kN, kSwizzle>>;
  const int t = threadIdx.x % 128, wg = threadIdx.x / 128;
  const int row0 = 64 * wg;                       // this warpgroup's first query row
  const uint32_t sQ_rows = sQ + row0 * kSwizzle;  // as the kernel's consumers address Q

  // ---- S = Q K^T. The accumulators start as garbage: the first slice overwrites them
  // (accumulate = false), which this also tests.
  float s[kN / 2];
#pragma unroll
  for (int i = 0; i < kN / 2; ++i) s[i] = 12345.0f;
  sm90::fence_operand(s);
  sm90::wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < kD / 16; ++kk)
    sm90::wgmma_qk<T>(s, sm90::desc_kmajor<kM, kSwizzle>(sQ_rows, kk), sm90::desc_kmajor_of<KvLayout, kSwizzle>(sK, kk),
                      kk > 0);
  sm90::wgmma_commit();
  sm90::wgmma_wait<0>();
  sm90::fence_operand(s);

#pragma unroll
  for (int i = 0; i < kN / 2; ++i) s_out[(row0 + sm90::acc_row(t, i)) * kN + sm90::acc_col(t, i)] = s[i];

  // ---- O = P V onto zeros, one k16 slice per issue(kk), stored to `dst` by acc_row/acc_col.
  float o[kD / 2];
  auto p_v = [&](float* dst, auto&& issue) {
#pragma unroll
    for (int i = 0; i < kD / 2; ++i) o[i] = 0.f;
    sm90::fence_operand(o);
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kN / 16; ++kk) issue(kk);
    sm90::wgmma_commit();
    sm90::wgmma_wait<0>();
    sm90::fence_operand(o);
#pragma unroll
    for (int i = 0; i < kD / 2; ++i) dst[(row0 + sm90::acc_row(t, i)) * kD + sm90::acc_col(t, i)] = o[i];
  };

  // P = S as 16-bit A registers (RS form).
  uint32_t a[kN / 16][4];
  sm90::acc_to_a<T>(s, a);
  p_v(o_out, [&](int kk) { sm90::wgmma_pv<T>(o, a[kk], sm90::desc_mnmajor_of<KvLayout, kSwizzle>(sV, kk), true); });

  // P through shared memory: this warpgroup's [64][kN] P tile after V (SS form).
  if constexpr (kN % 32 == 0) {
    constexpr int kPSwizzle = sm90::swizzle_bytes_for(kN);
    const uint32_t sP = sV + sm90::tile_bytes(kN, kD) + wg * sm90::tile_bytes(64, kN);
    const int lane = t % 32, lane_row = (t / 32) * 16 + lane % 8 + 8 * ((lane / 8) % 2);
#pragma unroll
    for (int kk = 0; kk < kN / 16; ++kk) sm90::store_a_slice<kN, kPSwizzle>(sP, lane_row, lane / 16, kk, a[kk]);
    sm90::fence_proxy_async_smem();
    __syncthreads();  // the warpgroup's rows, written by its four warps
    p_v(o_smem_out, [&](int kk) {
      sm90::wgmma_pv_ss<T>(o, sm90::desc_kmajor<64, kPSwizzle>(sP, kk),
                           sm90::desc_mnmajor_of<KvLayout, kSwizzle>(sV, kk));
    });
  }

  // O and each row's sum of P at once (head_dim 64): the last 8 of N = 72 columns read the ones.
  if constexpr (kD == 64 && !kGroupedKV) {
    float o72[36];
#pragma unroll
    for (int i = 0; i < 36; ++i) o72[i] = 0.f;
    sm90::fence_operand(o72);
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kN / 16; ++kk) sm90::wgmma_pv<T>(o72, a[kk], sm90::desc_mnmajor_ones(sV, ones, kk), true);
    sm90::wgmma_commit();
    sm90::wgmma_wait<0>();
    sm90::fence_operand(o72);
#pragma unroll
    for (int i = 0; i < 36; ++i) o_sum_out[(row0 + sm90::acc_row(t, i)) * 72 + sm90::acc_col(t, i)] = o72[i];
  }
}

// ---- host side ---------------------------------------------------------------------------
template <typename T>
T to16(float x);
template <>
half to16<half>(float x) {
  return __float2half_rn(x);
}
template <>
__nv_bfloat16 to16<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
inline float from16(half x) { return __half2float(x); }
inline float from16(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
const char* type_name();
template <>
const char* type_name<half>() {
  return "fp16";
}
template <>
const char* type_name<__nv_bfloat16>() {
  return "bf16";
}

struct Check {
  double max_abs = 0.0, worst_ratio = 0.0;  // ratio: error / tolerance
  long bad = 0;
  void add(double got, double ref, double scale, int r, int c, const char* what) {
    const double err = std::fabs(got - ref);
    const double tol = 1e-4 * scale + 1e-6;  // scale: sum of |terms| of the dot product
    if (std::isnan(err)) {
      max_abs = worst_ratio = INFINITY;
    } else {
      max_abs = std::max(max_abs, err);
      worst_ratio = std::max(worst_ratio, err / tol);
    }
    if (!(err <= tol)) {
      if (bad < 4) std::printf("    %s[%d][%d]: got %.6f, want %.6f\n", what, r, c, got, ref);
      ++bad;
    }
  }
};

template <typename T, int kD, int kN, bool kGroupedKV = false>
bool run_case(std::mt19937& rng) {
  std::uniform_real_distribution<float> dist(-1.f, 1.f);
  std::vector<T> hq(kM * kD), hk(kN * kD), hv(kN * kD);
  for (auto& x : hq) x = to16<T>(dist(rng));
  for (auto& x : hk) x = to16<T>(dist(rng));
  for (auto& x : hv) x = to16<T>(dist(rng));

  T *dq, *dk, *dv;
  float *ds, *dout, *dout_smem, *dsum;
  constexpr bool kSmemP = kN % 32 == 0;
  CUDA_CHECK(cudaMalloc(&dq, hq.size() * sizeof(T)));
  CUDA_CHECK(cudaMalloc(&dk, hk.size() * sizeof(T)));
  CUDA_CHECK(cudaMalloc(&dv, hv.size() * sizeof(T)));
  CUDA_CHECK(cudaMalloc(&ds, kM * kN * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&dout, kM * kD * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&dout_smem, kM * kD * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&dsum, kM * 72 * sizeof(float)));
  CUDA_CHECK(cudaMemcpy(dq, hq.data(), hq.size() * sizeof(T), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dk, hk.data(), hk.size() * sizeof(T), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dv, hv.data(), hv.size() * sizeof(T), cudaMemcpyHostToDevice));
  // NaN fill: any output element the accumulator layout misses shows up as a failure.
  CUDA_CHECK(cudaMemset(ds, 0xFF, kM * kN * sizeof(float)));
  CUDA_CHECK(cudaMemset(dout, 0xFF, kM * kD * sizeof(float)));
  CUDA_CHECK(cudaMemset(dout_smem, 0xFF, kM * kD * sizeof(float)));
  CUDA_CHECK(cudaMemset(dsum, 0xFF, kM * 72 * sizeof(float)));

  const size_t smem = sm90::tile_bytes(kM, kD) + 2 * sm90::tile_bytes(kN, kD) +
                      (kSmemP ? sm90::tile_bytes(kM, kN) : 0) + 1024 + (kD == 64 ? sm90::kOnesBytes : 0);
  auto kernel = selftest_kernel<T, kD, kN, kGroupedKV>;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  kernel<<<1, kThreads, smem>>>(dq, dk, dv, ds, dout, dout_smem, dsum);
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cudaDeviceSynchronize());

  std::vector<float> hs(kM * kN), ho(kM * kD), ho_smem(kM * kD), hsum(kM * 72);
  CUDA_CHECK(cudaMemcpy(hs.data(), ds, hs.size() * sizeof(float), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(ho.data(), dout, ho.size() * sizeof(float), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(ho_smem.data(), dout_smem, ho_smem.size() * sizeof(float), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(hsum.data(), dsum, hsum.size() * sizeof(float), cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaFree(dq));
  CUDA_CHECK(cudaFree(dk));
  CUDA_CHECK(cudaFree(dv));
  CUDA_CHECK(cudaFree(ds));
  CUDA_CHECK(cudaFree(dout));
  CUDA_CHECK(cudaFree(dout_smem));
  CUDA_CHECK(cudaFree(dsum));

  std::printf("%s D=%3d N=%3d%s\n", type_name<T>(), kD, kN, kGroupedKV ? ", K and V grouped" : "");
  constexpr bool kRowSums = kD == 64 && !kGroupedKV;
  // S reference: Q K^T in double.
  Check cs;
  for (int r = 0; r < kM; ++r)
    for (int c = 0; c < kN; ++c) {
      double ref = 0, scale = 0;
      for (int d = 0; d < kD; ++d) {
        const double term = double(from16(hq[r * kD + d])) * double(from16(hk[c * kD + d]));
        ref += term;
        scale += std::fabs(term);
      }
      cs.add(hs[r * kN + c], ref, scale, r, c, "S");
    }
  // O reference: round16(S_gpu) V in double (P rounded exactly as acc_to_a rounds it); the
  // same for the O whose P went through shared memory.
  Check co, co_smem, co_sum;
  for (int r = 0; r < kM; ++r) {
    if (kRowSums) {  // the row sums of P: columns 64-71 of the N = 72 product
      double sum = 0, scale = 0;
      for (int j = 0; j < kN; ++j) {
        const double p = from16(to16<T>(hs[r * kN + j]));
        sum += p;
        scale += std::fabs(p);
      }
      for (int c = 64; c < 72; ++c) co_sum.add(hsum[r * 72 + c], sum, scale, r, c, "row sum of P");
    }
    for (int c = 0; c < kD; ++c) {
      double ref = 0, scale = 0;
      for (int j = 0; j < kN; ++j) {
        const double p = from16(to16<T>(hs[r * kN + j]));
        const double term = p * double(from16(hv[j * kD + c]));
        ref += term;
        scale += std::fabs(term);
      }
      co.add(ho[r * kD + c], ref, scale, r, c, "O");
      if (kSmemP) co_smem.add(ho_smem[r * kD + c], ref, scale, r, c, "O (P in smem)");
      if (kRowSums) co_sum.add(hsum[r * 72 + c], ref, scale, r, c, "O beside the row sums");
    }
  }
  const bool ok = cs.bad == 0 && co.bad == 0 && co_smem.bad == 0 && co_sum.bad == 0;
  std::printf("  S = Q K^T : max abs err %.3e (worst err/tol %.3f, %ld bad)\n", cs.max_abs, cs.worst_ratio, cs.bad);
  std::printf("  O = P V   : max abs err %.3e (worst err/tol %.3f, %ld bad)\n", co.max_abs, co.worst_ratio, co.bad);
  if (kSmemP)
    std::printf("  O = P V, P from shared memory: max abs err %.3e (worst err/tol %.3f, %ld bad)\n", co_smem.max_abs,
                co_smem.worst_ratio, co_smem.bad);
  if (kRowSums)
    std::printf("  O = P V and row sums (N = 72, ones): max abs err %.3e (worst err/tol %.3f, %ld bad)\n",
                co_sum.max_abs, co_sum.worst_ratio, co_sum.bad);
  std::printf("  %s\n", ok ? "PASS" : "FAIL");
  return ok;
}

// Every (head_dim, keys) pair the Hopper kernel's tiles use, plus a 64-key tile per head_dim.
template <typename T>
bool run_type(std::mt19937& rng) {
  bool ok = run_case<T, 64, 64>(rng);
  ok &= run_case<T, 64, 128>(rng);
  ok &= run_case<T, 96, 64>(rng);
  ok &= run_case<T, 96, 128>(rng);
  ok &= run_case<T, 128, 64>(rng);
  ok &= run_case<T, 128, 128>(rng);
  ok &= run_case<T, 192, 64>(rng);
  ok &= run_case<T, 192, 112>(rng);
  ok &= run_case<T, 256, 64>(rng);
  ok &= run_case<T, 256, 80>(rng);
  // The paged twin's grouped K/V tiles (sm90::GroupedTile), at its K/V tile per head dim.
  ok &= run_case<T, 64, 128, true>(rng);
  ok &= run_case<T, 96, 128, true>(rng);
  ok &= run_case<T, 128, 128, true>(rng);
  ok &= run_case<T, 192, 112, true>(rng);
  ok &= run_case<T, 256, 80, true>(rng);
  return ok;
}

// Host-only facts about the layout function, checked before touching the GPU.
bool check_layout_function() {
  bool ok = true;
  // For every tile shape used here: a bijection onto [0, tile_bytes) in 16-byte units, and
  // equal to the hardware's rule stated independently: the canonical address of column block
  // b, row r, chunk c (b * rows * W + r * W + c * 16, W = the swizzle width) with address bits
  // [4, 4 + log2(W / 16)) XORed with the bits from 7 up.
  for (int rows : {64, 80, 112, 128})
    for (int d : {64, 96, 128, 192, 256}) {
      const int w = sm90::swizzle_bytes_for(d), per_block = w / 16;
      std::vector<int> seen(sm90::tile_bytes(rows, d) / 16, 0);
      for (int r = 0; r < rows; ++r)
        for (int c = 0; c < d / 8; ++c) {
          const uint32_t off = sm90::tile_offset(rows, r, c, w);
          if (off % 16 != 0 || off / 16 >= seen.size() || seen[off / 16]++) ok = false;
          const uint32_t canonical = uint32_t((c / per_block) * rows * w + r * w + (c % per_block) * 16);
          if (off != (canonical ^ (((canonical >> 7) & uint32_t(per_block - 1)) << 4))) ok = false;
        }
    }
  // head_dim 64: identical to the SM80 kernel's row * 64 + ((chunk ^ (row % 8)) * 8) elements.
  // head_dim 128: differs from its row * 128 + ((chunk ^ (row % 8)) * 8).
  bool same64 = true, same128 = true;
  for (int r = 0; r < 128; ++r)
    for (int c = 0; c < 16; ++c) {
      if (c < 8 && sm90::tile_offset(128, r, c) != uint32_t(r * 64 + ((c ^ (r % 8)) * 8)) * 2) same64 = false;
      if (sm90::tile_offset(128, r, c) != uint32_t(r * 128 + ((c ^ (r % 8)) * 8)) * 2) same128 = false;
    }
  // The grouped layout at the paged twin's K/V tiles: a bijection onto the tile's bytes too.
  bool grouped_ok = true;
  auto grouped = [&](int rows, auto d_tag) {
    constexpr int d = decltype(d_tag)::value;
    std::vector<int> seen(sm90::tile_bytes(rows, d) / 16, 0);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < d / 8; ++c) {
        const uint32_t off = grouped_offset<d>(r, c);
        if (off % 16 != 0 || off / 16 >= seen.size() || seen[off / 16]++) grouped_ok = false;
      }
  };
  grouped(128, std::integral_constant<int, 64>{});
  grouped(128, std::integral_constant<int, 96>{});
  grouped(128, std::integral_constant<int, 128>{});
  grouped(112, std::integral_constant<int, 192>{});
  grouped(80, std::integral_constant<int, 256>{});
  std::printf(
      "layout function: bijective %s; equals SM80 smem_offset at head_dim 64: %s, "
      "at head_dim 128: %s; the grouped layout bijective %s\n",
      ok ? "yes" : "NO", same64 ? "yes" : "no", same128 ? "yes" : "no", grouped_ok ? "yes" : "NO");
  return ok && same64 && !same128 && grouped_ok;
}

int main() {
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  if (prop.major != 9 || prop.minor != 0) {
    std::fprintf(stderr, "needs a compute capability 9.0 (Hopper) GPU\n");
    return 2;
  }

  bool ok = check_layout_function();
  std::mt19937 rng(1234);
  ok &= run_type<__nv_bfloat16>(rng);
  ok &= run_type<half>(rng);
  std::printf("%s\n", ok ? "ALL PASS" : "SOME CASES FAILED");
  return ok ? 0 : 1;
}
