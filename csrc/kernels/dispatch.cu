#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <utility>

#include "combine_kernel.cuh"
#include "dispatch.h"
#include "grid_dependency.cuh"
#include "sm90/cluster_combine.cuh"
#include "split_plan.h"
#include "tma_maps.h"

namespace forge_flash {
namespace {

#define FORGE_FLASH_LIST(D) D,
constexpr int kHeadDims[] = {FORGE_FLASH_FOR_EACH_HEAD_DIM(FORGE_FLASH_LIST)};
#undef FORGE_FLASH_LIST
// Capping a decode call's splits to fit one cluster is taken while each split keeps at most
// this many keys (8k keys over 16 splits); longer caches keep more splits and the combine
// kernel. A cluster of 16 splits puts one CTA per SM, too few K/V loads in flight for long
// splits; since the combine kernel issues all its loads at once, more splits and the combine
// kernel win there: 1024 rather than 4096 took 2% off 32k keys and 3-4% off 64k (H200,
// 2026-12-01, docs/bench-raw/2026-12-01f-h200-cluster-keys-ab.txt), and 512 rather than 1024
// (with hopper_decode_splits' 33 splits behind it) took 1-3% off 16k keys
// (docs/bench-raw/2026-12-02f-h200-decode-splits.txt).
constexpr int kClusterMaxKeysPerSplit = 512;
// Clusters of at most this many splits are taken whatever the grid's CTAs per SM, as long as the
// GPU holds all of them at once (batch 8 and 16 of 8 KV heads, two CTAs per SM: level with or 1%
// ahead of the combine kernel, H200, 2026-12-02).
constexpr int kSmallCluster = 4;
// The workspace of an instance that draws its work tiles: the counter (one int, padded to the
// workspace's 256-byte alignment).
constexpr size_t kTileCounterBytes = 256;
// Hopper prefill over at most this many keys (8 K/V tiles of the head_dim 64/128 kernels) runs
// on the persistent kernel: there each tile's start-up (Q and first K/V loads, the epilogue)
// weighs most, and the next tile's loads hide it (H100, docs/benchmarks.md: 0-26% faster at
// 512-1k keys). Longer K/V keeps a CTA per tile: the hardware hands out tiles as CTAs finish,
// which balances causal work and keeps the resident CTAs on few heads (L2 reuse); static
// persistent schedules measured up to 24% slower there (causal, head_dim 128), and persistent
// TMA-only instances lost on long K/V and on sliding windows three times (docs/benchmarks.md,
// "Tried and lost"; a 4096-key window over 32k tokens ran 3.58x faster than full causal
// attention against 3.9-4.0x, 2026-12-04). Counted in keys, not tiles: a tile's start-up grows
// with head_dim as its work per key does, while the larger head dims use shorter tiles (64-112
// keys). Above head_dim 192, calls whose tensors TMA can
// address take the TMA-only instance instead (plan_fwd's TMA step says why).
constexpr int kPersistentMaxKeys = 1024;
// Hopper decode grids of at least kFullGridCtasPerSm CTAs per SM (as DecodeConfig's CTAs
// count them) over at most kFullGridMaxKeys keys run on CTAs of 3 warps (DecodeFullGridConfig)
// where the head dim has them and they fill their waves better (wave_efficiency, by more than
// 1%: where the last waves are as full, as at 3.3 waves of 4-warp CTAs, they keep 4): at head_dim
// 128 an SM holds 4 of those where it holds 3 of 4 warps, so a grid of 512 CTAs (batch 64 of 8
// KV heads) runs in one wave instead of 1.29; at head_dim 64 it holds 5 where it holds 4.
// Measured on the H200 (2026-12-02, docs/bench-history/2026-12-02.md; 32/8 heads, one query, GPU time): batch
// 64 over 4k keys 250.4 -> 241.5 us (cuDNN 239), over 8k 478 -> 472; head_dim 64, batch 82 over
// 4k keys 175 -> 156 (cuDNN 167). Where they fill their waves worse they lost (head_dim 128,
// batch 48 over 16k keys, 704 against 715; head_dim 64, batch 64 and 128 over 4k keys, 123 and
// 240 against 136 and 246), and over 16k-32k keys DecodeConfig's CTAs with a short last wave
// split 4 ways (hopper_full_grid_splits) stayed 0.6-1.1% ahead (batch 64 over 16k keys 933
// against 939, over 32k 1842 against 1864; batch 128 over 16k 1856 against 1876).
constexpr int kFullGridCtasPerSm = 2;
constexpr int kFullGridMaxKeys = 8192;

template <bool kVariantTable>
FwdKernels table_for(DType dtype, int head_dim) {
#define FORGE_FLASH_CASE(D)                                                 \
  case D:                                                                   \
    return dtype == DType::kFloat16 ? fwd_kernels<half, D, kVariantTable>() \
                                    : fwd_kernels<__nv_bfloat16, D, kVariantTable>();
  switch (head_dim) { FORGE_FLASH_FOR_EACH_HEAD_DIM(FORGE_FLASH_CASE) }
#undef FORGE_FLASH_CASE
  return {};
}

// The kernels of a routed head dim: its table, with the Hopper instances of the table whose
// tiles it runs on (160 and 224: 192's and 256's, sm90_head_dim in kernel_registry.h).
template <bool kVariantTable>
FwdKernels kernels_for(DType dtype, int routed) {
  FwdKernels kernels = table_for<kVariantTable>(dtype, routed);
  const int hopper = sm90_head_dim(routed);
  if (hopper != routed && hopper != 0) kernels.sm90 = table_for<kVariantTable>(dtype, hopper).sm90;
  return kernels;
}

// Keys one query block of `rows` tile rows can see: all of seqlen_k, or its window's band.
int64_t visible_keys(const FwdParams& p, int64_t rows) {
  if (!p.features || p.window_left < 0) return p.seqlen_k;
  const int64_t queries = (rows + p.group - 1) / p.group;
  const int64_t right = p.window_right < 0 ? p.seqlen_k : p.window_right;
  return std::min<int64_t>(p.seqlen_k, p.window_left + queries + right);
}

// K/V by batch row: no paged, indexed or left-padded cache, no fused append (the TMA-only
// variant instances address K/V as the plain kernel does).
bool kv_by_batch_row(const FwdParams& p) {
  return p.block_table == nullptr && p.kv_batch_idx == nullptr && p.k_start == nullptr && p.seqlen_new == 0;
}

// Whether the BandSinks instance (policies.h) serves a variant call: plain scores (no softcap,
// ALiBi or scale <= 0; a window and sinks need none) and K/V by batch row.
bool band_sinks_serves(const FwdParams& p) {
  return p.softcap == 0.f && p.alibi_slopes == nullptr && p.scale > 0.f && kv_by_batch_row(p);
}

// Whether a call's only window is the causal diagonal, if any (the instances without kBand).
bool no_window_but_causal(const FwdParams& p) { return p.window_left < 0 && (p.window_right < 0 || p.is_causal); }

// Whether the AlibiOnly instance (policies.h) serves a variant call: ALiBi over raw scores
// (no softcap; a scale the kernels keep raw scores for: p.score_scale == 1) and nothing else:
// no window but the causal diagonal, no sinks, K/V by batch row.
bool alibi_only_serves(const FwdParams& p) {
  return p.alibi_slopes != nullptr && p.softcap == 0.f && p.score_scale == 1.f && p.scale > 0.f &&
         no_window_but_causal(p) && p.sinks == nullptr && kv_by_batch_row(p);
}

// Whether a call's softcap bounds every base-2 logit to +-softcap_log2 so that a fixed offset
// can stand for the running maximum (FwdParams::bounded_logits; plan_fwd says why): a softcap,
// no ALiBi (its bias is not bounded), bf16 P, softcap_log2 <= 76.
bool softcap_bounds_logits(const FwdParams& p, bool bf16) {
  return p.softcap > 0.f && p.alibi_slopes == nullptr && bf16 && p.softcap_log2 <= 76.f;
}

// Whether the BoundedSoftcap instance (policies.h) serves a variant call: bounded softcap logits,
// perhaps a sliding window, and nothing else: no sinks, K/V by batch row.
bool bounded_softcap_serves(const FwdParams& p, bool bf16) {
  return softcap_bounds_logits(p, bf16) && p.scale > 0.f && p.sinks == nullptr && kv_by_batch_row(p);
}

// Whether the paged TMA twin (fwd_instantiate.cuh, sm90_paged_info) serves a variant call: a
// varlen call over a paged cache whose only variant is the block table: plain scores, no
// window but the causal diagonal, no sinks, no left padding, cache batch index, per-sequence
// key counts or fused append (set_tma_maps checks the page size).
bool paged_tma_serves(const FwdParams& p) {
  return p.block_table != nullptr && p.cu_seqlens_q != nullptr && p.softcap == 0.f && p.alibi_slopes == nullptr &&
         p.scale > 0.f && no_window_but_causal(p) && p.sinks == nullptr && p.kv_batch_idx == nullptr &&
         p.k_start == nullptr && p.seqlen_new == 0 && p.seqused_k == nullptr;
}

// Once per (kernel, device): `compute(device, &value)` runs on the first call, under a lock so
// that attribute changes happen once, and its answer is kept. Each call site (each `compute`
// type) has its own cache. Host-only calls, no sync.
template <class Value, class Compute>
cudaError_t once_per_kernel_and_device(const void* kernel, Compute compute, Value* out) {
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, Value> cache;
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find({kernel, device});
  if (it == cache.end()) {
    Value value{};
    if ((err = compute(device, &value)) != cudaSuccess) return err;
    it = cache.emplace(std::make_pair(kernel, device), value).first;
  }
  *out = it->second;
  return cudaSuccess;
}

// Raises the dynamic shared-memory limit (needed above 48 KB) and reads what the plan needs.
cudaError_t device_facts(const KernelInfo& k, DeviceFacts* out) {
  return once_per_kernel_and_device(
      k.kernel,
      [&](int device, DeviceFacts* facts) {
        cudaError_t err;
        if ((err = cudaDeviceGetAttribute(&facts->sm_count, cudaDevAttrMultiProcessorCount, device))) return err;
        if ((err = cudaDeviceGetAttribute(&facts->cc_major, cudaDevAttrComputeCapabilityMajor, device))) return err;
        if ((err = cudaFuncSetAttribute(k.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, k.smem_bytes)))
          return err;
        if ((err =
                 cudaOccupancyMaxActiveBlocksPerMultiprocessor(&facts->ctas_per_sm, k.kernel, k.threads, k.smem_bytes)))
          return err;
        facts->ctas_per_sm = std::max(facts->ctas_per_sm, 1);
        cudaFuncAttributes attributes{};
        if ((err = cudaFuncGetAttributes(&attributes, k.kernel))) return err;
        facts->sm90_code = attributes.ptxVersion >= 90;
        int l2 = 0;
        if ((err = cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device))) return err;
        facts->l2_bytes = l2;
        return cudaSuccess;
      },
      out);
}

size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// The launch attributes of a decode launch whose splits form one cluster per tile (grid.y =
// cluster.y = splits). Load-balancing placement spreads 8 clusters of 16 over 120 SMs where the
// default (spread) uses 112 (tools/lab/cluster_diag.cu): 1-4% less decode GPU time at 4k-32k keys
// on the H100 (docs/benchmarks.md).
struct ClusterAttributes {
  cudaLaunchAttribute attrs[3]{};
  explicit ClusterAttributes(int splits) {
    attrs[0].id = cudaLaunchAttributeClusterDimension;
    attrs[0].val.clusterDim.x = 1, attrs[0].val.clusterDim.y = static_cast<unsigned>(splits);
    attrs[0].val.clusterDim.z = 1;
    attrs[1].id = cudaLaunchAttributeClusterSchedulingPolicyPreference;
    attrs[1].val.clusterSchedulingPolicyPreference = cudaClusterSchedulingPolicyLoadBalancing;
  }
  void apply(cudaLaunchConfig_t& config, bool programmatic) {
    config.attrs = attrs, config.numAttrs = 2;
    if (programmatic) {  // see launch_fwd
      attrs[2] = programmatic_launch_attribute();
      config.numAttrs = 3;
    }
  }
};

// How many clusters of each size (1 to 16 CTAs; 16 is a non-portable size this kernel opts into)
// of this (decode) kernel the device holds at once, as cudaOccupancyMaxActiveClusters answers;
// 0 where none fits (a partitioned GPU, say). Cached per (kernel, device); called after
// device_facts raised the shared-memory limit.
struct ClusterCapacity {
  int active[kMaxClusterSplits + 1];
};

cudaError_t cluster_capacity(const KernelInfo& k, ClusterCapacity* out) {
  return once_per_kernel_and_device(
      k.kernel,
      [&](int, ClusterCapacity* capacity) {
        const bool non_portable =
            cudaFuncSetAttribute(k.kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess;
        for (int size = 1; size <= kMaxClusterSplits; ++size) {
          capacity->active[size] = 0;
          if (size > 8 && !non_portable) continue;
          cudaLaunchConfig_t config{};
          config.gridDim = dim3(1, size, 1);
          config.blockDim = dim3(k.threads);
          config.dynamicSmemBytes = k.smem_bytes;
          ClusterAttributes cluster(size);
          cluster.apply(config, false);
          int clusters = 0;
          if (cudaOccupancyMaxActiveClusters(&clusters, k.kernel, &config) == cudaSuccess)
            capacity->active[size] = clusters;
        }
        cudaGetLastError();  // a refused query above is an answer, not an error of this call
        return cudaSuccess;
      },
      out);
}

// FORGE_FLASH_DISABLE_SM90=1 keeps Hopper GPUs on the SM80 kernels (an escape hatch, and
// the way to compare the two data paths on one machine). Read once.
bool sm90_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("FORGE_FLASH_DISABLE_SM90");
    return v == nullptr || v[0] == '\0' || v[0] == '0';
  }();
  return enabled;
}

