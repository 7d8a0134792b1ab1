#include "kernels/cpu/reduce.h"

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

}  // namespace qwen2audio::kernels
