#pragma once

#include <cstdint>
#include <memory>

#include "runtime/dtype.h"

namespace qwen2audio::kernels {

// An elementwise function applied to x W^T + bias before it is stored: inside oneDNN's matmul as a
// post-op (one pass over y fewer), after the product on the other paths.
enum class Activation : uint8_t { None, GeluErf };

// y = x W^T + bias, or y += x W^T + bias with `accumulate` (a residual connection for free).
// x: [m, k] float32, row stride ldx. W: [n, k] row-major with row stride ldw, the nn.Linear layout
// as checkpoints store it, read in place in F32 or BF16. bias: [n] float32 or null. y: [m, n]
// float32, row stride ldy. Accumulation is always float32.
struct GemmArgs {
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  const float* x = nullptr;
  int64_t ldx = 0;
  const void* w = nullptr;
  DType w_dtype = DType::F32;
  int64_t ldw = 0;
  const float* bias = nullptr;
  float* y = nullptr;
  int64_t ldy = 0;
  bool accumulate = false;
  Activation activation = Activation::None;  // not with accumulate
};

// The activation over rows [0, m) of y (row stride ldy), columns [0, n): the paths that cannot fuse it.
void apply_activation(Activation activation, float* y, int64_t m, int64_t n, int64_t ldy);

struct GemmOptions {
  // BF16 weights meet activations rounded to BF16, the native contract of BF16 matrix units
  // (AVX512-BF16, AMX). Where the CPU lacks them the same numbers are emulated, so results do not
  // depend on the machine. Off keeps float32 activations (emulated path only).
  bool round_bf16_inputs = true;
  // Off forces the portable BF16 path even where oneDNN has a native one (tests compare the two).
  bool allow_native_bf16 = true;
  // Weight-only quantized layers in the panel layout on the integer dot-product units
  // (quantized_gemm.h: activations quantized to int8, decode and prefill) where the CPU has them;
  // off keeps the rows as stored, the gemv kernels of gemv.h for decode and weights widened to
  // floats for prefill (tests and benchmarks compare the two).
  bool integer_kernels = true;
};

// One per model: oneDNN primitives are created once per problem shape and cached here. Safe to
// call from several threads at once; each call runs with the calling thread's OpenMP thread count.
class Gemm {
 public:
  explicit Gemm(GemmOptions options = {});
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  void operator()(const GemmArgs& args);
  bool native_bf16() const;
  const GemmOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace qwen2audio::kernels
