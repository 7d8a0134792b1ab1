#pragma once

#include <cstdint>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/gemv.h"

// Matrix multiply of many float32 activation rows with weight-only quantized weights (gemv.h's Int8
// and Int4 formats) on the CPU's integer dot-product units: the prefill of a quantized model,
// without widening its weights back to floats.
//
// Activations are quantized per row and weight group to int8 levels, nearbyint(x * 127 / max|x|),
// as gemv does for int4 weights (an activation moves by at most 1/254 of its group's largest
// magnitude). Each group's products are then exact int32 sums, and only a group's total is scaled:
//   y[m, n] = sum over groups g of (max|x[m, g]| / 127) * scale[n, g] * sum_{k in g} level[m, k] code[n, k]
// (+ bias[n]; added to y with `accumulate`). Int4 codes count as their levels c - 8.
namespace qwen2audio::kernels {

struct QuantizedGemmArgs {
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  const float* x = nullptr;
  int64_t ldx = 0;
  WeightMatrix w;               // Int8 or Int4
  const float* bias = nullptr;  // [n] or null
  float* y = nullptr;
  int64_t ldy = 0;
  bool accumulate = false;
};

// Whether `isa` has the kernel: AVX512-VNNI, which the Avx512Bf16 tier includes.
bool quantized_gemm_supported(Isa isa);

// Throws InvalidArgument on inconsistent arguments or on a tier without the kernel. Runs on the
// calling thread's OpenMP thread count, splitting n into panels of 32 columns; allocates nothing
// once the calling thread (and each worker) has seen a call of this size.
void quantized_gemm(const QuantizedGemmArgs& args, Isa isa = best_isa());

}  // namespace qwen2audio::kernels
