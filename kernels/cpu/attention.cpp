#include "kernels/cpu/attention.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "kernels/cpu/vector_math.h"
#include "runtime/errors.h"

namespace qwen2audio::kernels {
namespace {

constexpr int64_t kKeyTile = 128;    // keys per tile
constexpr int64_t kQueryBlock = 64;  // queries per work item of the tiled algorithm (a multiple of 32)
constexpr int kMicroRows = 6;        // rows of the register-blocked micro-kernel
constexpr int64_t kDimQuantum = 32;  // packed head_dim is zero-padded to this (two vectors of 16)
constexpr int64_t kDirectMaxQueries = 2;
constexpr int64_t kReadAheadItemBytes = 128 << 10;  // largest keys + values of a head read ahead (decode)
// Heads past that size: each pass asks for the row this many rows ahead of the one it reads.
constexpr int64_t kStreamAheadRows = 8;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kHidden = -std::numeric_limits<float>::infinity();
constexpr uint8_t kNoneVisible = 0, kSomeVisible = 1, kAllVisible = 2;

int64_t round_up(int64_t value, int64_t quantum) { return (value + quantum - 1) / quantum * quantum; }

// Where the tiled workers read keys and values: the caller's arrays, or a float32 copy with rows
// of hidden keys zeroed (hidden_zeroed).
struct KeyValueView {
  const void* k;
  const void* v;
  DType dtype;
  int64_t batch_stride, head_stride, row_stride;
  bool hidden_zeroed;
};

// Everything the workers of one call read.
struct Plan {
  const AttentionArgs* args;
  KeyValueView view;
  int64_t group;              // query heads per key/value head
  int64_t offset;             // key index of query 0 under the causal mask
  int64_t padded_dim;         // head_dim rounded up to kDimQuantum
  int64_t tiles;              // key tiles per batch row
  int64_t query_blocks;       // per (batch, head)
  const uint8_t* tile_state;  // [batch][tiles]: kNoneVisible, kSomeVisible or kAllVisible (keys < kv_len)
  float* per_thread;
  int64_t thread_stride;
};

bool key_visible(const AttentionArgs& args, int64_t b, int64_t s) {
  return s < args.kv_len && (args.key_mask == nullptr || args.key_mask[b * args.key_mask_stride + s] != 0);
}

template <bool kBf16>
QWEN2AUDIO_ALWAYS_INLINE float element(const void* base, int64_t index) {
  if constexpr (kBf16) return bf16_to_float(static_cast<const uint16_t*>(base)[index]);
  return static_cast<const float*>(base)[index];
}

// ---------------------------------------------------------------- tiled algorithm

// C[kRows x 2L] (+)= A[kRows x depth] B[depth x 2L], A[r, p] at a[r * a_row + p * a_col], with
// the kRows x 2L block of C in registers: per step two loads of B, kRows broadcasts of A and
// 2 kRows multiply-adds.
template <int L, int kRows>
QWEN2AUDIO_ALWAYS_INLINE void micro_kernel(const float* a, int64_t a_row, int64_t a_col, const float* b, int64_t ldb,
                                           int64_t depth, float* c, int64_t ldc, bool accumulate) {
  using V = Vec<L>;
  typename V::Floats sums[kRows][2];
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
    sums[r][0] = accumulate ? V::load(c + r * ldc) : V::splat(0.0f);
    sums[r][1] = accumulate ? V::load(c + r * ldc + L) : V::splat(0.0f);
  }
  for (int64_t p = 0; p < depth; ++p) {
    const typename V::Floats b0 = V::load(b + p * ldb);
    const typename V::Floats b1 = V::load(b + p * ldb + L);
    const float* column = a + p * a_col;
#pragma GCC unroll 8
    for (int r = 0; r < kRows; ++r) {
      const typename V::Floats a_value = V::broadcast(column + r * a_row);
      sums[r][0] = a_value * b0 + sums[r][0];
      sums[r][1] = a_value * b1 + sums[r][1];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kRows; ++r) {
    V::store(c + r * ldc, sums[r][0]);
    V::store(c + r * ldc + L, sums[r][1]);
  }
}

// C[rows x cols] (+)= A[rows x depth] B[depth x cols]; cols is a multiple of 2L.
template <int L>
QWEN2AUDIO_ALWAYS_INLINE void block_product(const float* a, int64_t a_row, int64_t a_col, const float* b, int64_t ldb,
                                            int64_t depth, float* c, int64_t ldc, int64_t rows, int64_t cols,
                                            bool accumulate) {
  for (int64_t col = 0; col < cols; col += 2 * L) {
    int64_t row = 0;
    for (; row + kMicroRows <= rows; row += kMicroRows)
      micro_kernel<L, kMicroRows>(a + row * a_row, a_row, a_col, b + col, ldb, depth, c + row * ldc + col, ldc,
                                  accumulate);
    const float* a_rest = a + row * a_row;
    float* c_rest = c + row * ldc + col;
    switch (rows - row) {
      case 5:
        micro_kernel<L, 5>(a_rest, a_row, a_col, b + col, ldb, depth, c_rest, ldc, accumulate);
        break;
      case 4:
        micro_kernel<L, 4>(a_rest, a_row, a_col, b + col, ldb, depth, c_rest, ldc, accumulate);
        break;
      case 3:
        micro_kernel<L, 3>(a_rest, a_row, a_col, b + col, ldb, depth, c_rest, ldc, accumulate);
        break;
      case 2:
        micro_kernel<L, 2>(a_rest, a_row, a_col, b + col, ldb, depth, c_rest, ldc, accumulate);
        break;
      case 1:
        micro_kernel<L, 1>(a_rest, a_row, a_col, b + col, ldb, depth, c_rest, ldc, accumulate);
        break;
      default:
        break;
    }
  }
}

// Copies `count` rows of keys or values from (b, g, first) on, as `view` lays them out, into
// out[count][padded_dim] as float, with the rows of hidden keys and the padding columns zero.
template <int L, bool kBf16>
QWEN2AUDIO_ALWAYS_INLINE void pack_rows(const Plan& plan, const KeyValueView& view, const void* source, int64_t b,
                                        int64_t g, int64_t first, int64_t count, float* out) {
  using V = Vec<L>;
  const AttentionArgs& args = *plan.args;
  const int64_t dim = args.head_dim, padded = plan.padded_dim, vector_dim = dim / L * L;
  for (int64_t j = 0; j < count; ++j) {
    float* row = out + j * padded;
    if (!key_visible(args, b, first + j)) {
      std::fill_n(row, padded, 0.0f);
      continue;
    }
    const int64_t base = b * view.batch_stride + g * view.head_stride + (first + j) * view.row_stride;
    int64_t d = 0;
    if constexpr (kBf16) {
      for (; d < vector_dim; d += L) V::store(row + d, V::load_bf16(static_cast<const uint16_t*>(source) + base + d));
    } else {
      for (; d < vector_dim; d += L) V::store(row + d, V::load(static_cast<const float*>(source) + base + d));
    }
    for (; d < dim; ++d) row[d] = element<kBf16>(source, base + d);
    std::fill(row + dim, row + padded, 0.0f);
  }
}

// Rows per work item of the up-front copy.
constexpr int64_t kCopyRows = 256;

// The up-front copy for keys and values whose rows are not contiguous (the encoder's [s, heads *
// d] projections): [batch][kv_heads][kv_len][padded_dim] float32, hidden rows zeroed. Reading
// such rows in place, a tile's rows sit a large power-of-two multiple apart, fall into a few L1
// sets and thrash; copying them per query block re-reads them from memory each time.
template <int L>
QWEN2AUDIO_ALWAYS_INLINE void copy_rows(const Plan& plan, int64_t begin, int64_t end) {
  const AttentionArgs& args = *plan.args;
  const KeyValueView source{
      args.k, args.v, args.kv_dtype, args.kv_batch_stride, args.kv_head_stride, args.kv_row_stride, false};
  const int64_t chunks = (args.kv_len + kCopyRows - 1) / kCopyRows;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t chunk = item % chunks;
    const int64_t g = (item / chunks) % args.num_kv_heads;
    const int64_t b = item / (chunks * args.num_kv_heads);
    const int64_t first = chunk * kCopyRows, count = std::min(kCopyRows, args.kv_len - first);
    const int64_t offset = b * plan.view.batch_stride + g * plan.view.head_stride + first * plan.view.row_stride;
    float* keys = const_cast<float*>(static_cast<const float*>(plan.view.k)) + offset;
    float* values = const_cast<float*>(static_cast<const float*>(plan.view.v)) + offset;
    if (args.kv_dtype == DType::BF16) {
      pack_rows<L, true>(plan, source, args.k, b, g, first, count, keys);
      pack_rows<L, true>(plan, source, args.v, b, g, first, count, values);
    } else {
      pack_rows<L, false>(plan, source, args.k, b, g, first, count, keys);
      pack_rows<L, false>(plan, source, args.v, b, g, first, count, values);
    }
  }
}

QWEN2AUDIO_LANE_VARIANTS(copy_rows, Plan)

// One work item: a block of up to kQueryBlock queries of head h of batch row b against every key
// tile they may see. Scores are computed transposed, S^T = K Q^T [keys x queries], so that keys
// are read in place (float32, no hidden key) and the online softmax runs down columns with one
// query per lane: no horizontal reductions. Queries carry scale * log2 e, so weights are 2^(s - m).
template <int L, bool kBf16>
QWEN2AUDIO_ALWAYS_INLINE void tiled_queries(const Plan& plan, int64_t begin, int64_t end) {
  using V = Vec<L>;
  using Floats = typename V::Floats;
  const AttentionArgs& args = *plan.args;
  const int64_t dim = args.head_dim, padded = plan.padded_dim;
  float* transposed_queries = plan.per_thread + omp_get_thread_num() * plan.thread_stride;  // [padded][block]
  float* scores = transposed_queries + padded * kQueryBlock;                                // [kKeyTile][block]
  float* sums = scores + kKeyTile * kQueryBlock;                                            // [block][padded]
  float* row_max = sums + kQueryBlock * padded;
  float* row_total = row_max + kQueryBlock;
  float* correction = row_total + kQueryBlock;
  float* packed_keys = correction + kQueryBlock;           // [kKeyTile][padded]
  float* packed_values = packed_keys + kKeyTile * padded;  // [kKeyTile][padded]
  const float query_scale = args.scale * kLog2e;
  const KeyValueView& view = plan.view;
  // Float32 keys are read in place: rows of hidden keys get -inf scores whatever they hold.
  // Float32 values too, where hidden rows are zero or absent from the tile, and the micro-kernel's
  // vectors stay inside each row (BF16 rows are widened into the per-thread copy).
  const int64_t value_columns_in_place = view.hidden_zeroed ? padded : dim % (2 * L) == 0 ? dim : 0;

  for (int64_t item = begin; item < end; ++item) {
    const int64_t block = item % plan.query_blocks;
    const int64_t h = (item / plan.query_blocks) % args.num_heads;
    const int64_t b = item / (plan.query_blocks * args.num_heads);
    const int64_t g = h / plan.group;
    const int64_t first = block * kQueryBlock;
    const int64_t count = std::min(kQueryBlock, args.q_len - first);
    const int64_t columns = round_up(count, 2 * L);  // query columns computed
    const int64_t kv_base = b * view.batch_stride + g * view.head_stride;

    std::fill_n(transposed_queries, padded * kQueryBlock, 0.0f);
    for (int64_t i = 0; i < count; ++i) {
      const float* q = args.q + b * args.q_batch_stride + (first + i) * args.q_row_stride + h * dim;
      for (int64_t d = 0; d < dim; ++d) transposed_queries[d * kQueryBlock + i] = q[d] * query_scale;
    }
    std::fill_n(sums, count * padded, 0.0f);
    std::fill_n(row_max, kQueryBlock, kHidden);
    std::fill_n(row_total, kQueryBlock, 0.0f);

    // Keys past last_key are hidden from every query of the block (causal future, or past kv_len).
    const int64_t last_key = args.causal ? plan.offset + first + count - 1 : args.kv_len - 1;
    for (int64_t tile = 0; tile * kKeyTile <= last_key; ++tile) {
      const uint8_t state = plan.tile_state[b * plan.tiles + tile];
      if (state == kNoneVisible) continue;
      const int64_t key0 = tile * kKeyTile;
      const int64_t keys = std::min(kKeyTile, last_key - key0 + 1);
      const bool whole = state == kAllVisible;

      const float* key_rows;
      int64_t key_stride;
      if (!kBf16) {
        key_rows = static_cast<const float*>(view.k) + kv_base + key0 * view.row_stride;
        key_stride = view.row_stride;
      } else {
        pack_rows<L, kBf16>(plan, view, view.k, b, g, key0, keys, packed_keys);
        key_rows = packed_keys;
        key_stride = padded;
      }
      block_product<L>(key_rows, key_stride, 1, transposed_queries, kQueryBlock, dim, scores, kQueryBlock, keys,
                       columns, false);

      // Hidden keys: whole rows to -inf. Causal: key s is hidden from queries t < s - offset,
      // a prefix of its row.
      bool exact_zeros = !whole;
      for (int64_t j = 0; j < keys; ++j) {
        float* row = scores + j * kQueryBlock;
        if (!whole && !key_visible(args, b, key0 + j)) {
          std::fill_n(row, columns, kHidden);
          continue;
        }
        if (args.causal) {
          const int64_t hidden_queries = std::min(key0 + j - plan.offset - first, columns);
          if (hidden_queries > 0) {
            std::fill_n(row, hidden_queries, kHidden);
            exact_zeros = true;
          }
        }
      }

      for (int64_t i = 0; i < columns && i < count; i += L) {
        Floats maximum = V::load(row_max + i);
        const Floats old_max = maximum;
        for (int64_t j = 0; j < keys; ++j) maximum = V::max(maximum, V::load(scores + j * kQueryBlock + i));
        // A query that has seen no key yet keeps weight 0 everywhere (shift 0 avoids -inf - -inf).
        const Floats shift = maximum == kHidden ? V::splat(0.0f) : maximum;
        Floats total = V::splat(0.0f);
        if (exact_zeros) {
          for (int64_t j = 0; j < keys; ++j) {
            const Floats value = V::load(scores + j * kQueryBlock + i);
            const Floats weight = value == kHidden ? V::splat(0.0f) : V::exp2_nonpositive(value - shift);
            V::store(scores + j * kQueryBlock + i, weight);
            total += weight;
          }
        } else {
          for (int64_t j = 0; j < keys; ++j) {
            const Floats weight = V::exp2_nonpositive(V::load(scores + j * kQueryBlock + i) - shift);
            V::store(scores + j * kQueryBlock + i, weight);
            total += weight;
          }
        }
        const Floats factor = old_max == kHidden ? V::splat(0.0f) : V::exp2_nonpositive(old_max - shift);
        V::store(correction + i, factor);
        V::store(row_total + i, V::load(row_total + i) * factor + total);
        V::store(row_max + i, maximum);
      }
      for (int64_t i = 0; i < count; ++i) {
        if (correction[i] == 1.0f) continue;
        float* accumulated = sums + i * padded;
        const Floats factor = V::splat(correction[i]);
        for (int64_t d = 0; d < padded; d += L) V::store(accumulated + d, V::load(accumulated + d) * factor);
      }

      const float* value_rows;
      int64_t value_stride, value_columns;
      if (!kBf16 && value_columns_in_place > 0 && (whole || view.hidden_zeroed)) {
        value_rows = static_cast<const float*>(view.v) + kv_base + key0 * view.row_stride;
        value_stride = view.row_stride;
        value_columns = value_columns_in_place;
      } else {
        pack_rows<L, kBf16>(plan, view, view.v, b, g, key0, keys, packed_values);
        value_rows = packed_values;
        value_stride = padded;
        value_columns = padded;
      }
      block_product<L>(scores, 1, kQueryBlock, value_rows, value_stride, keys, sums, padded, count, value_columns,
                       true);
    }

    for (int64_t i = 0; i < count; ++i) {
      float* out = args.out + b * args.out_batch_stride + (first + i) * args.out_row_stride + h * dim;
      if (row_total[i] == 0.0f) {
        std::fill_n(out, dim, 0.0f);
        continue;
      }
      const float inverse = 1.0f / row_total[i];
      const float* accumulated = sums + i * padded;
      for (int64_t d = 0; d < dim; ++d) out[d] = accumulated[d] * inverse;
    }
  }
}

template <int L>
QWEN2AUDIO_ALWAYS_INLINE void tiled_items(const Plan& plan, int64_t begin, int64_t end) {
  if (plan.view.dtype == DType::BF16)
    tiled_queries<L, true>(plan, begin, end);
  else
    tiled_queries<L, false>(plan, begin, end);
}

QWEN2AUDIO_LANE_VARIANTS(tiled_items, Plan)

// ---------------------------------------------------------------- direct algorithm

template <int L, bool kBf16>
QWEN2AUDIO_ALWAYS_INLINE typename Vec<L>::Floats load_kv(const void* base, int64_t index) {
  if constexpr (kBf16) return Vec<L>::load_bf16(static_cast<const uint16_t*>(base) + index);
  return Vec<L>::load(static_cast<const float*>(base) + index);
}

// Asks for the cache lines of one key or value row ahead of its use.
template <bool kBf16>
QWEN2AUDIO_ALWAYS_INLINE void prefetch_row(const void* base, int64_t index, int64_t dim) {
  const char* first = static_cast<const char*>(base) + index * (kBf16 ? 2 : 4);
  const int64_t bytes = dim * (kBf16 ? 2 : 4);
  for (int64_t offset = 0; offset < bytes; offset += 64) __builtin_prefetch(first + offset);
}

// A value pass's prefetch at key s: the next item's key row where it reads ahead (next_base >= 0),
// else the value row kStreamAheadRows on in its own stream.
template <bool kBf16>
QWEN2AUDIO_ALWAYS_INLINE void prefetch_for_value(const AttentionArgs& args, int64_t base, int64_t s, int64_t visible,
                                                 int64_t next_base) {
  if (next_base >= 0)
    prefetch_row<kBf16>(args.k, next_base + s * args.kv_row_stride, args.head_dim);
  else if (s + kStreamAheadRows < visible)
    prefetch_row<kBf16>(args.v, base + (s + kStreamAheadRows) * args.kv_row_stride, args.head_dim);
}

// sums[0, N L) = the sum over the visible keys s of scores[s] v[s, 0, N L), the N vectors held in
// registers across the keys (a sum kept in memory waits on a store and a reload per key and vector:
// 10-16 % of a decode step's attention at 256 tokens on a Zen 5 EPYC, AVX-512). Asks for the key
// rows at next_base (the next item's) on the way when next_base >= 0.
template <int L, bool kBf16, int N>
QWEN2AUDIO_ALWAYS_INLINE void weighted_values(const AttentionArgs& args, int64_t base, const float* scores,
                                              int64_t visible, float* sums, int64_t next_base) {
  using V = Vec<L>;
  typename V::Floats acc[N];
#pragma GCC unroll 8
  for (int j = 0; j < N; ++j) acc[j] = V::splat(0.0f);
  for (int64_t s = 0; s < visible; ++s) {
    prefetch_for_value<kBf16>(args, base, s, visible, next_base);
    const float weight = scores[s];
    if (weight == 0.0f) continue;  // hidden (or negligible): never read its value
    const int64_t row = base + s * args.kv_row_stride;
    const typename V::Floats w = V::splat(weight);
#pragma GCC unroll 8
    for (int j = 0; j < N; ++j) acc[j] = w * load_kv<L, kBf16>(args.v, row + j * L) + acc[j];
  }
#pragma GCC unroll 8
  for (int j = 0; j < N; ++j) V::store(sums + j * L, acc[j]);
}

// The same for any number of vectors, the sums in memory.
template <int L, bool kBf16>
QWEN2AUDIO_ALWAYS_INLINE void weighted_values_in_memory(const AttentionArgs& args, int64_t base, const float* scores,
                                                        int64_t visible, float* sums, int64_t next_base) {
  using V = Vec<L>;
  const int64_t vector_dim = args.head_dim / L * L;
  std::fill_n(sums, vector_dim, 0.0f);
  for (int64_t s = 0; s < visible; ++s) {
    prefetch_for_value<kBf16>(args, base, s, visible, next_base);
    const float weight = scores[s];
    if (weight == 0.0f) continue;
    const int64_t row = base + s * args.kv_row_stride;
    const typename V::Floats w = V::splat(weight);
    for (int64_t d = 0; d < vector_dim; d += L)
      V::store(sums + d, w * load_kv<L, kBf16>(args.v, row + d) + V::load(sums + d));
  }
}

template <int L, bool kBf16>
QWEN2AUDIO_ALWAYS_INLINE void direct_queries(const Plan& plan, int64_t begin, int64_t end) {
  using V = Vec<L>;
  using Floats = typename V::Floats;
  const AttentionArgs& args = *plan.args;
  const int64_t dim = args.head_dim;
  const int64_t vector_dim = dim / L * L;
  float* query = plan.per_thread + omp_get_thread_num() * plan.thread_stride;
  float* sums = query + plan.padded_dim;
  float* scores = sums + plan.padded_dim;
  const float query_scale = args.scale * kLog2e;

  for (int64_t item = begin; item < end; ++item) {
    const int64_t t = item % args.q_len;
    const int64_t h = (item / args.q_len) % args.num_heads;
    const int64_t b = item / (args.q_len * args.num_heads);
    const int64_t g = h / plan.group;
    const float* q = args.q + b * args.q_batch_stride + t * args.q_row_stride + h * dim;
    for (int64_t d = 0; d < dim; ++d) query[d] = q[d] * query_scale;
    const int64_t keys = args.kv_lens ? args.kv_lens[b] : args.kv_len;
    const int64_t visible = args.causal ? keys - args.q_len + t + 1 : keys;
    const int64_t kv_row = args.kv_rows ? args.kv_rows[b] : b;
    const int64_t base = kv_row * args.kv_batch_stride + g * args.kv_head_stride;

    // A decode step reads each head's keys, then its values, as short streams (at 256 tokens of a
    // 128-wide BF16 head, 64 KiB each) that would each start cold, one at a time. So this item's
    // values are asked for during its key pass, and the next item's keys (the next head, most often
    // this thread's next item) during its value pass. Only for items small enough to stay in L2
    // until used: at 512 tokens (256 KiB) it read no faster. With the register sums below,
    // 1.27-1.47x at 256 tokens and 1.10-1.19x at 1024 on a Zen 5 EPYC (bench/bench_decode_attention.cpp,
    // bench/RESULTS.md). Longer items, and items without it, have each pass ask for the row
    // kStreamAheadRows ahead in its own stream: on a Sapphire Rapids-class Xeon, 4 sequences at
    // 320-2048 tokens, 1.15-1.2x (AVX2) and 1.03-1.1x (AVX-512) against the hardware prefetcher
    // alone. (There, at 256 tokens, that alone also beat the read-ahead, 1.15x; untried on Zen 5.)
    const bool ahead =
        args.read_ahead && 2 * visible * dim * static_cast<int64_t>(kBf16 ? 2 : 4) <= kReadAheadItemBytes;
    int64_t next_base = -1;
    if (ahead && item + 1 < args.batch * args.num_heads * args.q_len) {
      const int64_t next_h = ((item + 1) / args.q_len) % args.num_heads;
      const int64_t next_b = (item + 1) / (args.q_len * args.num_heads);
      const int64_t next_row = args.kv_rows ? args.kv_rows[next_b] : next_b;
      next_base = next_row * args.kv_batch_stride + next_h / plan.group * args.kv_head_stride;
    }

    // Key after key in memory order (one long stream for the prefetchers; interleaving a few rows
    // at a time measured slower), two accumulators per key.
    float maximum = kHidden;
    for (int64_t s = 0; s < visible; ++s) {
      if (!key_visible(args, kv_row, s)) {
        scores[s] = kHidden;
        continue;
      }
      const int64_t row = base + s * args.kv_row_stride;
      if (ahead)
        prefetch_row<kBf16>(args.v, row, dim);
      else if (s + kStreamAheadRows < visible)
        prefetch_row<kBf16>(args.k, row + kStreamAheadRows * args.kv_row_stride, dim);
      Floats dot0 = V::splat(0.0f), dot1 = V::splat(0.0f);
      int64_t d = 0;
      for (; d + 2 * L <= vector_dim; d += 2 * L) {
        dot0 = V::load(query + d) * load_kv<L, kBf16>(args.k, row + d) + dot0;
        dot1 = V::load(query + d + L) * load_kv<L, kBf16>(args.k, row + d + L) + dot1;
      }
      if (d < vector_dim) dot0 = V::load(query + d) * load_kv<L, kBf16>(args.k, row + d) + dot0;
      float score = V::sum(dot0 + dot1);
      for (d = vector_dim; d < dim; ++d) score += query[d] * element<kBf16>(args.k, row + d);
      scores[s] = score;
      maximum = std::max(maximum, score);
    }

    float* out = args.out + b * args.out_batch_stride + t * args.out_row_stride + h * dim;
    if (maximum == kHidden) {
      std::fill_n(out, dim, 0.0f);
      continue;
    }
    const Floats shift = V::splat(maximum);
    Floats total_vector = V::splat(0.0f);
    int64_t s = 0;
    for (; s + L <= visible; s += L) {
      const Floats value = V::load(scores + s);
      const Floats weight = value == kHidden ? V::splat(0.0f) : V::exp2(value - shift);
      V::store(scores + s, weight);
      total_vector += weight;
    }
    float total = V::sum(total_vector);
    for (; s < visible; ++s) {
      scores[s] = scores[s] == kHidden ? 0.0f : std::exp2(scores[s] - maximum);
      total += scores[s];
    }

    // Heads of 8, 4, 2 or 1 vectors (128 or 64 wide on AVX-512, 64 on AVX2) keep their sums in
    // registers over one pass of the values; wider heads add into memory (splitting the rows into
    // passes of 8 vectors measured 1.6x slower: AVX2, 128 wide, 1024 tokens).
    const int64_t vectors = vector_dim / L;
    if (vectors == 8)
      weighted_values<L, kBf16, 8>(args, base, scores, visible, sums, next_base);
    else if (vectors == 4)
      weighted_values<L, kBf16, 4>(args, base, scores, visible, sums, next_base);
    else if (vectors == 2)
      weighted_values<L, kBf16, 2>(args, base, scores, visible, sums, next_base);
    else if (vectors == 1)
      weighted_values<L, kBf16, 1>(args, base, scores, visible, sums, next_base);
    else if (vectors > 0)
      weighted_values_in_memory<L, kBf16>(args, base, scores, visible, sums, next_base);
    if (vector_dim < dim) {
      std::fill(sums + vector_dim, sums + dim, 0.0f);
      for (s = 0; s < visible; ++s) {
        if (scores[s] == 0.0f) continue;
        const int64_t row = base + s * args.kv_row_stride;
        for (int64_t d = vector_dim; d < dim; ++d) sums[d] += scores[s] * element<kBf16>(args.v, row + d);
      }
    }
    const float inverse = 1.0f / total;
    for (int64_t d = 0; d < dim; ++d) out[d] = sums[d] * inverse;
  }
}

template <int L>
QWEN2AUDIO_ALWAYS_INLINE void direct_items(const Plan& plan, int64_t begin, int64_t end) {
  if (plan.args->kv_dtype == DType::BF16)
    direct_queries<L, true>(plan, begin, end);
  else
    direct_queries<L, false>(plan, begin, end);
}

QWEN2AUDIO_LANE_VARIANTS(direct_items, Plan)

void check(const AttentionArgs& args) {
  if (args.batch < 0 || args.q_len < 0 || args.kv_len < 0 || args.head_dim <= 0)
    throw InvalidArgument("attention: negative size or head_dim < 1");
  if (args.num_kv_heads <= 0 || args.num_heads % args.num_kv_heads != 0)
    throw InvalidArgument("attention: num_heads must be a multiple of num_kv_heads");
  if (args.causal && args.q_len > args.kv_len) throw InvalidArgument("attention: causal with more queries than keys");
  if ((args.kv_rows != nullptr || args.kv_lens != nullptr) && args.q_len > kDirectMaxQueries)
    throw InvalidArgument("attention: per-row cache rows and lengths are for decode steps only");
  for (int64_t b = 0; args.kv_lens != nullptr && b < args.batch; ++b)
    if (args.kv_lens[b] > args.kv_len || (args.causal && args.kv_lens[b] < args.q_len))
      throw InvalidArgument("attention: kv_lens[" + std::to_string(b) + "] is outside [q_len, kv_len]");
  if (args.kv_dtype != DType::F32 && args.kv_dtype != DType::BF16)
    throw InvalidArgument("attention: keys and values must be F32 or BF16, got " +
                          std::string(dtype_name(args.kv_dtype)));
}

}  // namespace

