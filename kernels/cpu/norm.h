#pragma once

#include <cstdint>

#include "kernels/cpu/cpu_features.h"

namespace qwen2audio::kernels {

// Row statistics accumulate in double (vectorised): a 4096-wide row summed in float loses digits
// the reference (float32 with pairwise sums) keeps. `isa` picks a variant (for tests).

// out = x / sqrt(mean(x^2) + eps) * weight, per row of `dim` values. out may equal x.
void rms_norm(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight, float eps, float* out,
              int64_t ldout);
void rms_norm(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight, float eps, float* out,
              int64_t ldout, Isa isa);

// out = (x - mean) / sqrt(var + eps) * weight + bias, biased variance, per row. out may equal x.
void layer_norm(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight, const float* bias,
                float eps, float* out, int64_t ldout);
void layer_norm(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight, const float* bias,
                float eps, float* out, int64_t ldout, Isa isa);

}  // namespace qwen2audio::kernels
