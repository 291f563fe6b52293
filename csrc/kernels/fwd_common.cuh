// The parts of the forward tile program that do not depend on how the matrix products are
// computed: which rows and K/V tiles a CTA owns, masking, the online softmax, and the
// epilogue writes. Shared by the SM80 (mma.sync) and SM90 (wgmma) kernels.
//
// Register layout both kernels use for an m16 slice of an accumulator (S or O): a thread
// holds acc[j][hi * 2 + e] = element (row lane / 4 + 8 * hi, column 8 * j + 2 * (lane % 4) + e).
// This is the C layout of mma.m16n8k16 and, per warp, the accumulator layout of wgmma m64nNk16.
//
// One concern per header:
//   cta_work.cuh       which rows and K/V tiles a CTA owns (the causal diagonal, a window's band)
//   tile_copies.cuh    global -> shared copies of Q and K/V tiles (strided or paged, cp.async)
//   score_program.cuh  a K/V tile's scores -> logits: the masks and the score transform
//   softmax.cuh        logits -> P: the online and the bounded softmax, O's rescale
//   epilogue.cuh       a work tile's end: 1 / l and the LSE, the writes of O, LSE and partials
#pragma once

#include "cta_work.cuh"
#include "epilogue.cuh"
#include "score_program.cuh"
#include "softmax.cuh"
#include "tile_copies.cuh"
