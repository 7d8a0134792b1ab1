// Flash-style attention on CUDA cores (float32 FMA; online softmax in float32, base-2 exponent with
// the scale and log2(e) folded into the queries). Two kernels:
//  - tiled (prefill, encoder): a block takes 32 queries of one (batch row, head), eight warps of
//    four queries each, and walks 32-key tiles of keys and values staged in shared memory as
//    float32. In the score step lane j owns key j (rows padded by 4 floats so the 16-byte reads
//    of 32 different rows hit distinct banks); in the P V step lane owns dims lane + 32 c.
//    Tiles whose keys are all hidden by key_mask are skipped, and the walk stops at the block's
//    causal horizon.
//  - decode (q_len <= 4): keys split across blocks (256 per block) and, inside a block, across
//    warps and lane groups; each group of head_dim / 8 lanes (rounded up to a power of two) holds
//    one key row as 16-byte loads. Partial (max, sum, accumulator) triples are merged in shared
//    memory, then across blocks by a second kernel through the caller's workspace; without one
//    (or one too small), a single 16-warp block per query does the whole row.
// Hidden keys never reach the arithmetic: their scores are replaced (not added to) and their
// values are zeroed while staging, or skipped where the causal mask hides them, so NaN in a hidden
// key or value cannot leak.

#include <cuda_bf16.h>

#include <cmath>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/kernels.h"

namespace qwen2audio::kernels::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr unsigned kFullMask = 0xffffffffu;

constexpr int kTileKeys = 32;
constexpr int kTiledWarps = 8;
constexpr int kQueriesPerWarp = 4;
constexpr int kBlockQueries = kTiledWarps * kQueriesPerWarp;

constexpr int kDecodeMaxQueries = 4;
constexpr int kDecodeWarps = 4;
constexpr int kFallbackDecodeWarps = 16;
constexpr int64_t kDecodeChunk = 256;
constexpr int64_t kMaxSplits = 64;
constexpr int kMaxHeadDim = 256;

struct Params {
  int64_t q_len, kv_len, num_heads, head_dim, group;
  const float* q;
  int64_t q_batch_stride, q_row_stride;
  const bf16* k;
  const bf16* v;
  int64_t kv_batch_stride, kv_head_stride, kv_row_stride;
  bf16* out;
  int64_t out_batch_stride, out_row_stride;
  float scale_log2;
  bool causal;
  bool vector_kv;  // 16-byte aligned key/value rows: read 8 BF16 at a time
  const uint8_t* key_mask;
  int64_t key_mask_stride;
};

__device__ inline bool key_visible(const Params& p, int64_t b, int64_t s) {
  return s < p.kv_len && (p.key_mask == nullptr || p.key_mask[b * p.key_mask_stride + s] != 0);
}

__device__ inline void load8(const bf16* source, bool vector, float* target) {
  if (vector) {
    const uint4 raw = *reinterpret_cast<const uint4*>(source);
    const __nv_bfloat162* pairs = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 pair = __bfloat1622float2(pairs[i]);
      target[2 * i] = pair.x;
      target[2 * i + 1] = pair.y;
    }
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) target[i] = __bfloat162float(source[i]);
  }
}

// ---- tiled kernel -----------------------------------------------------------------------------------

size_t tiled_shared_bytes(int64_t head_dim) {
  return sizeof(float) *
         static_cast<size_t>(kBlockQueries * head_dim + kTileKeys * (head_dim + 4) + kTileKeys * head_dim);
}

// acc[i][c] += p_ij v[j][lane + 32 c] over the tile's keys. kGuard skips keys whose weight is zero
// (causally hidden ones, on tiles that straddle the diagonal) so that their values are never read
// into the sum.
template <int NC, bool kGuard>
__device__ inline void accumulate_values(const float* v_tile, int head_dim, int keys,
                                         const float (&prob)[kQueriesPerWarp], float (&acc)[kQueriesPerWarp][NC]) {
  const int lane = threadIdx.x & 31;
  for (int j = 0; j < keys; ++j) {
    const float* v_row = v_tile + j * head_dim;
    float value[NC];
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int d = lane + 32 * c;
      value[c] = d < head_dim ? v_row[d] : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < kQueriesPerWarp; ++i) {
      const float weight = __shfl_sync(kFullMask, prob[i], j);
      if (kGuard && weight == 0.0f) continue;
#pragma unroll
      for (int c = 0; c < NC; ++c) acc[i][c] = fmaf(weight, value[c], acc[i][c]);
    }
  }
}

