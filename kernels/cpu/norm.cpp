#include "kernels/cpu/norm.h"

#include <cmath>

namespace qwen2audio::kernels {

// Statistics accumulate in double: a 4096-wide row summed in float loses digits the reference
// (float32 with pairwise sums) keeps.
void rms_norm(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight, float eps, float* out,
              int64_t ldout) {
#pragma omp parallel for schedule(static) if (rows * dim > (1 << 15))
  for (int64_t row = 0; row < rows; ++row) {
    const float* in = x + row * ldx;
    float* result = out + row * ldout;
    double squares = 0.0;
    for (int64_t i = 0; i < dim; ++i) squares += static_cast<double>(in[i]) * in[i];
    const float variance = static_cast<float>(squares / static_cast<double>(dim));
    const float inverse = 1.0f / std::sqrt(variance + eps);
    for (int64_t i = 0; i < dim; ++i) result[i] = weight[i] * (in[i] * inverse);
  }
}

void layer_norm(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight, const float* bias,
                float eps, float* out, int64_t ldout) {
#pragma omp parallel for schedule(static) if (rows * dim > (1 << 15))
  for (int64_t row = 0; row < rows; ++row) {
    const float* in = x + row * ldx;
    float* result = out + row * ldout;
    double sum = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum += in[i];
    const double mean = sum / static_cast<double>(dim);
    double squares = 0.0;
    for (int64_t i = 0; i < dim; ++i) squares += (in[i] - mean) * (in[i] - mean);
    const float variance = static_cast<float>(squares / static_cast<double>(dim));
    const float inverse = 1.0f / std::sqrt(variance + eps);
    const float mean_f = static_cast<float>(mean);
    for (int64_t i = 0; i < dim; ++i) result[i] = (in[i] - mean_f) * inverse * weight[i] + bias[i];
  }
}

}  // namespace qwen2audio::kernels
