#include "kernels/cpu/rope.h"

#include <cmath>
#include <vector>

#include "kernels/cpu/vector_math.h"

namespace qwen2audio::kernels {
namespace {

struct RopeArgs {
  float* x;
  int64_t heads, head_dim, row_stride;
  const float* cos;
  const float* sin;
};

template <int L>
QWEN2AUDIO_ALWAYS_INLINE void rope_rows(const RopeArgs& args, int64_t begin, int64_t end) {
  using V = Vec<L>;
  const int64_t half = args.head_dim / 2;
  for (int64_t row = begin; row < end; ++row) {
    const float* c = args.cos + row * half;
    const float* s = args.sin + row * half;
    for (int64_t h = 0; h < args.heads; ++h) {
      float* first = args.x + row * args.row_stride + h * args.head_dim;
      float* second = first + half;
      int64_t i = 0;
      for (; i + L <= half; i += L) {
        const typename V::Floats x1 = V::load(first + i), x2 = V::load(second + i);
        const typename V::Floats cos_value = V::load(c + i), sin_value = V::load(s + i);
        V::store(first + i, x1 * cos_value - x2 * sin_value);
        V::store(second + i, x2 * cos_value + x1 * sin_value);
      }
      for (; i < half; ++i) {
        const float x1 = first[i];
        const float x2 = second[i];
        first[i] = x1 * c[i] - x2 * s[i];
        second[i] = x2 * c[i] + x1 * s[i];
      }
    }
  }
}
QWEN2AUDIO_LANE_VARIANTS(rope_rows, RopeArgs)

}  // namespace

void rope_inverse_frequencies(int64_t head_dim, double theta, float* out) {
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    out[i] = 1.0f / std::pow(static_cast<float>(theta), exponent);
  }
}

void rope_tables(const int64_t* positions, int64_t count, int64_t head_dim, const float* inverse_frequencies,
                 float* cos, float* sin) {
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float inverse_frequency = inverse_frequencies[i];
    for (int64_t p = 0; p < count; ++p) {
      const float angle = static_cast<float>(positions[p]) * inverse_frequency;
      cos[p * half + i] = std::cos(angle);
      sin[p * half + i] = std::sin(angle);
    }
  }
}

void rope_tables(const int64_t* positions, int64_t count, int64_t head_dim, double theta, float* cos, float* sin) {
  std::vector<float> inverse_frequencies(static_cast<size_t>(head_dim / 2));
  rope_inverse_frequencies(head_dim, theta, inverse_frequencies.data());
  rope_tables(positions, count, head_dim, inverse_frequencies.data(), cos, sin);
}

void apply_rope(float* x, int64_t rows, int64_t heads, int64_t head_dim, int64_t row_stride, const float* cos,
                const float* sin, Isa isa) {
  const auto worker = pick_variant(isa, rope_rows_avx512, rope_rows_avx2, rope_rows_baseline);
  const RopeArgs args{x, heads, head_dim, row_stride, cos, sin};
#pragma omp parallel for schedule(static) if (rows * heads * head_dim > (1 << 15))
  for (int64_t row = 0; row < rows; ++row) worker(args, row, row + 1);
}

void apply_rope(float* x, int64_t rows, int64_t heads, int64_t head_dim, int64_t row_stride, const float* cos,
                const float* sin) {
  apply_rope(x, rows, heads, head_dim, row_stride, cos, sin, best_isa());
}

}  // namespace qwen2audio::kernels