template <int NC>
__global__ void __launch_bounds__(kTiledWarps * 32) attention_tiled_kernel(Params p) {
  extern __shared__ float4 shared_storage[];
  const int head_dim = static_cast<int>(p.head_dim);
  const int k_stride = head_dim + 4;
  float* q_tile = reinterpret_cast<float*>(shared_storage);  // [kBlockQueries][head_dim]
  float* k_tile = q_tile + kBlockQueries * head_dim;         // [kTileKeys][head_dim + 4]
  float* v_tile = k_tile + kTileKeys * k_stride;             // [kTileKeys][head_dim]

  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kBlockQueries;
  const int64_t h = blockIdx.y, b = blockIdx.z;
  const int64_t g = h / p.group;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t offset = p.kv_len - p.q_len;  // causal: query t sits at key index offset + t

  for (int e = tid; e < kBlockQueries * head_dim; e += blockDim.x) {
    const int64_t t = q0 + e / head_dim;
    const int d = e % head_dim;
    q_tile[e] = t < p.q_len ? p.q[b * p.q_batch_stride + t * p.q_row_stride + h * head_dim + d] * p.scale_log2 : 0.0f;
  }

  const int64_t last_query = min(p.q_len, q0 + kBlockQueries) - 1;
  const int64_t key_end = p.causal ? min(p.kv_len, offset + last_query + 1) : p.kv_len;
  const bf16* k_base = p.k + b * p.kv_batch_stride + g * p.kv_head_stride;
  const bf16* v_base = p.v + b * p.kv_batch_stride + g * p.kv_head_stride;
  const int chunks = head_dim / 8;

  float acc[kQueriesPerWarp][NC];
  float running_max[kQueriesPerWarp], running_sum[kQueriesPerWarp];  // running_sum: this lane's share
#pragma unroll
  for (int i = 0; i < kQueriesPerWarp; ++i) {
    running_max[i] = -INFINITY;
    running_sum[i] = 0.0f;
#pragma unroll
    for (int c = 0; c < NC; ++c) acc[i][c] = 0.0f;
  }
  const int64_t warp_first_query = q0 + warp * kQueriesPerWarp;

  for (int64_t tile0 = 0; tile0 < key_end; tile0 += kTileKeys) {
    __syncthreads();  // the previous tile is consumed (and, the first time, the queries are staged)
    int any_visible = 0;
    for (int u = tid; u < kTileKeys * chunks; u += blockDim.x) {
      const int key = u / chunks, d8 = (u % chunks) * 8;
      const int64_t s = tile0 + key;
      float k_values[8], v_values[8];
      if (s < key_end && key_visible(p, b, s)) {
        load8(k_base + s * p.kv_row_stride + d8, p.vector_kv, k_values);
        load8(v_base + s * p.kv_row_stride + d8, p.vector_kv, v_values);
        any_visible = 1;
      } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) k_values[i] = v_values[i] = 0.0f;
      }
      float4* k_target = reinterpret_cast<float4*>(k_tile + key * k_stride + d8);
      float4* v_target = reinterpret_cast<float4*>(v_tile + key * head_dim + d8);
      k_target[0] = make_float4(k_values[0], k_values[1], k_values[2], k_values[3]);
      k_target[1] = make_float4(k_values[4], k_values[5], k_values[6], k_values[7]);
      v_target[0] = make_float4(v_values[0], v_values[1], v_values[2], v_values[3]);
      v_target[1] = make_float4(v_values[4], v_values[5], v_values[6], v_values[7]);
    }
    if (!__syncthreads_or(any_visible)) continue;

    // Scores: lane owns key tile0 + lane.
    const int64_t s = tile0 + lane;
    const bool key_ok = s < key_end && key_visible(p, b, s);
    float dot[kQueriesPerWarp];
