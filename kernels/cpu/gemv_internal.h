#pragma once

// Shared by gemv.cpp (checks, dispatch, threading) and the per-instruction-set files, each of
// which compiles its kernels under its own `#pragma GCC target`. Not a public interface.
#include <cstdint>

#include "kernels/cpu/gemv.h"

namespace qwen2audio::kernels::gemv_detail {

// One gemv call after checks. x is float32 [m, k] (already rounded to BF16 values when the call
// asks for it); x_bf16, when set, holds the same rows as BF16 bits with row stride ldx_bf16 (even,
// zero-padded), for the AVX512-BF16 dot product.
struct Problem {
  int64_t m = 0;
  int64_t k = 0;
  const float* x = nullptr;
  int64_t ldx = 0;
  const uint16_t* x_bf16 = nullptr;
  int64_t ldx_bf16 = 0;
  WeightMatrix w;
  const float* bias = nullptr;
  float* y = nullptr;
  int64_t ldy = 0;
  bool accumulate = false;

  void store(int64_t row, int64_t column, float dot) const {
    float* out = y + row * ldy + column;
    const float value = dot + (bias ? bias[column] : 0.0f);
    *out = accumulate ? *out + value : value;
  }
};

// Computes output columns [begin, end) of every row. begin is a multiple of 4.
using RangeKernel = void (*)(const Problem& problem, int64_t begin, int64_t end);

RangeKernel scalar_kernel(WeightFormat format);
RangeKernel avx2_kernel(WeightFormat format);
// bf16_dot: BF16 weights through vdpbf16ps (needs Problem::x_bf16).
RangeKernel avx512_kernel(WeightFormat format, bool bf16_dot);

}  // namespace qwen2audio::kernels::gemv_detail
