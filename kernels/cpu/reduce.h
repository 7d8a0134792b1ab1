#pragma once

#include <cstdint>

namespace qwen2audio::kernels {

// Index of the largest value; the first one on ties, as torch.argmax. NaN counts as largest.
int64_t argmax(const float* x, int64_t count);

// log(sum(exp(x))) without overflow, read in place (a log-softmax of one entry needs only this).
// -inf when every value is -inf; NaN when any is NaN.
double log_sum_exp(const float* x, int64_t count);

}  // namespace qwen2audio::kernels
