#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/simd.h"
#include "runtime/buffer.h"
#include "runtime/errors.h"

namespace qwen2audio::kernels {
namespace {

thread_local Buffer<float> tls_scores;

}  // namespace

void attention(const AttentionArgs& args) {
  if (args.num_kv_heads <= 0 || args.num_heads % args.num_kv_heads != 0)
    throw InvalidArgument("attention: num_heads must be a multiple of num_kv_heads");
  if (args.causal && args.q_len > args.kv_len) throw InvalidArgument("attention: causal with more queries than keys");
  const int64_t group = args.num_heads / args.num_kv_heads;
  const int64_t offset = args.kv_len - args.q_len;
  const int64_t head_dim = args.head_dim;
  constexpr float kHidden = -std::numeric_limits<float>::infinity();

#pragma omp parallel for collapse(3) schedule(static)
  for (int64_t b = 0; b < args.batch; ++b) {
    for (int64_t h = 0; h < args.num_heads; ++h) {
      for (int64_t t = 0; t < args.q_len; ++t) {
        const float* q = args.q + b * args.q_batch_stride + t * args.q_row_stride + h * head_dim;
        float* out = args.out + b * args.out_batch_stride + t * args.out_row_stride + h * head_dim;
        const int64_t kv_head = h / group;
        const float* keys = args.k + b * args.kv_batch_stride + kv_head * args.kv_head_stride;
        const float* values = args.v + b * args.kv_batch_stride + kv_head * args.kv_head_stride;
        const uint8_t* mask = args.key_mask ? args.key_mask + b * args.key_mask_stride : nullptr;
        const int64_t visible = args.causal ? offset + t + 1 : args.kv_len;
        float* scores = tls_scores.reserve(static_cast<size_t>(std::max<int64_t>(visible, 1)));

        float max_score = kHidden;
        for (int64_t s = 0; s < visible; ++s) {
          if (mask && !mask[s]) {
            scores[s] = kHidden;
            continue;
          }
          scores[s] = simd::dot(q, keys + s * args.kv_row_stride, head_dim) * args.scale;
          max_score = std::max(max_score, scores[s]);
        }
        std::fill_n(out, head_dim, 0.0f);
        if (max_score == kHidden) continue;
        float total = 0.0f;
        for (int64_t s = 0; s < visible; ++s) {
          if (scores[s] == kHidden) continue;
          const float weight = std::exp(scores[s] - max_score);
          total += weight;
          simd::axpy(weight, values + s * args.kv_row_stride, out, head_dim);
        }
        const float inverse = 1.0f / total;
        for (int64_t d = 0; d < head_dim; ++d) out[d] *= inverse;
      }
    }
  }
}

}  // namespace qwen2audio::kernels