// Whether the Hopper kernel of head_dim's table entry computes it: the kernels of 64 and 128
// only their own head_dim; those of 96, 192 and 256 (also the entries 160 and 224) any smaller
// one too, zero-filling the extra columns (Sm90Config::kPadsHeadDim, sm90_head_dim in
// kernel_registry.h).
bool hopper_runs_head_dim(int head_dim) {
  const int routed = routed_head_dim(head_dim);
  return head_dim == routed || (routed != 64 && routed != 128);
}

// The decode instance of a CTA shape's set that serves this call; null where the set has
// none. The variant tables' instances: the fused K/V append compiled in only where a call
// appends (in the instance every paged call runs, its code, a fifth of the kernel's, took one
// 4k-key sequence in pages of 16 from 12.1 to 12.8 us on the H200); plain scores where no
// score variant. New keys the append kernel already wrote (new_keys_in_cache) need no append
// code.
// A paged decode step whose pages hold each copying lane's rows whole (power-of-two pages
// of at least min_page_size keys, no left padding: pages of 16-256 at head_dim 128) takes
// the PagedKV instance, which compiles that copy alone (2952 SASS instructions at head_dim
// 128, IndexedKV 6392): IndexedKV chooses among the paged copies, strided rows and left
// padding at each tile. One sequence of 4k keys in pages of 16 took 10.5-10.6 -> 10.2-10.3
// us (contiguous 9.8-9.9), batch 64 in ordered pages 257.3 -> 254.9 (contiguous 255.0; H200,
// 2026-12-02, docs/bench-history/2026-12-02.md). Its steps with a K/V append run behind the append kernel
// (ff_attn_fwd_append's two launches, decode_loads_cached_keys_early); a fused PagedKV append
// instance (28 bytes of spills) had taken 0.8 us off one sequence's rotary step but added 1.4
// us at batch 64.
bool takes_whole_pages(const DecodeKernels& set, const FwdParams& p) {
  return set.paged.kernel != nullptr && p.block_table != nullptr && p.k_start == nullptr && p.page_shift >= 0 &&
         p.page_size >= set.paged.min_page_size;
}
const KernelInfo& decode_instance(const DecodeKernels& set, const FwdParams& p) {
  if (p.seqlen_new > 0 && !p.new_keys_in_cache) return p.score_mods ? set.append_mods : set.append;
  if (!p.score_mods && takes_whole_pages(set, p)) return set.paged;
  if (!p.score_mods && set.kv.kernel != nullptr) return set.kv;
  return set.plain;
}

