// Warp-level tile math of the SM80 data path: S = Q K^T and O += P V for m16 slices of query
// rows, with `mma.sync.m16n8k16` fed by `ldmatrix` from the XOR-swizzled shared-memory tiles
// (16-byte chunk c of row r at chunk c ^ (r % 8), rows of kPitch elements). Shared by the
// prefill kernel (fwd_kernel.cuh: warps own rows) and the decode kernel (decode_kernel.cuh:
// warps own keys).
#pragma once

#include "ptx.cuh"

namespace forge_flash {

// A lane's ldmatrix addresses into one swizzled tile. Every fragment starts on a multiple of
// 8 rows, so a lane's row within the swizzle pattern is lane % 8 and its swizzled chunk for an
// even chunk base c is c ^ x with x = lane_chunk ^ (lane % 8): only c % 8 varies at run time,
// so four precomputed byte offsets cover every k-step.
template <int kPitch>
struct SwizzledLane {
  uint32_t base;     // byte address of the lane's row, chunk 0
  uint32_t xor_[4];  // byte offset of swizzled chunk (2j ^ x), j = c % 8 / 2

  __device__ __forceinline__ SwizzledLane(uint32_t tile, int lane_row, int lane_chunk, int lane) {
    base = tile + lane_row * kPitch * 2;
    const int x = lane_chunk ^ (lane % 8);
#pragma unroll
    for (int j = 0; j < 4; ++j) xor_[j] = ((2 * j) ^ x) * 16;
  }
  __device__ __forceinline__ uint32_t at(int row_off, int chunk) const {  // chunk even, compile-time
    return base + row_off * kPitch * 2 + (chunk / 8) * 128 + xor_[(chunk % 8) / 2];
  }
};

// A from Q: lanes 0-15 rows 0-15 at chunk c, lanes 16-31 the same rows at c + 1.
template <int kPitch>
__device__ __forceinline__ SwizzledLane<kPitch> q_lane(uint32_t tile, int row0, int lane) {
  return {tile, row0 + lane % 16, lane / 16, lane};
}
// B from K (keys are rows): matrices (keys 0-7, c), (0-7, c+1), (8-15, c), (8-15, c+1).
template <int kPitch>
__device__ __forceinline__ SwizzledLane<kPitch> k_lane(uint32_t tile, int lane) {
  return {tile, lane % 8 + (lane / 16) * 8, (lane / 8) % 2, lane};
}
// B from V, transposed: matrices (keys 0-7, c), (8-15, c), (0-7, c+1), (8-15, c+1).
template <int kPitch>
__device__ __forceinline__ SwizzledLane<kPitch> v_lane(uint32_t tile, int lane) {
  return {tile, lane % 16, lane / 16, lane};
}

// Two n8 tiles (2 * n16 and 2 * n16 + 1) of every m16 slice's accumulator += A x one
// ldmatrix.x4 B fragment (its matrices 0-1 feed the first tile, 2-3 the second).
template <typename T, int kMTiles, int kNTiles>
__device__ __forceinline__ void mma_two_n8(float (&acc)[kMTiles][kNTiles][4], const uint32_t (&a)[kMTiles][4],
                                           const uint32_t (&b)[4], int n16) {
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt) {
    mma_16816<T>(acc[mt][2 * n16], a[mt], b[0], b[1]);
    mma_16816<T>(acc[mt][2 * n16 + 1], a[mt], b[2], b[3]);
  }
}

// S = Q K^T for kMTiles m16 slices (Q rows mt * 16 from `q`) against kKeys keys of `k`.
template <typename T, int kMTiles, int kKeys, int kHeadDim, int kPitch>
__device__ __forceinline__ void qk_scores(float (&s)[kMTiles][kKeys / 8][4], const SwizzledLane<kPitch>& q,
                                          const SwizzledLane<kPitch>& k) {
#pragma unroll
  for (int mt = 0; mt < kMTiles; ++mt)
#pragma unroll
    for (int j = 0; j < kKeys / 8; ++j) s[mt][j][0] = s[mt][j][1] = s[mt][j][2] = s[mt][j][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < kHeadDim / 16; ++kk) {
    uint32_t a[kMTiles][4];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) ldmatrix_x4(q.at(mt * 16, 2 * kk), a[mt]);
#pragma unroll
    for (int nn = 0; nn < kKeys / 16; ++nn) {
      uint32_t bk[4];
      ldmatrix_x4(k.at(nn * 16, 2 * kk), bk);
      mma_two_n8<T>(s, a, bk, nn);
    }
  }
}

// O += P V: the probabilities P (S's accumulators after the softmax), packed to 16 bits, are
// the A fragments as they are; V comes in through ldmatrix.trans.
template <typename T, int kMTiles, int kKeys, int kHeadDim, int kPitch>
__device__ __forceinline__ void pv_accumulate(float (&o)[kMTiles][kHeadDim / 8][4],
                                              const float (&prob)[kMTiles][kKeys / 8][4],
                                              const SwizzledLane<kPitch>& v) {
#pragma unroll
  for (int kk = 0; kk < kKeys / 16; ++kk) {
    uint32_t a[kMTiles][4];
#pragma unroll
    for (int mt = 0; mt < kMTiles; ++mt) {
      a[mt][0] = pack2<T>(prob[mt][2 * kk][0], prob[mt][2 * kk][1]);
      a[mt][1] = pack2<T>(prob[mt][2 * kk][2], prob[mt][2 * kk][3]);
      a[mt][2] = pack2<T>(prob[mt][2 * kk + 1][0], prob[mt][2 * kk + 1][1]);
      a[mt][3] = pack2<T>(prob[mt][2 * kk + 1][2], prob[mt][2 * kk + 1][3]);
    }
#pragma unroll
    for (int dd = 0; dd < kHeadDim / 16; ++dd) {
      uint32_t bv[4];
      ldmatrix_x4_trans(v.at(kk * 16, 2 * dd), bv);
      mma_two_n8<T>(o, a, bv, dd);
    }
  }
}

}  // namespace forge_flash