#pragma unroll
    for (int i = 0; i < kQueriesPerWarp; ++i) dot[i] = 0.0f;
    const float4* k_row = reinterpret_cast<const float4*>(k_tile + lane * k_stride);
    const float4* q_rows = reinterpret_cast<const float4*>(q_tile + warp * kQueriesPerWarp * head_dim);
    const int quads = head_dim / 4;
    for (int d4 = 0; d4 < quads; ++d4) {
      const float4 key = k_row[d4];
#pragma unroll
      for (int i = 0; i < kQueriesPerWarp; ++i) {
        const float4 query = q_rows[i * quads + d4];
        dot[i] = fmaf(query.x, key.x, dot[i]);
        dot[i] = fmaf(query.y, key.y, dot[i]);
        dot[i] = fmaf(query.z, key.z, dot[i]);
        dot[i] = fmaf(query.w, key.w, dot[i]);
      }
    }
    float prob[kQueriesPerWarp];
#pragma unroll
    for (int i = 0; i < kQueriesPerWarp; ++i) {
      const int64_t t = warp_first_query + i;
      const bool visible = key_ok && t < p.q_len && (!p.causal || s <= offset + t);
      const float score = visible ? dot[i] : -INFINITY;
      const float new_max = fmaxf(running_max[i], detail::warp_max(score));
      prob[i] = 0.0f;
      if (new_max == -INFINITY) continue;                        // warp-uniform: nothing visible to this query yet
      const float correction = exp2f(running_max[i] - new_max);  // 0 while running_max is -inf
      prob[i] = visible ? exp2f(score - new_max) : 0.0f;
      running_sum[i] = running_sum[i] * correction + prob[i];
#pragma unroll
      for (int c = 0; c < NC; ++c) acc[i][c] *= correction;
      running_max[i] = new_max;
    }

    const int keys = static_cast<int>(min(static_cast<int64_t>(kTileKeys), key_end - tile0));
    const bool straddles_diagonal = p.causal && tile0 + kTileKeys - 1 > offset + warp_first_query;
    if (straddles_diagonal)
      accumulate_values<NC, true>(v_tile, head_dim, keys, prob, acc);
    else
      accumulate_values<NC, false>(v_tile, head_dim, keys, prob, acc);
  }

#pragma unroll
  for (int i = 0; i < kQueriesPerWarp; ++i) {
    const int64_t t = warp_first_query + i;
    const float total = detail::warp_sum(running_sum[i]);
    if (t >= p.q_len) continue;
    const float inverse = total > 0.0f ? 1.0f / total : 0.0f;
    bf16* out_row = p.out + b * p.out_batch_stride + t * p.out_row_stride + h * head_dim;
#pragma unroll
    for (int c = 0; c < NC; ++c) {
      const int d = lane + 32 * c;
      if (d < head_dim) out_row[d] = __float2bfloat16_rn(acc[i][c] * inverse);
    }
  }
}

// ---- decode kernels ---------------------------------------------------------------------------------

// Merges the softmax state (max, sum, acc) of another part into this one; parts that saw no key
// have max -inf and contribute nothing.
__device__ inline float merge_weight(float part_max, float new_max) {
  return part_max == -INFINITY ? 0.0f : exp2f(part_max - new_max);
}