void attention(const AttentionArgs& args, AttentionScratch& scratch, Isa isa) {
  check(args);
  if (args.batch == 0 || args.q_len == 0 || args.num_heads == 0) return;
  Plan plan{};
  plan.args = &args;
  plan.group = args.num_heads / args.num_kv_heads;
  plan.offset = args.kv_len - args.q_len;
  plan.padded_dim = round_up(args.head_dim, kDimQuantum);
  const int threads = omp_get_max_threads();

  if (args.q_len <= kDirectMaxQueries) {
    plan.thread_stride = round_up(2 * plan.padded_dim + args.kv_len, 16);
    plan.per_thread = scratch.per_thread.reserve(static_cast<size_t>(plan.thread_stride * threads));
    const int64_t items = args.batch * args.num_heads * args.q_len;
    const auto worker = pick_variant(isa, direct_items_avx512, direct_items_avx2, direct_items_baseline);
#pragma omp parallel for schedule(static) if (items > 1 && args.kv_len * args.head_dim * items > (1 << 14))
    for (int64_t item = 0; item < items; ++item) worker(plan, item, item + 1);
    return;
  }

  plan.tiles = (args.kv_len + kKeyTile - 1) / kKeyTile;
  plan.query_blocks = (args.q_len + kQueryBlock - 1) / kQueryBlock;
  uint8_t* tile_state = scratch.tiles.reserve(static_cast<size_t>(std::max<int64_t>(args.batch * plan.tiles, 1)));
  for (int64_t b = 0; b < args.batch; ++b) {
    for (int64_t tile = 0; tile < plan.tiles; ++tile) {
      const int64_t key0 = tile * kKeyTile, keys = std::min(kKeyTile, args.kv_len - key0);
      int64_t shown = 0;
      for (int64_t j = 0; j < keys; ++j) shown += key_visible(args, b, key0 + j);
      tile_state[b * plan.tiles + tile] = shown == 0 ? kNoneVisible : shown == keys ? kAllVisible : kSomeVisible;
    }
  }
  plan.tile_state = tile_state;
  const int64_t padded = plan.padded_dim;
  plan.view = {args.k, args.v, args.kv_dtype, args.kv_batch_stride, args.kv_head_stride, args.kv_row_stride, false};
  if (args.kv_row_stride != args.head_dim) {
    const int64_t per_array = args.batch * args.num_kv_heads * args.kv_len * padded;
    float* copy = scratch.rows.reserve(static_cast<size_t>(std::max<int64_t>(2 * per_array, 1)));
    plan.view = {
        copy, copy + per_array, DType::F32, args.num_kv_heads * args.kv_len * padded, args.kv_len * padded, padded,
        true};
    const int64_t copy_items = args.batch * args.num_kv_heads * ((args.kv_len + kCopyRows - 1) / kCopyRows);
    const auto copier = pick_variant(isa, copy_rows_avx512, copy_rows_avx2, copy_rows_baseline);
#pragma omp parallel for schedule(static) if (copy_items > 1)
    for (int64_t item = 0; item < copy_items; ++item) copier(plan, item, item + 1);
  }
  plan.thread_stride =
      round_up(2 * padded * kQueryBlock + kKeyTile * kQueryBlock + 3 * kQueryBlock + 2 * kKeyTile * padded, 16);
  plan.per_thread = scratch.per_thread.reserve(static_cast<size_t>(plan.thread_stride * threads));

  const int64_t items = args.batch * args.num_heads * plan.query_blocks;
  const auto worker = pick_variant(isa, tiled_items_avx512, tiled_items_avx2, tiled_items_baseline);
  // Dynamic: under the causal mask late query blocks see more tiles than early ones.
#pragma omp parallel for schedule(dynamic) if (items > 1)
  for (int64_t item = 0; item < items; ++item) worker(plan, item, item + 1);
}

void attention(const AttentionArgs& args, AttentionScratch& scratch) { attention(args, scratch, best_isa()); }

void attention(const AttentionArgs& args) {
  AttentionScratch scratch;
  attention(args, scratch, best_isa());
}

}  // namespace qwen2audio::kernels
