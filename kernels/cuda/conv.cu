// im2col for the encoder's kernel-3, padding-1 convolutions; the GEMM (gemm.cu) does the rest.

#include <cuda_bf16.h>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/kernels.h"

namespace qwen2audio::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void im2col_k3_kernel(const float* input, int64_t channels, int64_t frames, int64_t channel_stride,
                                 int64_t frame_stride, int64_t stride, int64_t out_frames, bf16* cols) {
  const int64_t width = channels * 3;
  const int64_t count = out_frames * width;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t t = i / width, column = i % width;
    const int64_t c = column / 3, j = column % 3;
    const int64_t source = t * stride + j - 1;
    const float value = source >= 0 && source < frames ? input[c * channel_stride + source * frame_stride] : 0.0f;
    cols[i] = __float2bfloat16_rn(value);
  }
}

}  // namespace

void im2col_k3(const float* input, int64_t channels, int64_t frames, int64_t channel_stride, int64_t frame_stride,
               int64_t stride, bf16* cols, cudaStream_t stream) {
  detail::require(channels >= 0 && frames >= 1, "im2col_k3", "need at least one frame and no negative channels");
  detail::require(stride >= 1, "im2col_k3", "stride must be positive");
  const int64_t out_frames = (frames - 1) / stride + 1;
  const int64_t count = out_frames * channels * 3;
  if (count == 0) return;
  im2col_k3_kernel<<<detail::grid_for(count, kThreads), kThreads, 0, stream>>>(input, channels, frames, channel_stride,
                                                                               frame_stride, stride, out_frames, cols);
  detail::check_launch("im2col_k3");
}

}  // namespace qwen2audio::kernels::cuda