template <int LPK, int kWarps>
__global__ void __launch_bounds__(kWarps * 32)
    attention_decode_kernel(Params p, int64_t chunk, int64_t splits, float* partial) {
  constexpr int kKeysPerWarp = 32 / LPK;
  __shared__ float shared_max[kWarps], shared_sum[kWarps];
  __shared__ float shared_acc[kWarps][kMaxHeadDim];

  const int64_t split = blockIdx.x, h = blockIdx.y, z = blockIdx.z;
  const int64_t b = z / p.q_len, t = z % p.q_len;
  const int64_t g = h / p.group;
  const int head_dim = static_cast<int>(p.head_dim);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int group = lane / LPK, d0 = (lane % LPK) * 8;
  const bool active = d0 < head_dim;

  float query[8];
  const float* q_row = p.q + b * p.q_batch_stride + t * p.q_row_stride + h * head_dim;
#pragma unroll
  for (int i = 0; i < 8; ++i) query[i] = active ? q_row[d0 + i] * p.scale_log2 : 0.0f;

  const int64_t begin = split * chunk;
  int64_t end = min(p.kv_len, begin + chunk);
  if (p.causal) end = min(end, p.kv_len - p.q_len + t + 1);
  const bf16* k_base = p.k + b * p.kv_batch_stride + g * p.kv_head_stride;
  const bf16* v_base = p.v + b * p.kv_batch_stride + g * p.kv_head_stride;

  float running_max = -INFINITY, running_sum = 0.0f, acc[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) acc[i] = 0.0f;
  // `base` is warp-uniform, so every lane reaches the shuffles.
  for (int64_t base = begin + warp * kKeysPerWarp; base < end; base += kWarps * kKeysPerWarp) {
    const int64_t s = base + group;
    const bool visible = s < end && key_visible(p, b, s);
    float dot = 0.0f;
    if (visible && active) {
      float key[8];
      load8(k_base + s * p.kv_row_stride + d0, p.vector_kv, key);
#pragma unroll
      for (int i = 0; i < 8; ++i) dot = fmaf(query[i], key[i], dot);
    }
#pragma unroll
    for (int offset = LPK / 2; offset > 0; offset >>= 1) dot += __shfl_xor_sync(kFullMask, dot, offset);
    if (visible) {
      const float new_max = fmaxf(running_max, dot);
      const float correction = exp2f(running_max - new_max);
      const float weight = exp2f(dot - new_max);
      running_sum = running_sum * correction + weight;
      float value[8];
      if (active) {
        load8(v_base + s * p.kv_row_stride + d0, p.vector_kv, value);
      } else {
#pragma unroll
        for (int i = 0; i < 8; ++i) value[i] = 0.0f;
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[i] = fmaf(weight, value[i], acc[i] * correction);
      running_max = new_max;
    }
  }

  // Lane groups of the warp, then warps.
#pragma unroll
  for (int offset = LPK; offset < 32; offset <<= 1) {
    const float other_max = __shfl_xor_sync(kFullMask, running_max, offset);
    const float other_sum = __shfl_xor_sync(kFullMask, running_sum, offset);
    const float new_max = fmaxf(running_max, other_max);
    const float mine = merge_weight(running_max, new_max), theirs = merge_weight(other_max, new_max);
    running_sum = running_sum * mine + other_sum * theirs;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float other = __shfl_xor_sync(kFullMask, acc[i], offset);
      acc[i] = acc[i] * mine + other * theirs;
    }
    running_max = new_max;
  }
  if (lane == 0) {
    shared_max[warp] = running_max;
    shared_sum[warp] = running_sum;
  }
  if (group == 0 && active) {
#pragma unroll
    for (int i = 0; i < 8; ++i) shared_acc[warp][d0 + i] = acc[i];
  }
  __syncthreads();

  float block_max = -INFINITY;
  for (int w = 0; w < kWarps; ++w) block_max = fmaxf(block_max, shared_max[w]);
  float block_sum = 0.0f;
  for (int w = 0; w < kWarps; ++w) block_sum += shared_sum[w] * merge_weight(shared_max[w], block_max);
  for (int d = tid; d < head_dim; d += blockDim.x) {
    float value = 0.0f;
    for (int w = 0; w < kWarps; ++w) value += shared_acc[w][d] * merge_weight(shared_max[w], block_max);
    if (splits == 1) {
      const float inverse = block_sum > 0.0f ? 1.0f / block_sum : 0.0f;
      p.out[b * p.out_batch_stride + t * p.out_row_stride + h * head_dim + d] = __float2bfloat16_rn(value * inverse);
    } else {
      float* record = partial + ((z * p.num_heads + h) * splits + split) * (p.head_dim + 2);
      record[2 + d] = value;
      if (d == 0) {
        record[0] = block_max;
        record[1] = block_sum;
      }
    }
  }
}

