// Rotary embedding. One thread per (row, frequency) computes its angle once and rotates that pair
// in every head of the row. The tables follow kernels/cpu/rope.cpp's float32 arithmetic: powf of
// float operands, 1.0f / it, float(position) * inv_freq. CUDA's powf/cosf/sinf are not correctly
// rounded (up to 2-4 ulp) while glibc's nearly are, so each is evaluated in double and rounded to
// float once, which reproduces the CPU's float tables (a 1-ulp change in inv_freq would move the
// angle of position 8000 by ~5e-4 rad).

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/kernels.h"

namespace qwen2audio::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void rope_kernel(float* x, int64_t ld, int64_t rows, int64_t heads, int64_t head_dim,
                            const int64_t* positions, float theta) {
  const int64_t half = head_dim / 2;
  const int64_t count = rows * half;
  for (int64_t item = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; item < count;
       item += int64_t{gridDim.x} * blockDim.x) {
    const int64_t row = item / half, i = item % half;
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    const float power = static_cast<float>(pow(static_cast<double>(theta), static_cast<double>(exponent)));
    const float inverse_frequency = 1.0f / power;
    const float angle = static_cast<float>(positions[row]) * inverse_frequency;
    double sin_double, cos_double;
    sincos(static_cast<double>(angle), &sin_double, &cos_double);
    const float c = static_cast<float>(cos_double), s = static_cast<float>(sin_double);
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

void rope(float* x, int64_t ld, int64_t rows, int64_t heads, int64_t head_dim, const int64_t* positions, float theta,
          cudaStream_t stream) {
  detail::require(rows >= 0 && heads >= 0, "rope", "negative shape");
  detail::require(head_dim >= 2 && head_dim % 2 == 0, "rope", "head_dim must be even, got " + std::to_string(head_dim));
  detail::require(ld >= heads * head_dim, "rope", "row stride smaller than heads * head_dim");
  const int64_t count = rows * (head_dim / 2);
  if (count == 0 || heads == 0) return;
  rope_kernel<<<detail::grid_for(count, kThreads), kThreads, 0, stream>>>(x, ld, rows, heads, head_dim, positions,
                                                                          theta);
  detail::check_launch("rope");
}

}  // namespace qwen2audio::kernels::cuda