// The CTA shape of a Hopper decode grid of `ctas` CTAs over `keys` keys (tile_config.h): 8 warps
// where takes_wide_decode, 3 warps split to fill one wave where takes_short_wave_split (neither
// with a caller's split count: their steps differ from the 4-warp ones), 3 warps where
// kFullGridCtasPerSm and kFullGridMaxKeys say, else the 4-warp `kernel` it gets. `kernel` and
// `facts` become the chosen instance's; `one_wave` says whether its splits fill one wave of
// it (one_wave_splits). One wave of 8-warp CTAs never holds more than one of 4-warp CTAs, so
// larger grids skip that query.
cudaError_t hopper_decode_shape(const FwdKernels& kernels, const FwdParams& p, int64_t ctas, int64_t keys,
                                KernelInfo* kernel, DeviceFacts* facts, bool* one_wave) {
  cudaError_t err = cudaSuccess;
  DeviceFacts other{};
  const KernelInfo& wide_kernel = decode_instance(kernels.decode_wide, p);
  if (wide_kernel.kernel != nullptr && p.requested_splits == 0 &&
      ctas <= static_cast<int64_t>(facts->sm_count) * facts->ctas_per_sm) {
    if ((err = device_facts(wide_kernel, &other))) return err;
    const bool row_pages = p.block_table != nullptr && wide_kernel.kernel == kernels.decode_wide.kv.kernel;
    if (takes_wide_decode(ctas, keys, other, wide_kernel.threads / 32, kernel->threads / 32, row_pages)) {
      *kernel = wide_kernel, *facts = other, *one_wave = true;
      return cudaSuccess;
    }
  }
  const KernelInfo& full_grid = decode_instance(kernels.decode_full_grid, p);
  if (full_grid.kernel != nullptr && p.requested_splits == 0 && takes_short_wave_split(ctas, keys, facts->sm_count)) {
    if ((err = device_facts(full_grid, &other))) return err;
    *kernel = full_grid, *facts = other, *one_wave = true;
    return cudaSuccess;
  }
  if (full_grid.kernel != nullptr && ctas >= kFullGridCtasPerSm * facts->sm_count && keys <= kFullGridMaxKeys) {
    if ((err = device_facts(full_grid, &other))) return err;
    if (wave_efficiency(ctas, other) > 1.01 * wave_efficiency(ctas, *facts)) *kernel = full_grid, *facts = other;
  }
  return cudaSuccess;
}

}  // namespace