__global__ void attention_combine_kernel(Params p, int64_t splits, const float* partial) {
  const int64_t h = blockIdx.x, z = blockIdx.y;
  const int64_t b = z / p.q_len, t = z % p.q_len;
  const int64_t record_size = p.head_dim + 2;
  const float* records = partial + (z * p.num_heads + h) * splits * record_size;
  float total_max = -INFINITY;
  for (int64_t s = 0; s < splits; ++s) total_max = fmaxf(total_max, records[s * record_size]);
  float total_sum = 0.0f;
  for (int64_t s = 0; s < splits; ++s)
    total_sum += records[s * record_size + 1] * merge_weight(records[s * record_size], total_max);
  const float inverse = total_sum > 0.0f ? 1.0f / total_sum : 0.0f;
  for (int64_t d = threadIdx.x; d < p.head_dim; d += blockDim.x) {
    float value = 0.0f;
    for (int64_t s = 0; s < splits; ++s)
      value += records[s * record_size + 2 + d] * merge_weight(records[s * record_size], total_max);
    p.out[b * p.out_batch_stride + t * p.out_row_stride + h * p.head_dim + d] = __float2bfloat16_rn(value * inverse);
  }
}

struct DecodePlan {
  int64_t chunk;
  int64_t splits;
};

DecodePlan decode_plan(int64_t kv_len) {
  const int64_t chunk = std::max(kDecodeChunk, (kv_len + kMaxSplits - 1) / kMaxSplits);
  return {chunk, std::max<int64_t>(1, (kv_len + chunk - 1) / chunk)};
}

template <int LPK>
void launch_decode(const Params& p, int64_t batch, float* workspace, int64_t workspace_floats, cudaStream_t stream) {
  DecodePlan plan = decode_plan(p.kv_len);
  const int64_t needed = batch * p.q_len * p.num_heads * plan.splits * (p.head_dim + 2);
  if (plan.splits > 1 && (workspace == nullptr || workspace_floats < needed))
    plan = {std::max<int64_t>(p.kv_len, 1), 1};
  const dim3 grid(static_cast<unsigned>(plan.splits), static_cast<unsigned>(p.num_heads),
                  static_cast<unsigned>(batch * p.q_len));
  if (plan.splits == 1 && p.kv_len > kDecodeChunk) {
    attention_decode_kernel<LPK, kFallbackDecodeWarps>
        <<<grid, kFallbackDecodeWarps * 32, 0, stream>>>(p, plan.chunk, plan.splits, workspace);
  } else {
    attention_decode_kernel<LPK, kDecodeWarps>
        <<<grid, kDecodeWarps * 32, 0, stream>>>(p, plan.chunk, plan.splits, workspace);
  }
  detail::check_launch("attention (decode)");
  if (plan.splits > 1) {
    const dim3 combine_grid(static_cast<unsigned>(p.num_heads), static_cast<unsigned>(batch * p.q_len));
    attention_combine_kernel<<<combine_grid, 128, 0, stream>>>(p, plan.splits, workspace);
    detail::check_launch("attention (combine)");
  }
}

template <int NC>
void launch_tiled(const Params& p, int64_t batch, cudaStream_t stream) {
  const size_t shared = tiled_shared_bytes(p.head_dim);
  if (shared > 48 * 1024)
    detail::check_cuda(cudaFuncSetAttribute(attention_tiled_kernel<NC>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(shared)),
                       "attention: cudaFuncSetAttribute");
  const dim3 grid(static_cast<unsigned>((p.q_len + kBlockQueries - 1) / kBlockQueries),
                  static_cast<unsigned>(p.num_heads), static_cast<unsigned>(batch));
  attention_tiled_kernel<NC><<<grid, kTiledWarps * 32, shared, stream>>>(p);
  detail::check_launch("attention (tiled)");
}

