#pragma once

#include <cstdint>

#include "kernels/cpu/cpu_features.h"
#include "runtime/buffer.h"
#include "runtime/dtype.h"

namespace qwen2audio::kernels {

// Scaled dot-product attention, softmax(q k^T * scale + mask) v, for every batch row, head and
// query, with grouped-query attention (query head h reads key/value head h / (heads / kv_heads)).
//   q[b, t, h, :]   at q + b * q_batch_stride + t * q_row_stride + h * head_dim (float32)
//   k[b, g, s, :]   at k + b * kv_batch_stride + g * kv_head_stride + s * kv_row_stride (v alike),
//                   float32 or BF16 (kv_dtype); strides count elements
//   out[b, t, h, :] at out + b * out_batch_stride + t * out_row_stride + h * head_dim
// Masking: with `causal`, query t sits at key index kv_len - q_len + t and sees keys up to it;
// key_mask[b * key_mask_stride + s] == 0 hides key s from every query of row b. Hidden keys are
// skipped, not weighted by zero, so whatever they hold (even NaN) cannot leak; a query that sees
// no key at all gets zeros. Softmax and accumulation are float32.
struct AttentionArgs {
  int64_t batch = 0;
  int64_t q_len = 0;
  int64_t kv_len = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  const float* q = nullptr;
  int64_t q_batch_stride = 0;
  int64_t q_row_stride = 0;
  const void* k = nullptr;
  const void* v = nullptr;
  DType kv_dtype = DType::F32;
  int64_t kv_batch_stride = 0;
  int64_t kv_head_stride = 0;
  int64_t kv_row_stride = 0;
  float* out = nullptr;
  int64_t out_batch_stride = 0;
  int64_t out_row_stride = 0;
  float scale = 1.0f;
  bool causal = false;
  const uint8_t* key_mask = nullptr;
  int64_t key_mask_stride = 0;
  // Ragged batches (a serving batch whose rows joined at different times and hold conversations of
  // different lengths): batch row b reads cache row kv_rows[b] (its key_mask row too) and has its
  // own kv_lens[b] keys, causal offset included; kv_len must be the largest of them. Either may be
  // null (identity rows; kv_len for every row). Decode steps only (the direct algorithm): the tiled
  // one refuses them.
  const int64_t* kv_rows = nullptr;
  const int64_t* kv_lens = nullptr;
  // Decode steps over short caches ask for the next keys and values before reading them (see
  // attention.cpp); off (each pass then prefetches within its own stream, as longer caches do) only
  // for bench/bench_decode_attention.cpp's comparison.
  bool read_ahead = true;
};

// Working memory of attention calls: it only grows, so a caller that keeps one (a session, a
// model's encoder pass) allocates nothing once it has seen its largest call. One scratch serves
// one call at a time.
struct AttentionScratch {
  Buffer<float> rows;        // float32 copy of keys and values whose rows are not contiguous
  Buffer<float> per_thread;  // each thread's queries, scores, accumulators and widened keys/values
  Buffer<uint8_t> tiles;     // which key tiles hold visible keys, per batch row
};

// Two algorithms, picked by shape:
//  - tiled (several queries per key/value head): flash-style. Each thread takes a block of 64
//    queries of one head and walks the 128-key tiles they may see with an online softmax, both
//    products (scores transposed, K Q^T, then P V) as register-blocked micro-kernels. Contiguous
//    float32 rows ([kv_head, s, d], the cache) are read in place; BF16 rows are widened per tile
//    into a small per-thread copy; rows interleaved across heads ([s, heads * d], the encoder)
//    are copied once per call into [kv_head, s, d]. Tiles that are all hidden or all in the causal future
//    are skipped, so a short clip padded to 30 s costs little;
//  - direct (one or two queries per head: decode steps): scores, softmax and the weighted sum of
//    values read straight from the cache, one pass each, no packing.
// `isa` picks the compiled variant (tests pass each one the CPU runs).
void attention(const AttentionArgs& args, AttentionScratch& scratch, Isa isa);
void attention(const AttentionArgs& args, AttentionScratch& scratch);
// Convenience for one-off calls: allocates its own scratch.
void attention(const AttentionArgs& args);

}  // namespace qwen2audio::kernels
