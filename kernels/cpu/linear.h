#pragma once

#include <cstdint>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemv.h"

// nn.Linear for every projection of every model: y = x W^T + b, whatever W's storage, with the
// choice of algorithm by row count inside. Decode steps (up to kGemvMaxRows rows) stream each weight
// once through gemv; longer inputs (prefill, the audio encoder) re-use weights from cache in a
// matrix multiply: the integer product for quantized weights where the CPU has one
// (quantized_gemm.h), else the Gemm, quantized weights widened to floats a block of rows at a time.
namespace qwen2audio::kernels {

struct Linear {
  WeightMatrix weight;  // [out_features, in_features], in place (memory-mapped or packed at load)
  int64_t out_features = 0;
  int64_t in_features = 0;
  const float* bias = nullptr;  // [out_features], or null
  // Quantized weights the Gemm multiplies are widened to BF16 (where the Gemm has native BF16 and
  // the model computes in BF16) rather than float32.
  bool widen_to_bf16 = false;

  bool quantized() const { return is_quantized(weight.format); }
};

// Whether quantized layers should be packed into panels for the integer kernels (quantized_gemm.h):
// wherever the kernels' tier has them (VNNI or AVX2's vpmaddubsw), unless the Gemm's options turn it
// off. AMX CPUs included: there the panels measured 2.1x (2 threads) and 4.5x (16) faster than
// widening to BF16 for oneDNN 2.6's AMX product at prefill shapes (bench/RESULTS.md, "AMX host").
// linear() runs whatever layout its weight has.
bool integer_kernels(const Gemm& gemm);

// y = x W^T + b (y += with `accumulate`) for `rows` rows of x (row stride ldx) into y (row stride
// ldy), then `activation` (fused into the Gemm where oneDNN can). The Gemm carries the precision
// options and oneDNN's primitives.
void linear(Gemm& gemm, const Linear& layer, const float* x, int64_t rows, int64_t ldx, float* y, int64_t ldy,
            bool accumulate = false, Activation activation = Activation::None);

}  // namespace qwen2audio::kernels