bool aligned16(const void* pointer) { return reinterpret_cast<uintptr_t>(pointer) % 16 == 0; }

}  // namespace

int64_t attention_workspace_floats(int64_t batch, int64_t q_len, int64_t num_heads, int64_t head_dim) {
  if (q_len > kDecodeMaxQueries || batch <= 0 || q_len <= 0 || num_heads <= 0 || head_dim <= 0) return 0;
  return batch * q_len * num_heads * kMaxSplits * (head_dim + 2);
}

void attention(const AttentionArgs& args, cudaStream_t stream) {
  const char* kernel = "attention";
  detail::require(args.batch >= 0 && args.q_len >= 0 && args.kv_len >= 0, kernel, "negative batch, q_len or kv_len");
  detail::require(args.head_dim >= 8 && args.head_dim <= kMaxHeadDim && args.head_dim % 8 == 0, kernel,
                  "head_dim must be a multiple of 8 in 8..256, got " + std::to_string(args.head_dim));
  detail::require(args.num_heads >= 1 && args.num_kv_heads >= 1 && args.num_heads % args.num_kv_heads == 0, kernel,
                  "num_heads must be a positive multiple of num_kv_heads");
  detail::require(args.num_heads <= 65535, kernel, "more than 65535 heads");
  if (args.batch == 0 || args.q_len == 0) return;
  const bool decode = args.q_len <= kDecodeMaxQueries;
  detail::require((decode ? args.batch * args.q_len : args.batch) <= 65535, kernel, "batch (x q_len) over 65535");
  detail::require(args.q != nullptr && args.out != nullptr && (args.kv_len == 0 || (args.k && args.v)), kernel,
                  "null tensor");

  Params p{};
  p.q_len = args.q_len;
  p.kv_len = args.kv_len;
  p.num_heads = args.num_heads;
  p.head_dim = args.head_dim;
  p.group = args.num_heads / args.num_kv_heads;
  p.q = args.q;
  p.q_batch_stride = args.q_batch_stride;
  p.q_row_stride = args.q_row_stride;
  p.k = args.k;
  p.v = args.v;
  p.kv_batch_stride = args.kv_batch_stride;
  p.kv_head_stride = args.kv_head_stride;
  p.kv_row_stride = args.kv_row_stride;
  p.out = args.out;
  p.out_batch_stride = args.out_batch_stride;
  p.out_row_stride = args.out_row_stride;
  p.scale_log2 = args.scale * kLog2e;
  p.causal = args.causal;
  p.vector_kv = aligned16(args.k) && aligned16(args.v) && args.kv_batch_stride % 8 == 0 &&
                args.kv_head_stride % 8 == 0 && args.kv_row_stride % 8 == 0;
  p.key_mask = args.key_mask;
  p.key_mask_stride = args.key_mask_stride;

  if (decode) {
    const int64_t lanes = args.head_dim / 8;  // 1..32
    if (lanes <= 1)
      launch_decode<1>(p, args.batch, args.workspace, args.workspace_floats, stream);
    else if (lanes <= 2)
      launch_decode<2>(p, args.batch, args.workspace, args.workspace_floats, stream);
    else if (lanes <= 4)
      launch_decode<4>(p, args.batch, args.workspace, args.workspace_floats, stream);
    else if (lanes <= 8)
      launch_decode<8>(p, args.batch, args.workspace, args.workspace_floats, stream);
    else if (lanes <= 16)
      launch_decode<16>(p, args.batch, args.workspace, args.workspace_floats, stream);
    else
      launch_decode<32>(p, args.batch, args.workspace, args.workspace_floats, stream);
  } else {
    const int64_t per_lane = (args.head_dim + 31) / 32;  // 1..8
    if (per_lane <= 1)
      launch_tiled<1>(p, args.batch, stream);
    else if (per_lane <= 2)
      launch_tiled<2>(p, args.batch, stream);
    else if (per_lane <= 4)
      launch_tiled<4>(p, args.batch, stream);
    else
      launch_tiled<8>(p, args.batch, stream);
  }
}

}  // namespace qwen2audio::kernels::cuda
