#include "kernels/cpu/elementwise.h"

#include <cmath>

namespace qwen2audio::kernels {

void gelu_erf(float* x, int64_t count) {
  constexpr float kInverseSqrt2 = 0.70710678118654752440f;
#pragma omp parallel for schedule(static) if (count > (1 << 15))
  for (int64_t i = 0; i < count; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * kInverseSqrt2));
}

void silu_mul(const float* gate, const float* up, float* out, int64_t count) {
#pragma omp parallel for schedule(static) if (count > (1 << 15))
  for (int64_t i = 0; i < count; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

void add_rows(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 15))
  for (int64_t row = 0; row < rows; ++row)
    for (int64_t col = 0; col < cols; ++col) y[row * ldy + col] += x[row * ldx + col];
}

}  // namespace qwen2audio::kernels
