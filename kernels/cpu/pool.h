#pragma once

#include <cstdint>

namespace qwen2audio::kernels {

// Average pooling along rows (time): out[t, c] = mean of x[t * stride + i, c] for i < window,
// for t < (rows - window) / stride + 1, as torch's AvgPool1d without padding.
void avg_pool_rows(const float* x, int64_t rows, int64_t channels, int64_t ldx, int64_t window, int64_t stride,
                   float* out, int64_t ldout);

}  // namespace qwen2audio::kernels
