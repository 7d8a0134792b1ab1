#include "kernels/cpu/reduce.h"

#include <algorithm>
#include <cmath>

namespace qwen2audio::kernels {

int64_t argmax(const float* x, int64_t count) {
  int64_t best = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (std::isnan(x[i])) return i;
    if (x[i] > x[best]) best = i;
  }
  return best;
}

double log_sum_exp(const float* x, int64_t count) {
  float largest = -INFINITY;
  for (int64_t i = 0; i < count; ++i) {
    if (std::isnan(x[i])) return NAN;
    largest = std::max(largest, x[i]);
  }
  if (std::isinf(largest)) return largest;
  // Single-precision exponentials (vectorizable), summed in double: the sum of 150k terms keeps its digits.
  double total = 0.0;
  for (int64_t i = 0; i < count; ++i) total += static_cast<double>(std::exp(x[i] - largest));
  return static_cast<double>(largest) + std::log(total);
}

}  // namespace qwen2audio::kernels
