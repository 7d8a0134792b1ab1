#pragma once

#include <cstdint>

namespace qwen2audio::kernels {

// x = x * Phi(x), the exact (erf) GELU.
void gelu_erf(float* x, int64_t count);

// out = silu(gate) * up, silu(g) = g / (1 + exp(-g)). out may alias gate or up.
void silu_mul(const float* gate, const float* up, float* out, int64_t count);

// y[r, :] += x[r, :] for `rows` rows of `cols` values.
void add_rows(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t rows, int64_t cols);

}  // namespace qwen2audio::kernels
