// Row normalisations: one block per row. Statistics accumulate in double, as kernels/cpu/norm does,
// so a 4096-wide row keeps the digits the reference keeps; the rows are read from global memory
// (L1/L2 resident) once per pass.

#include <cuda_bf16.h>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/kernels.h"

namespace qwen2audio::kernels::cuda {
namespace {

constexpr int kNormThreads = 256;

__device__ inline void store_value(float* out, float value) { *out = value; }
__device__ inline void store_value(bf16* out, float value) { *out = __float2bfloat16_rn(value); }

template <typename Out>
__global__ void __launch_bounds__(kNormThreads)
    rms_norm_kernel(const float* x, int64_t ld_x, int64_t n, const float* weight, float eps, Out* out, int64_t ld_out) {
  __shared__ double scratch[32];
  const float* row = x + static_cast<int64_t>(blockIdx.x) * ld_x;
  double sum = 0.0;
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) {
    const double value = row[c];
    sum += value * value;
  }
  sum = detail::block_sum(sum, scratch);
  const float inverse = static_cast<float>(1.0 / sqrt(sum / static_cast<double>(n) + static_cast<double>(eps)));
  Out* out_row = out + static_cast<int64_t>(blockIdx.x) * ld_out;
  // Every thread has read its values of the row before the sum completes, so out may be x.
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) store_value(out_row + c, row[c] * inverse * weight[c]);
}

template <typename Out>
__global__ void __launch_bounds__(kNormThreads)
    layer_norm_kernel(const float* x, int64_t ld_x, int64_t n, const float* weight, const float* bias, float eps,
                      Out* out, int64_t ld_out) {
  __shared__ double scratch[32];
  const float* row = x + static_cast<int64_t>(blockIdx.x) * ld_x;
  double sum = 0.0;
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) sum += row[c];
  const double mean = detail::block_sum(sum, scratch) / static_cast<double>(n);
  // Second pass over the centred values: exact where the one-pass E[x^2] - mean^2 would cancel.
  double squares = 0.0;
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) {
    const double centred = row[c] - mean;
    squares += centred * centred;
  }
  const double variance = detail::block_sum(squares, scratch) / static_cast<double>(n);
  const double inverse = 1.0 / sqrt(variance + static_cast<double>(eps));
  const float mean_f = static_cast<float>(mean), inverse_f = static_cast<float>(inverse);
  Out* out_row = out + static_cast<int64_t>(blockIdx.x) * ld_out;
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x)
    store_value(out_row + c, (row[c] - mean_f) * inverse_f * weight[c] + bias[c]);
}

void check_rows(const char* kernel, int64_t rows, int64_t n, int64_t ld_x, int64_t ld_out) {
  detail::require(rows >= 0 && rows <= 0x7fffffff, kernel, "rows out of range: " + std::to_string(rows));
  detail::require(n >= 1, kernel, "row length must be positive, got " + std::to_string(n));
  detail::require(ld_x >= n && ld_out >= n, kernel, "row strides must be at least the row length");
}

template <typename Out>
void launch_layer_norm(const float* x, int64_t ld_x, int64_t rows, int64_t n, const float* weight, const float* bias,
                       float eps, Out* out, int64_t ld_out, cudaStream_t stream) {
  check_rows("layer_norm", rows, n, ld_x, ld_out);
  if (rows == 0) return;
  layer_norm_kernel<Out>
      <<<static_cast<unsigned>(rows), kNormThreads, 0, stream>>>(x, ld_x, n, weight, bias, eps, out, ld_out);
  detail::check_launch("layer_norm");
}

template <typename Out>
void launch_rms_norm(const float* x, int64_t ld_x, int64_t rows, int64_t n, const float* weight, float eps, Out* out,
                     int64_t ld_out, cudaStream_t stream) {
  check_rows("rms_norm", rows, n, ld_x, ld_out);
  if (rows == 0) return;
  rms_norm_kernel<Out><<<static_cast<unsigned>(rows), kNormThreads, 0, stream>>>(x, ld_x, n, weight, eps, out, ld_out);
  detail::check_launch("rms_norm");
}

}  // namespace

void rms_norm(const float* x, int64_t ld_x, int64_t rows, int64_t n, const float* weight, float eps, bf16* out,
              int64_t ld_out, cudaStream_t stream) {
  launch_rms_norm(x, ld_x, rows, n, weight, eps, out, ld_out, stream);
}

void rms_norm(const float* x, int64_t ld_x, int64_t rows, int64_t n, const float* weight, float eps, float* out,
              int64_t ld_out, cudaStream_t stream) {
  launch_rms_norm(x, ld_x, rows, n, weight, eps, out, ld_out, stream);
}

void layer_norm(const float* x, int64_t ld_x, int64_t rows, int64_t n, const float* weight, const float* bias,
                float eps, bf16* out, int64_t ld_out, cudaStream_t stream) {
  launch_layer_norm(x, ld_x, rows, n, weight, bias, eps, out, ld_out, stream);
}

void layer_norm(const float* x, int64_t ld_x, int64_t rows, int64_t n, const float* weight, const float* bias,
                float eps, float* out, int64_t ld_out, cudaStream_t stream) {
  launch_layer_norm(x, ld_x, rows, n, weight, bias, eps, out, ld_out, stream);
}

}  // namespace qwen2audio::kernels::cuda
