#pragma once

#include <cstdint>

#include "kernels/cpu/cpu_features.h"

namespace qwen2audio::kernels {

// Rotary embedding tables for the rotate-half convention: angle[p, i] = position_p * theta^(-2i/D)
// for i < D/2, with the inverse frequencies and the product in float32 as the reference computes
// them. cos and sin: [count, head_dim / 2].
void rope_tables(const int64_t* positions, int64_t count, int64_t head_dim, double theta, float* cos, float* sin);
// The same from inverse frequencies [head_dim / 2] computed once per model (scaled RoPE variants
// rewrite them; rope_inverse_frequencies gives the plain ones, bit for bit those above).
void rope_tables(const int64_t* positions, int64_t count, int64_t head_dim, const float* inverse_frequencies,
                 float* cos, float* sin);
void rope_inverse_frequencies(int64_t head_dim, double theta, float* out);

// Rotates each head of each row in place: (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), where
// x1 and x2 are the first and second halves of the head. Row r uses table row r.
//   x[r, h, :] at x + r * row_stride + h * head_dim
// Vectorised at run time; `isa` picks a variant (tests).
void apply_rope(float* x, int64_t rows, int64_t heads, int64_t head_dim, int64_t row_stride, const float* cos,
                const float* sin);
void apply_rope(float* x, int64_t rows, int64_t heads, int64_t head_dim, int64_t row_stride, const float* cos,
                const float* sin, Isa isa);

}  // namespace qwen2audio::kernels
