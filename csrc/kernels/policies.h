// The compile-time policies a forward kernel instance is built from. Every kernel (SM80
// prefill, decode, the Hopper wgmma kernel) takes one `Policies` type and asks it with
// `if constexpr`, so an instance compiles only the code of the policies it holds and a call
// pays nothing for a variant it does not use. The mainloops stay one program each; the
// policies decide what happens at their named points (cta_work.cuh, tile_copies.cuh,
// score_program.cuh):
//
//   K/V addressing  where a sequence's keys are (sequence_extent, k_base, load_kv):
//                   strided rows and varlen offsets; with kIndexedKV also paged blocks
//                   through a block table, a cache batch index, left padding and the lengths
//                   of a fused append; with kPagesOnly (decode) only paged blocks whose pages
//                   hold each copying lane's rows whole (PagedKV).
//   mask            which K/V tiles a query block visits and which scores it masks
//                   (cta_work, tile_facts, scores_to_logits): the causal diagonal
//                   (bottom-right) and the sequence end; with kBand the sliding window's band
//                   (causal is its right edge at 0), whose outside tiles are never visited.
//   score transform what a score becomes before the softmax (score_mod): the scale, folded
//                   into the exponent; with kScoreMods also softcap, ALiBi and any scale, as
//                   base-2 logits. With kAlibiOnly (the Hopper kernel) ALiBi alone over raw
//                   scores: one multiply-add per score on a tile whose keys lie on one side of
//                   every row's diagonal (alibi_scores), and the plain kernel's wider tiles.
//   sinks           with kSinks, a per-head sink logit joins each row's softmax denominator
//                   once (finish_rows, the split merges).
//
// The host picks an instance by what a call uses (dispatch.cu): the plain tables hold Plain
// instances, the variant tables AllVariants, IndexedKV for decode steps over paged or indexed
// caches with plain scores (PagedKV where every lane's rows lie in one page), BandSinks for a
// Hopper prefill whose only variants are a sliding window and/or sinks over dense K/V,
// AlibiOnly for one whose only variant is ALiBi (both take the plain kernel's wider tiles), and
// BoundedSoftcap for a bf16 one whose only variants are a softcap and perhaps a sliding window
// (head_dim 64, 96 and 128).
#pragma once

#include <type_traits>

namespace forge_flash {

template <bool kIndexedKV_, bool kBand_, bool kScoreMods_, bool kSinks_, bool kAlibiOnly_ = false,
          bool kPagesOnly_ = false>
struct Policies {
  static constexpr bool kIndexedKV = kIndexedKV_;
  static constexpr bool kPagesOnly = kPagesOnly_;
  static_assert(!kPagesOnly || kIndexedKV, "whole pages are one kind of indexed K/V");
  static constexpr bool kBand = kBand_;
  static constexpr bool kScoreMods = kScoreMods_;
  static constexpr bool kSinks = kSinks_;
  static constexpr bool kAlibiOnly = kAlibiOnly_;
  static_assert(!(kAlibiOnly && kScoreMods), "ALiBi alone is the score transform of raw scores");
  static constexpr bool kAlibi = kScoreMods || kAlibiOnly;  // ALiBi slopes may be set
  static constexpr bool kAny = kIndexedKV || kBand || kScoreMods || kSinks || kAlibiOnly;
  static constexpr bool kBoundedSoftcap = false;  // see BoundedSoftcap
};

using Plain = Policies<false, false, false, false>;
using IndexedKV = Policies<true, false, false, false>;
// A block table of power-of-two pages of at least DecodeTileConfig::kLaneRows keys, no left
// padding: each copying lane's rows in one page (dispatch.cu says why it is an instance); in the
// Hopper prefill's paged twin (fwd_instantiate.cuh, sm90_paged_info) each TMA box within one page.
using PagedKV = Policies<true, false, false, false, false, true>;
using BandSinks = Policies<false, true, false, true>;
using AllVariants = Policies<true, true, true, true>;
using AlibiOnly = Policies<false, false, false, false, true>;
// A softcap, with or without a sliding window (Gemma 2's local layers), over dense K/V, with bf16
// P (the Hopper TMA-only instance of such calls at head_dim 64-128: Sm90Tiles says why it has
// three consumers). Its logits are bounded, so it compiles the bounded softmax alone
// (softmax.cuh): no running maximum, no ALiBi. A type of its own rather than another template
// flag, so that the other instances keep their names.
struct BoundedSoftcap : Policies<false, true, true, false> {
  static constexpr bool kBoundedSoftcap = true;
  static constexpr bool kAlibi = false;
};

// The policies of a kernel table: plain, or the variant table's full set.
template <bool kVariantTable>
using TablePolicies = typename std::conditional<kVariantTable, AllVariants, Plain>::type;

}  // namespace forge_flash
