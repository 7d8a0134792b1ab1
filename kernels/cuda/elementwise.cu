// Elementwise kernels between GEMMs: grid-stride loops over rows x columns (int64 indices, strided
// rows), float32 math with the accurate libdevice erff/expf, BF16 rounding to nearest even.

#include <cuda_bf16.h>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/kernels.h"

namespace qwen2audio::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__device__ inline float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f)); }

__global__ void add_bias_kernel(float* x, int64_t ld, int64_t rows, int64_t n, const float* bias) {
  const int64_t count = rows * n;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / n, c = i % n;
    x[r * ld + c] += bias[c];
  }
}

__global__ void bias_gelu_bf16_kernel(const float* x, int64_t ld_x, int64_t rows, int64_t n, const float* bias,
                                      bf16* out, int64_t ld_out) {
  const int64_t count = rows * n;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / n, c = i % n;
    const float value = x[r * ld_x + c] + (bias != nullptr ? bias[c] : 0.0f);
    out[r * ld_out + c] = __float2bfloat16_rn(gelu_erf(value));
  }
}

__global__ void bias_gelu_f32_kernel(const float* x, int64_t ld_x, int64_t rows, int64_t n, const float* bias,
                                     const float* addend, float* out, int64_t ld_out) {
  const int64_t count = rows * n;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / n, c = i % n;
    const float value = x[r * ld_x + c] + (bias != nullptr ? bias[c] : 0.0f);
    float result = gelu_erf(value);
    if (addend != nullptr) result += addend[r * n + c];
    out[r * ld_out + c] = result;
  }
}

__global__ void to_bf16_rows_kernel(const float* x, int64_t ld_x, int64_t rows, int64_t n, bf16* out, int64_t ld_out) {
  const int64_t count = rows * n;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / n, c = i % n;
    out[r * ld_out + c] = __float2bfloat16_rn(x[r * ld_x + c]);
  }
}

__global__ void add_rows_kernel(float* y, int64_t ld_y, const float* x, int64_t ld_x, int64_t rows, int64_t n) {
  const int64_t count = rows * n;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / n, c = i % n;
    y[r * ld_y + c] += x[r * ld_x + c];
  }
}

__device__ inline void store_element(float* out, float value) { *out = value; }
__device__ inline void store_element(bf16* out, float value) { *out = __float2bfloat16_rn(value); }

template <typename Out>
__global__ void silu_mul_rows_kernel(const float* gate, int64_t ld_gate, const float* up, int64_t ld_up, int64_t rows,
                                     int64_t n, Out* out, int64_t ld_out) {
  const int64_t count = rows * n;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / n, c = i % n;
    const float g = gate[r * ld_gate + c];
    store_element(out + r * ld_out + c, g / (1.0f + expf(-g)) * up[r * ld_up + c]);
  }
}

__global__ void avg_pool_pairs_kernel(const float* x, int64_t out_rows, int64_t n, float* out) {
  const int64_t count = out_rows * n;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / n, c = i % n;
    out[i] = (x[2 * r * n + c] + x[(2 * r + 1) * n + c]) * 0.5f;
  }
}

void check_matrix(const char* kernel, int64_t rows, int64_t n, int64_t ld_in, int64_t ld_out) {
  detail::require(rows >= 0 && n >= 0, kernel, "negative shape");
  detail::require(ld_in >= n && ld_out >= n, kernel, "row strides must be at least the row length");
}

template <typename Out>
void launch_silu_mul(const float* gate, int64_t ld_gate, const float* up, int64_t ld_up, int64_t rows, int64_t n,
                     Out* out, int64_t ld_out, cudaStream_t stream) {
  check_matrix("silu_mul", rows, n, ld_gate < ld_up ? ld_gate : ld_up, ld_out);
  if (rows * n == 0) return;
  silu_mul_rows_kernel<Out>
      <<<detail::grid_for(rows * n, kThreads), kThreads, 0, stream>>>(gate, ld_gate, up, ld_up, rows, n, out, ld_out);
  detail::check_launch("silu_mul");
}

}  // namespace

void to_bf16(const float* x, int64_t ld_x, int64_t rows, int64_t n, bf16* out, int64_t ld_out, cudaStream_t stream) {
  check_matrix("to_bf16", rows, n, ld_x, ld_out);
  if (rows * n == 0) return;
  to_bf16_rows_kernel<<<detail::grid_for(rows * n, kThreads), kThreads, 0, stream>>>(x, ld_x, rows, n, out, ld_out);
  detail::check_launch("to_bf16");
}

void add_rows(float* y, int64_t ld_y, const float* x, int64_t ld_x, int64_t rows, int64_t n, cudaStream_t stream) {
  check_matrix("add_rows", rows, n, ld_x, ld_y);
  if (rows * n == 0) return;
  add_rows_kernel<<<detail::grid_for(rows * n, kThreads), kThreads, 0, stream>>>(y, ld_y, x, ld_x, rows, n);
  detail::check_launch("add_rows");
}

void silu_mul(const float* gate, int64_t ld_gate, const float* up, int64_t ld_up, int64_t rows, int64_t n, bf16* out,
              int64_t ld_out, cudaStream_t stream) {
  launch_silu_mul(gate, ld_gate, up, ld_up, rows, n, out, ld_out, stream);
}

void silu_mul(const float* gate, int64_t ld_gate, const float* up, int64_t ld_up, int64_t rows, int64_t n, float* out,
              int64_t ld_out, cudaStream_t stream) {
  launch_silu_mul(gate, ld_gate, up, ld_up, rows, n, out, ld_out, stream);
}

void add_bias(float* x, int64_t ld, int64_t rows, int64_t n, const float* bias, cudaStream_t stream) {
  check_matrix("add_bias", rows, n, ld, ld);
  if (rows * n == 0) return;
  add_bias_kernel<<<detail::grid_for(rows * n, kThreads), kThreads, 0, stream>>>(x, ld, rows, n, bias);
  detail::check_launch("add_bias");
}

void bias_gelu(const float* x, int64_t ld_x, int64_t rows, int64_t n, const float* bias, bf16* out, int64_t ld_out,
               cudaStream_t stream) {
  check_matrix("bias_gelu", rows, n, ld_x, ld_out);
  if (rows * n == 0) return;
  bias_gelu_bf16_kernel<<<detail::grid_for(rows * n, kThreads), kThreads, 0, stream>>>(x, ld_x, rows, n, bias, out,
                                                                                       ld_out);
  detail::check_launch("bias_gelu");
}

void bias_gelu(const float* x, int64_t ld_x, int64_t rows, int64_t n, const float* bias, const float* addend,
               float* out, int64_t ld_out, cudaStream_t stream) {
  check_matrix("bias_gelu", rows, n, ld_x, ld_out);
  if (rows * n == 0) return;
  bias_gelu_f32_kernel<<<detail::grid_for(rows * n, kThreads), kThreads, 0, stream>>>(x, ld_x, rows, n, bias, addend,
                                                                                      out, ld_out);
  detail::check_launch("bias_gelu");
}

void avg_pool_pairs(const float* x, int64_t rows, int64_t n, float* out, cudaStream_t stream) {
  detail::require(rows >= 0 && n >= 0, "avg_pool_pairs", "negative shape");
  const int64_t out_rows = rows / 2;
  if (out_rows * n == 0) return;
  avg_pool_pairs_kernel<<<detail::grid_for(out_rows * n, kThreads), kThreads, 0, stream>>>(x, out_rows, n, out);
  detail::check_launch("avg_pool_pairs");
}

}  // namespace qwen2audio::kernels::cuda
