#include "kernels/cpu/pool.h"

namespace qwen2audio::kernels {

void avg_pool_rows(const float* x, int64_t rows, int64_t channels, int64_t ldx, int64_t window, int64_t stride,
                   float* out, int64_t ldout) {
  if (rows < window) return;
  const int64_t out_rows = (rows - window) / stride + 1;
  const float divisor = static_cast<float>(window);
#pragma omp parallel for schedule(static) if (out_rows * channels > (1 << 15))
  for (int64_t t = 0; t < out_rows; ++t) {
    // Channels innermost: contiguous rows, which the compiler vectorises.
    float* result = out + t * ldout;
    const float* first = x + t * stride * ldx;
    for (int64_t c = 0; c < channels; ++c) result[c] = first[c];
    for (int64_t i = 1; i < window; ++i)
      for (int64_t c = 0; c < channels; ++c) result[c] += first[i * ldx + c];
    for (int64_t c = 0; c < channels; ++c) result[c] /= divisor;
  }
}

}  // namespace qwen2audio::kernels
