#include "kernels/cpu/conv1d.h"

namespace qwen2audio::kernels {

int64_t conv1d_output_length(int64_t length, int64_t kernel, int64_t stride, int64_t padding) {
  return (length + 2 * padding - kernel) / stride + 1;
}

void im2col_1d(const float* x, int64_t channels, int64_t length, int64_t channel_stride, int64_t time_stride,
               int64_t kernel, int64_t stride, int64_t padding, float* cols) {
  const int64_t out_length = conv1d_output_length(length, kernel, stride, padding);
  const int64_t width = channels * kernel;
#pragma omp parallel for schedule(static) if (out_length * width > (1 << 15))
  for (int64_t t = 0; t < out_length; ++t) {
    float* row = cols + t * width;
    for (int64_t c = 0; c < channels; ++c) {
      for (int64_t i = 0; i < kernel; ++i) {
        const int64_t source = t * stride + i - padding;
        row[c * kernel + i] = (source >= 0 && source < length) ? x[c * channel_stride + source * time_stride] : 0.0f;
      }
    }
  }
}

}  // namespace qwen2audio::kernels