int routed_head_dim(int head_dim) {
  for (int d : kHeadDims)
    if (head_dim <= d) return d;
  return 0;
}

bool decode_loads_cached_keys_early(const FwdParams& p, DType dtype) {
  if (!p.features) return true;  // the plain tables' instance: dense K/V, plain scores
  const int routed = routed_head_dim(p.head_dim);
  return routed != 0 && !p.score_mods && takes_whole_pages(kernels_for<true>(dtype, routed).decode, p);
}

bool append_pushes_decode_wave(const FwdPlan& plan, int64_t append_ctas) {
  const int64_t ctas = static_cast<int64_t>(plan.grid.x) * plan.grid.y * plan.grid.z;
  return append_pushes_wave(ctas, plan.resident_ctas, append_ctas);
}

const char* plan_fwd(FwdParams& p, DType dtype, FwdPlan* plan, cudaError_t* cuda_error) {
  *cuda_error = cudaSuccess;
  const int routed = routed_head_dim(p.head_dim);
  const FwdKernels kernels = p.features ? kernels_for<true>(dtype, routed) : kernels_for<false>(dtype, routed);
  if (kernels.prefill.kernel == nullptr) return "no kernel for this head_dim";
  p.group = p.num_heads / p.num_heads_k;

  // Decode-shaped calls fold a GQA group's query heads into the rows of one tile, so K/V
  // are read once per group and the tensor cores see group * seqlen_q rows instead of 1.
  const int64_t packed_rows = static_cast<int64_t>(p.seqlen_q) * p.group;
  p.pack_gqa = p.group > 1 && packed_rows <= kernels.prefill.block_m;
  const int64_t rows = p.pack_gqa ? packed_rows : p.seqlen_q;
  const bool decode = rows <= kernels.decode.plain.block_m;
  plan->decode = decode;
  plan->kernel = decode ? decode_instance(kernels.decode, p) : kernels.prefill;

  DeviceFacts facts{};
  if ((*cuda_error = device_facts(plan->kernel, &facts)) != cudaSuccess) return "device query failed";

  const int64_t m_blocks = std::max<int64_t>(1, (rows + plan->kernel.block_m - 1) / plan->kernel.block_m);
  const int64_t heads = p.pack_gqa ? p.num_heads_k : p.num_heads;
  const int64_t ctas = m_blocks * p.batch * heads;
  if (ctas > INT_MAX) return "batch * heads * query blocks exceeds the launch grid (2^31 - 1)";
  plan->num_m_blocks = static_cast<int>(m_blocks);
  const bool hopper_decode = decode && facts.cc_major == 9 && facts.sm90_code && sm90_enabled();
  // Splits hand out whole steps of the kernel's kv_tiles_per_step tiles (cta_work), of the
  // keys a query block sees (a window's band: cta_work splits the band, not seqlen_k).
  const int64_t keys = visible_keys(p, std::min<int64_t>(rows, plan->kernel.block_m));
  bool one_wave = false;
  if (hopper_decode &&
      (*cuda_error = hopper_decode_shape(kernels, p, ctas, keys, &plan->kernel, &facts, &one_wave)) != cudaSuccess)
    return "device query failed";
  plan->resident_ctas = static_cast<int64_t>(facts.sm_count) * facts.ctas_per_sm;

  const int n_blocks = static_cast<int>((keys + plan->kernel.block_n - 1) / plan->kernel.block_n) +
                       (keys < p.seqlen_k ? 1 : 0);  // a band may straddle one more tile
  const int step_keys = plan->kernel.block_n * plan->kernel.kv_tiles_per_step;
  const int n_steps = (n_blocks + plan->kernel.kv_tiles_per_step - 1) / plan->kernel.kv_tiles_per_step;
  p.num_splits = grid_splits(ctas, n_steps, keys, facts, hopper_decode, one_wave);
  // Hopper: single-pass prefill at head_dim 64, 96, 128, 192, 256 runs on the warp-specialised
  // wgmma kernel, persistent when the keys a query block sees are few (and a persistent
  // variant exists). A grid split for the SM80 kernel stays unsplit where the Hopper grid fills
  // enough of the GPU (hopper_prefill_unsplit).
  const bool short_kv =
      kernels.sm90.persistent.kernel != nullptr && visible_keys(p, kernels.sm90.plain.block_m) <= kPersistentMaxKeys;
  const KernelInfo& hopper = short_kv ? kernels.sm90.persistent : kernels.sm90.plain;
  DeviceFacts hopper_facts{};
  if (plan->kernel.kernel == kernels.prefill.kernel && hopper.kernel != nullptr && hopper_runs_head_dim(p.head_dim) &&
      facts.cc_major == 9 && sm90_enabled() && (*cuda_error = device_facts(hopper, &hopper_facts)) != cudaSuccess)
    return "device query failed";
  const bool hopper_prefill = hopper_facts.sm90_code;  // queried above only where the Hopper kernel applies
  const int64_t hopper_m_blocks = hopper_prefill ? (rows + hopper.block_m - 1) / hopper.block_m : 0;
  const int64_t hopper_ctas = hopper_m_blocks * p.batch * heads;
  // The plain launch may become a TMA-only instance, whose query blocks may be taller (head_dim
  // 64, and 96 non-causal: 192 rows): its grid, the smaller, is the one that must fill the GPU.
  int tallest_m = hopper.block_m;
  if (!short_kv) tallest_m = std::max(tallest_m, kernels.sm90.tma.block_m);
  if (!short_kv && !p.is_causal) tallest_m = std::max(tallest_m, kernels.sm90.tma_non_causal.block_m);
  const int64_t fewest_ctas = hopper_prefill ? (rows + tallest_m - 1) / tallest_m * p.batch * heads : 0;
  // How the unsplit grid would load K/V: paged calls the PagedKV twin serves through maps over
  // the pages (where its tiles take the pages: paged_boxes.h, the rule set_tma_maps checks too),
  // other tables' rows by copies.
  const bool paged_twin = kernels.sm90.tma_paged.kernel != nullptr && paged_tma_serves(p) &&
                          paged_boxes_fit(p.page_size, kernels.sm90.tma_paged.block_n);
  const KvLoads kv_loads = kv_by_batch_row(p) ? KvLoads::kMaps
                           : paged_twin       ? KvLoads::kPagedMaps
                                              : KvLoads::kCopiedRows;
  if (hopper_prefill && p.num_splits > 1 &&
      hopper_prefill_unsplit(fewest_ctas, hopper_facts.sm_count, short_kv, p.head_dim, kv_loads))
    p.num_splits = 1;
  // The caller's count (FlashAttention's num_splits), as whole steps per split, none empty.
  if (p.requested_splits > 0) p.num_splits = whole_step_splits(p.requested_splits, n_steps);
  // Hopper decode: the splits of a tile merge inside their cluster (sm90/cluster_combine.cuh),
  // one launch and no workspace. Clusters hold at most 16 splits; past that, capping the split
  // count is worth it only while each split keeps few keys (short caches). And only while the
  // GPU holds every tile's cluster at once: in two waves of clusters a batched decode ran 5-12%
  // slower than on the combine kernel (H100, docs/benchmarks.md). Clusters of more than 4 splits
  // also only while the grid keeps one CTA per SM: at two per SM (batch 2, 4 of 8 KV heads) the
  // combine kernel beat clusters of 16 and 8 by 4-7% at 8k-64k keys (H200, 2026-12-02,
  // docs/bench-raw/2026-12-02f-h200-decode-splits.txt).
  p.cluster_combine = false;
  if (p.num_splits > 1 && hopper_decode) {
    ClusterCapacity capacity{};
    if ((*cuda_error = cluster_capacity(plan->kernel, &capacity)) != cudaSuccess) return "device query failed";
    int max_splits = kMaxClusterSplits;
    while (max_splits > 0 && capacity.active[max_splits] == 0) --max_splits;
    const int splits = whole_step_splits(std::min(p.num_splits, max_splits), n_steps);
    const int per_split = (n_steps + splits - 1) / splits;  // steps per split
    const bool small_cluster = p.num_splits <= kSmallCluster;
    const bool one_per_sm =
        ctas * splits <= facts.sm_count && static_cast<int64_t>(per_split) * step_keys <= kClusterMaxKeysPerSplit;
    const bool keeps_count = p.requested_splits == 0 || splits == p.num_splits;  // a caller's count stays
    if (splits > 1 && keeps_count && ctas <= capacity.active[splits] && (small_cluster || one_per_sm)) {
      p.num_splits = splits;
      p.cluster_combine = true;
    }
  }
  int64_t grid_x = static_cast<int64_t>(plan->num_m_blocks) * p.batch * heads;
  if (p.num_splits == 1 && hopper_prefill && hopper_ctas <= INT_MAX) {
    plan->kernel = hopper;
    plan->num_m_blocks = static_cast<int>(hopper_m_blocks);
    grid_x = hopper_ctas;
    if (hopper.kernel == kernels.sm90.persistent.kernel)
      grid_x = std::min<int64_t>(grid_x, static_cast<int64_t>(hopper_facts.sm_count) * hopper_facts.ctas_per_sm);
  }
  // TMA: the tensor maps of the chosen Hopper kernel's boxes, where the call's layout lets
  // them encode. There the plain launch becomes the TMA-only instance (its own tiles and
  // consumer registers: sm90/tile_config.cuh, Sm90Tiles); the persistent kernel loads
  // through either, except above head_dim 192: there the TMA-only instance (80-key tiles,
  // 240 consumer registers) beats the persistent one (64 keys, 224) also over short K/V,
  // by 14% non-causal and 40% causal at 1k tokens of head_dim 256 (H200,
  // docs/bench-raw/2026-12-01c-h200-persistent-vs-tma-only-ab.txt; at head_dim 64-128 the
  // persistent kernel stays 2-30% ahead there; 192 was not measured).
  // A variant call whose only variants are a sliding window and/or sinks takes the BandSinks
  // instance (band_sinks_serves), one whose only variant is ALiBi the AlibiOnly instance
  // (alibi_only_serves): the plain score program (plus ALiBi's multiply-add per score) and the
  // plain instance's wider tiles (the measurements at Sm90Tiles and in docs/benchmarks.md). A
  // bf16 call whose only variants are a softcap and perhaps a window takes the BoundedSoftcap
  // instance where the table has one (head_dim 64-128: three consumers; bounded_softcap_serves).
  // A non-causal call takes the plain table's non-causal instance where there is one (head_dim
  // 96: 3 consumers, P through shared memory; Sm90Tiles). A varlen call of the plain table takes
  // the TMA-only instance's kPackedSeqs twin (maps over the packed tensors), and one planned on
  // the persistent kernel that one's twin, where the maps encode (every plain table has them:
  // fwd_instantiate.cuh, sm90_packed_info).
  p.tma = false;
  if (plan->kernel.tma_swizzle > 0) {
    const bool packed = p.cu_seqlens_q != nullptr && !paged_twin;
    const bool band_sinks = kernels.sm90.tma_band_sinks.kernel != nullptr && band_sinks_serves(p);
    const bool alibi_only = kernels.sm90.tma_alibi.kernel != nullptr && alibi_only_serves(p);
    const bool softcap =
        kernels.sm90.tma_softcap.kernel != nullptr && bounded_softcap_serves(p, dtype == DType::kBFloat16);
    const bool non_causal = !p.is_causal && kernels.sm90.tma_non_causal.kernel != nullptr;
    // A paged call takes the twin's wide instance where its fewer, taller query blocks pay
    // (takes_paged_wide, split_plan.h; head_dim 64 and 96).
    const KernelInfo& wide = kernels.sm90.tma_paged_wide;
    const int64_t batch_heads = p.batch * heads;
    const bool paged_wide =
        paged_twin && wide.kernel != nullptr && paged_boxes_fit(p.page_size, wide.block_n) &&
        takes_paged_wide((rows + kernels.sm90.tma_paged.block_m - 1) / kernels.sm90.tma_paged.block_m * batch_heads,
                         (rows + wide.block_m - 1) / wide.block_m * batch_heads, hopper_facts.sm_count, p.is_causal,
                         keys, p.head_dim, p.page_size);
    const KernelInfo& tma_kernel = paged_wide   ? wide
                                   : paged_twin ? kernels.sm90.tma_paged
                                   : packed     ? kernels.sm90.tma_packed
                                   : band_sinks ? kernels.sm90.tma_band_sinks
                                   : alibi_only ? kernels.sm90.tma_alibi
                                   : softcap    ? kernels.sm90.tma_softcap
                                   : non_causal ? kernels.sm90.tma_non_causal
                                                : kernels.sm90.tma;
    // A paged call planned on the persistent kernel (short keys) takes the twin's persistent
    // instance (its CTAs draw the work tiles) where it pays (takes_paged_persistent, split_plan.h);
    // else the twin's plain launch: the persistent kernel would copy its pages row by row. Over
    // 512-1k keys in pages of 16 the twin ran 1.18-2.03x the persistent kernel's copies (level at
    // head_dim 64, causal, 512 keys; H100, session 64, docs/benchmarks.md).
    const bool persistent = plan->kernel.kernel == kernels.sm90.persistent.kernel;
    const KernelInfo& paged_persistent = kernels.sm90.persistent_paged;
    const bool persistent_paged = paged_twin && persistent && paged_persistent.kernel != nullptr &&
                                  takes_paged_persistent(sm90_head_dim(routed)) &&
                                  paged_boxes_fit(p.page_size, paged_persistent.block_n);
    const bool tma_only =
        tma_kernel.kernel != nullptr && !persistent_paged &&
        (plan->kernel.kernel == kernels.sm90.plain.kernel || (persistent && (p.head_dim > 192 || paged_twin)));
    // A varlen call planned on the persistent kernel takes its kPackedSeqs twin (the same tiles,
    // blocks and grid, loading through maps over the packed tensors) where the table has one.
    const bool persistent_packed =
        packed && !tma_only && persistent && kernels.sm90.persistent_packed.kernel != nullptr;
    const KernelInfo& k = tma_only            ? tma_kernel
                          : persistent_packed ? kernels.sm90.persistent_packed
                          : persistent_paged  ? paged_persistent
                                              : plan->kernel;
    const bool bf16 = dtype == DType::kBFloat16;
    // A paged call's maps serve the twin's instances alone (the persistent kernel copies its pages).
    const KvMaps kv = paged_twin                                  ? KvMaps::kPaged
                      : packed && (tma_only || persistent_packed) ? KvMaps::kPacked
                                                                  : KvMaps::kDense;
    const bool maps = (!paged_twin || tma_only || persistent_paged) && set_tma_maps(p, bf16, k, kv);
    if (maps && (tma_only || persistent_packed || persistent_paged)) {
      DeviceFacts tma_facts{};  // also raises the kernel's shared-memory limit
      if ((*cuda_error = device_facts(k, &tma_facts)) != cudaSuccess) return "device query failed";
      plan->kernel = k;
      if (tma_only || persistent_paged) {  // its own query blocks (head_dim 64: maybe 192 rows)
        plan->num_m_blocks = static_cast<int>((rows + k.block_m - 1) / k.block_m);
        grid_x = static_cast<int64_t>(plan->num_m_blocks) * p.batch * heads;
        if (persistent_paged)  // as many CTAs as the SMs hold of it, drawing the work tiles
          grid_x = std::min(grid_x, static_cast<int64_t>(tma_facts.sm_count) * tma_facts.ctas_per_sm);
      }
    }
  }
  // Softcap bounds every base-2 logit to +-softcap_log2 (ALiBi's bias would not be bounded).
  // A fixed offset in place of the running maximum then keeps 2^(logit - offset) within
  // [2^-120, 2^32]: normal in fp32 and bf16 (not fp16, whose P holds 2^-14..2^15), and far
  // from overflowing O's fp32 sums. That holds while softcap_log2 <= 76 (softcap <= 52.7).
  p.bounded_logits =
      (plan->kernel.kernel == kernels.sm90.plain.kernel || plan->kernel.kernel == kernels.sm90.tma.kernel ||
       plan->kernel.kernel == kernels.sm90.tma_softcap.kernel) &&
      softcap_bounds_logits(p, dtype == DType::kBFloat16);
  p.logit_offset = std::min(p.softcap_log2, 120.f - p.softcap_log2);
  p.num_rows = p.cu_seqlens_q != nullptr ? static_cast<int64_t>(p.num_heads) * p.total_q
                                         : static_cast<int64_t>(p.batch) * p.num_heads * p.seqlen_q;
  // The divisors of cta_work and row_target, now that the query blocks are final.
  p.rows_per_query = FastDiv(p.pack_gqa ? p.group : 1);
  p.heads_per_kv = FastDiv(p.group);
  p.cta_heads = FastDiv(static_cast<int>(heads));
  p.m_blocks = FastDiv(plan->num_m_blocks);
  p.causal_group_tiles =
      FastDiv(static_cast<int>(std::min<int64_t>(int64_t{kCausalHeadGroup} * plan->num_m_blocks, INT_MAX)));
  // A causal call on the persistent kernel, dense or drawing its tiles (varlen): its tiles by
  // height where orders_causal_tiles_by_height. Drawn tiles go by height alone (the counter, not
  // a stride, deals them: one "round"). By tools/lab/varlen_schedule_model.py --causal, a tile
  // counter read a tile ahead keeps the CTAs busy for 0.95 / 0.60 of a batch of 8 sequences of
  // 66-609 tokens (head_dim 64 / 128) by height against 0.70 / 0.57 in the grouped order, and
  // 0.99 / 0.98 against 0.92 / 0.84 for 27 of 65-1017 (not measured yet).
  const int64_t tiles = static_cast<int64_t>(plan->num_m_blocks) * p.batch * heads;
  const int64_t kv_bytes = round_kv_bytes(p.cu_seqlens_q != nullptr, p.block_table != nullptr, p.total_k, p.batch,
                                          p.seqlen_k, p.num_heads_k, p.head_dim);
  const bool drawn = plan->kernel.draws_tiles;
  p.causal_by_height =
      p.is_causal && (drawn || (p.cu_seqlens_q == nullptr && plan->kernel.kernel == kernels.sm90.persistent.kernel)) &&
      orders_causal_tiles_by_height(tiles, grid_x, kv_bytes, hopper_facts);
  if (p.causal_by_height) {  // read only then: other calls' plans skip the divisions' set-up
    const int64_t round = drawn ? tiles : grid_x;
    p.causal_round = FastDiv(static_cast<int>(round));
    p.causal_pairs = FastDiv(static_cast<int>(std::min<int64_t>(p.batch * heads, INT_MAX)));
    p.causal_last_round = static_cast<int>(std::max<int64_t>(tiles - 1, 0) / std::max<int64_t>(round, 1));
  }
#ifdef FORGE_FLASH_TRACE  // a diagnostic build (trace.cuh): the stamps' buffer, a device address
  if (const char* buffer = std::getenv("FORGE_FLASH_TRACE_BUFFER"))
    p.trace = reinterpret_cast<unsigned long long*>(std::strtoull(buffer, nullptr, 10));
#endif
  plan->programmatic_capable = facts.cc_major >= 9 && (facts.sm90_code || plan->kernel.kernel == hopper.kernel);
  plan->programmatic = false;
  plan->grid = dim3(static_cast<unsigned>(grid_x), static_cast<unsigned>(p.num_splits), 1);
  plan->workspace_bytes = plan->kernel.draws_tiles ? kTileCounterBytes : 0;  // never split
  if (p.num_splits > 1 && !p.cluster_combine) {
    const size_t partials = static_cast<size_t>(p.num_splits) * p.num_rows;
    plan->workspace_bytes = align_up(partials * p.head_dim * sizeof(float), 256) + partials * sizeof(float);
    if (p.num_rows > INT_MAX) return "too many output rows for the combine grid";
  }
  return nullptr;
}

