#include "kernels/cpu/rope.h"

#include <cmath>

namespace qwen2audio::kernels {

void rope_tables(const int64_t* positions, int64_t count, int64_t head_dim, double theta, float* cos, float* sin) {
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    const float inverse_frequency = 1.0f / std::pow(static_cast<float>(theta), exponent);
    for (int64_t p = 0; p < count; ++p) {
      const float angle = static_cast<float>(positions[p]) * inverse_frequency;
      cos[p * half + i] = std::cos(angle);
      sin[p * half + i] = std::sin(angle);
    }
  }
}

void apply_rope(float* x, int64_t rows, int64_t heads, int64_t head_dim, int64_t row_stride, const float* cos,
                const float* sin) {
  const int64_t half = head_dim / 2;
#pragma omp parallel for schedule(static) if (rows * heads * head_dim > (1 << 15))
  for (int64_t row = 0; row < rows; ++row) {
    const float* c = cos + row * half;
    const float* s = sin + row * half;
    for (int64_t h = 0; h < heads; ++h) {
      float* first = x + row * row_stride + h * head_dim;
      float* second = first + half;
      for (int64_t i = 0; i < half; ++i) {
        const float x1 = first[i];
        const float x2 = second[i];
        first[i] = x1 * c[i] - x2 * s[i];
        second[i] = x2 * c[i] + x1 * s[i];
      }
    }
  }
}

}  // namespace qwen2audio::kernels
