#pragma once

// Shared by quantized_gemm.cpp (checks, dispatch) and the per-instruction-set file. Not a public
// interface.
#include <cstdint>

#include "kernels/cpu/quantized_gemm.h"

namespace qwen2audio::kernels::quantized_gemm_detail {

// One call after checks: quantized_gemm's arguments and the weight groups per row.
struct Problem {
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  const float* x = nullptr;
  int64_t ldx = 0;
  WeightMatrix w;
  int64_t group_size = 0;
  int64_t groups = 0;
  const float* bias = nullptr;
  float* y = nullptr;
  int64_t ldy = 0;
  bool accumulate = false;
};

void run_avx512_vnni(const Problem& problem);

}  // namespace qwen2audio::kernels::quantized_gemm_detail
