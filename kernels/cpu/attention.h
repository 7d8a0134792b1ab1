#pragma once

#include <cstdint>

namespace qwen2audio::kernels {

// Scaled dot-product attention, softmax(q k^T * scale + mask) v, for every batch row, head and
// query, with grouped-query attention (query head h reads key/value head h / (heads / kv_heads)).
//   q[b, t, h, :]   at q + b * q_batch_stride + t * q_row_stride + h * head_dim
//   k[b, g, s, :]   at k + b * kv_batch_stride + g * kv_head_stride + s * kv_row_stride (v alike)
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
  const float* k = nullptr;
  const float* v = nullptr;
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
};

void attention(const AttentionArgs& args);

}  // namespace qwen2audio::kernels
