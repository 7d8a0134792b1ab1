#pragma once

#include <cstdint>

namespace qwen2audio::kernels {

// out = x / sqrt(mean(x^2) + eps) * weight, per row of `dim` values. out may equal x.
void rms_norm(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight, float eps, float* out,
              int64_t ldout);

// out = (x - mean) / sqrt(var + eps) * weight + bias, biased variance, per row. out may equal x.
void layer_norm(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight, const float* bias,
                float eps, float* out, int64_t ldout);

}  // namespace qwen2audio::kernels
