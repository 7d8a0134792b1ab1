#pragma once

#include <cstdint>

#include "kernels/cpu/cpu_features.h"

namespace qwen2audio::kernels {

// Vectorised at run time for the widest ISA the CPU has (`isa` picks a variant, for tests). The
// math is vector_math.h's: every element, tails included, goes through the same formula, so
// results do not depend on where an element falls.

// x = x * Phi(x), the exact (erf) GELU, to a few float ulps.
void gelu_erf(float* x, int64_t count);
void gelu_erf(float* x, int64_t count, Isa isa);

// out = silu(gate) * up, silu(g) = g / (1 + exp(-g)). out may alias gate or up.
void silu_mul(const float* gate, const float* up, float* out, int64_t count);
void silu_mul(const float* gate, const float* up, float* out, int64_t count, Isa isa);

// y[r, :] += x[r, :] for `rows` rows of `cols` values.
void add_rows(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t rows, int64_t cols);

}  // namespace qwen2audio::kernels
