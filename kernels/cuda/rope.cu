// Rotary embedding: the tables, then the rotation. The tables follow kernels/cpu/rope.cpp's float32
// arithmetic: the angle float(position) * inv_freq in float (the frequencies come from the host,
// computed there once, scaled variants included). CUDA's cosf/sinf are not correctly rounded (up to
// 2 ulp) while glibc's nearly are, so each is evaluated in double and rounded to float once, which
// reproduces the CPU's tables. The rotation reads a row's table once for every head of the row.

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/kernels.h"

namespace qwen2audio::kernels::cuda {
namespace {

constexpr int kThreads = 256;

// One thread per (row, frequency).
__global__ void rope_tables_kernel(const int64_t* positions, int64_t rows, const float* inverse_frequencies,
                                   int64_t half, float* cos, float* sin) {
  const int64_t count = rows * half;
  for (int64_t item = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; item < count;
       item += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = item / half, i = item % half;
    const float angle = static_cast<float>(positions[row]) * inverse_frequencies[i];
    double sin_double, cos_double;
    sincos(static_cast<double>(angle), &sin_double, &cos_double);
    cos[item] = static_cast<float>(cos_double);
    sin[item] = static_cast<float>(sin_double);
  }
}

__global__ void apply_rope_kernel(float* x, int64_t ld, int64_t rows, int64_t heads, int64_t head_dim, const float* cos,
                                  const float* sin) {
  const int64_t half = head_dim / 2;
  const int64_t count = rows * half;
  for (int64_t item = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; item < count;
       item += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = item / half, i = item % half;
    const float c = cos[item], s = sin[item];
    float* base = x + row * ld + i;
    for (int64_t h = 0; h < heads; ++h) {
      float* first = base + h * head_dim;
      const float x1 = first[0], x2 = first[half];
      first[0] = x1 * c - x2 * s;
      first[half] = x2 * c + x1 * s;
    }
  }
}

}  // namespace

void rope_tables(const int64_t* positions, int64_t rows, const float* inverse_frequencies, int64_t half, float* cos,
                 float* sin, cudaStream_t stream) {
  detail::require(rows >= 0 && half >= 1, "rope_tables", "negative shape");
  if (rows == 0) return;
  rope_tables_kernel<<<detail::grid_for(rows * half, kThreads), kThreads, 0, stream>>>(
      positions, rows, inverse_frequencies, half, cos, sin);
  detail::check_launch("rope_tables");
}

void apply_rope(float* x, int64_t ld, int64_t rows, int64_t heads, int64_t head_dim, const float* cos, const float* sin,
                cudaStream_t stream) {
  detail::require(rows >= 0 && heads >= 0, "apply_rope", "negative shape");
  detail::require(head_dim >= 2 && head_dim % 2 == 0, "apply_rope",
                  "head_dim must be even, got " + std::to_string(head_dim));
  detail::require(ld >= heads * head_dim, "apply_rope", "row stride smaller than heads * head_dim");
  if (rows == 0 || heads == 0) return;
  apply_rope_kernel<<<detail::grid_for(rows * (head_dim / 2), kThreads), kThreads, 0, stream>>>(x, ld, rows, heads,
                                                                                                head_dim, cos, sin);
  detail::check_launch("apply_rope");
}

}  // namespace qwen2audio::kernels::cuda
