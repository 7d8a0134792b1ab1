// Elementwise kernels between GEMMs: grid-stride loops over rows x columns (int64 indices, strided
// rows), float32 math with the accurate libdevice erff/expf, BF16 rounding to nearest even.

#include <cuda_bf16.h>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/kernels.h"

namespace qwen2audio::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__device__ inline float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f)); }

__global__ void to_bf16_kernel(const float* x, int64_t count, bf16* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x)
    out[i] = __float2bfloat16_rn(x[i]);
}

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

__global__ void silu_mul_kernel(const float* gate_up, int64_t ld, int64_t rows, int64_t inter, bf16* out,
                                int64_t ld_out) {
  const int64_t count = rows * inter;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / inter, c = i % inter;
    const float gate = gate_up[r * ld + c], up = gate_up[r * ld + inter + c];
    out[r * ld_out + c] = __float2bfloat16_rn(gate / (1.0f + expf(-gate)) * up);
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

}  // namespace

void to_bf16(const float* x, int64_t count, bf16* out, cudaStream_t stream) {
  detail::require(count >= 0, "to_bf16", "negative count");
  if (count == 0) return;
  to_bf16_kernel<<<detail::grid_for(count, kThreads), kThreads, 0, stream>>>(x, count, out);
  detail::check_launch("to_bf16");
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

void silu_mul(const float* gate_up, int64_t ld, int64_t rows, int64_t inter, bf16* out, int64_t ld_out,
              cudaStream_t stream) {
  detail::require(rows >= 0 && inter >= 0, "silu_mul", "negative shape");
  detail::require(ld >= 2 * inter && ld_out >= inter, "silu_mul", "row strides too small for gate and up halves");
  if (rows * inter == 0) return;
  silu_mul_kernel<<<detail::grid_for(rows * inter, kThreads), kThreads, 0, stream>>>(gate_up, ld, rows, inter, out,
                                                                                     ld_out);
  detail::check_launch("silu_mul");
}

void avg_pool_pairs(const float* x, int64_t rows, int64_t n, float* out, cudaStream_t stream) {
  detail::require(rows >= 0 && n >= 0, "avg_pool_pairs", "negative shape");
  const int64_t out_rows = rows / 2;
  if (out_rows * n == 0) return;
  avg_pool_pairs_kernel<<<detail::grid_for(out_rows * n, kThreads), kThreads, 0, stream>>>(x, out_rows, n, out);
  detail::check_launch("avg_pool_pairs");
}

}  // namespace qwen2audio::kernels::cuda