// The split-KV combine kernel of a dtype, with the chunk launch_fwd picks.
template <typename T>
const void* combine_kernel_for(bool short_chunk) {
  return short_chunk ? reinterpret_cast<const void*>(&combine_kernel<T, kCombineShortChunk>)
                     : reinterpret_cast<const void*>(&combine_kernel<T, kCombineLongChunk>);
}

cudaError_t launch_fwd(FwdParams& p, DType dtype, const FwdPlan& plan, void* workspace, cudaStream_t stream) {
  int num_m_blocks = plan.num_m_blocks;
  void* args[] = {&p, &num_m_blocks};
  // A programmatic launch may start while the previous kernel in the stream (the K/V append)
  // still runs: every forward kernel waits for it (wait_for_previous_grid) before it touches
  // memory, so only its launch and start overlap that kernel's tail.
  const bool programmatic = plan.programmatic && plan.programmatic_capable;
  if (p.cluster_combine) {  // grid.y = cluster.y = splits: one cluster per tile
    cudaLaunchConfig_t config{};
    config.gridDim = plan.grid, config.blockDim = dim3(plan.kernel.threads);
    config.dynamicSmemBytes = plan.kernel.smem_bytes, config.stream = stream;
    ClusterAttributes cluster(p.num_splits);
    cluster.apply(config, programmatic);
    return cudaLaunchKernelExC(&config, plan.kernel.kernel, args);
  }
  p.tile_counter = nullptr;
  if (plan.kernel.draws_tiles) {  // the kernel's walk starts the count at 0
    p.tile_counter = static_cast<int*>(workspace);
    const cudaError_t err = cudaMemsetAsync(workspace, 0, sizeof(int), stream);
    if (err != cudaSuccess) return err;
  }
  if (p.num_splits > 1) {
    const size_t partials = static_cast<size_t>(p.num_splits) * p.num_rows;
    p.partial_o = static_cast<float*>(workspace);
    p.partial_lse =
        reinterpret_cast<float*>(static_cast<char*>(workspace) + align_up(partials * p.head_dim * sizeof(float), 256));
  }
  const cudaError_t err = launch_kernel(plan.kernel.kernel, plan.grid, dim3(plan.kernel.threads),
                                        plan.kernel.smem_bytes, stream, args, programmatic);
  if (err != cudaSuccess || p.num_splits == 1) return err;
  // The combine kernel: programmatic where the GPU has it, so that its launch and CTA placement
  // overlap the split kernel's tail (the decode kernel lets it launch once all its CTAs run).
  const bool short_chunk = p.num_splits <= kCombineShortChunk * combine_groups(p.head_dim);
  const void* combine =
      dtype == DType::kFloat16 ? combine_kernel_for<half>(short_chunk) : combine_kernel_for<__nv_bfloat16>(short_chunk);
  void* combine_args[] = {&p};
  return launch_kernel(combine, dim3(static_cast<unsigned>(p.num_rows)), dim3(kCombineThreads), 0, stream, combine_args,
                       plan.programmatic_capable);
}

}  // namespace forge_flash
