#pragma once

#include <cstdint>

namespace qwen2audio::kernels {

int64_t conv1d_output_length(int64_t length, int64_t kernel, int64_t stride, int64_t padding);

// Lays out the receptive fields of a 1-D convolution as rows, so that the convolution becomes one
// GEMM against its weights [out_channels, in_channels * kernel] (PyTorch's Conv1d layout, used in
// place): cols[t, c * kernel + i] = x[c, t * stride + i - padding], zero outside the signal.
// x[c, s] sits at x + c * channel_stride + s * time_stride, so channel-major mel features and
// time-major activations both read directly. cols: [out_length, channels * kernel].
void im2col_1d(const float* x, int64_t channels, int64_t length, int64_t channel_stride, int64_t time_stride,
               int64_t kernel, int64_t stride, int64_t padding, float* cols);

}  // namespace qwen2audio::kernels
