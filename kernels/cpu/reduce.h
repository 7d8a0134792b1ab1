#pragma once

#include <cstdint>

namespace qwen2audio::kernels {

// Index of the largest value; the first one on ties, as torch.argmax. NaN counts as largest.
int64_t argmax(const float* x, int64_t count);

}  // namespace qwen2audio::kernels
