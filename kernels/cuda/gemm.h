#pragma once

// Linear layers on the GPU through cuBLAS (BF16 tensor cores, float32 accumulation).

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace qwen2audio::kernels::cuda {

// y[m, n] (float32, row stride ldy) = x[m, k] (BF16, ldx) * w[n, k]^T (BF16, ldw: torch's
// nn.Linear weight, row-major)  (+ y when accumulate, for residual adds)  (+ bias[n], float32,
// when non-null). One handle per Gemm; a Gemm serves one stream at a time (a session owns one).
class Gemm {
 public:
  Gemm();
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  void operator()(int64_t m, int64_t n, int64_t k, const __nv_bfloat16* x, int64_t ldx, const __nv_bfloat16* w,
                  int64_t ldw, float* y, int64_t ldy, bool accumulate, const float* bias, cudaStream_t stream);

 private:
  cublasHandle_t handle_ = nullptr;
};

}  // namespace qwen2audio::kernels::cuda
