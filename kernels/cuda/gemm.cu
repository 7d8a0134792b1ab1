// y = x w^T through cublasGemmEx: BF16 operands, float32 output and accumulation (tensor cores).
// cuBLAS is column-major; a row-major [r, c] matrix with row stride ld is its column-major
// transpose [c, r] with the same ld, so y^T = w x^T is one GEMM with w transposed:
//   C (n x m, ldy) = op(A) B, A = w^T viewed column-major (k x n, ldw) taken transposed, B = x^T (k x m, ldx).

#include <climits>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/kernels.h"

namespace qwen2audio::kernels::cuda {

Gemm::Gemm() { detail::check_cublas(cublasCreate(&handle_), "Gemm: cublasCreate"); }

Gemm::~Gemm() {
  if (handle_ != nullptr) cublasDestroy(handle_);
}

void Gemm::operator()(int64_t m, int64_t n, int64_t k, const __nv_bfloat16* x, int64_t ldx, const __nv_bfloat16* w,
                      int64_t ldw, float* y, int64_t ldy, bool accumulate, const float* bias, cudaStream_t stream) {
  detail::require(m >= 0 && n >= 0 && k >= 0, "Gemm", "negative shape");
  detail::require(m <= INT_MAX && n <= INT_MAX && k <= INT_MAX && ldx <= INT_MAX && ldw <= INT_MAX && ldy <= INT_MAX,
                  "Gemm", "shape or stride beyond cuBLAS's int range");
  detail::require(ldx >= (k > 0 ? k : 1) && ldw >= (k > 0 ? k : 1) && ldy >= (n > 0 ? n : 1), "Gemm",
                  "row strides must be at least the row lengths");
  if (m == 0 || n == 0) return;
  detail::check_cublas(cublasSetStream(handle_, stream), "Gemm: cublasSetStream");
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  detail::check_cublas(
      cublasGemmEx(handle_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k),
                   &alpha, w, CUDA_R_16BF, static_cast<int>(ldw), x, CUDA_R_16BF, static_cast<int>(ldx), &beta, y,
                   CUDA_R_32F, static_cast<int>(ldy), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
      "Gemm: cublasGemmEx");
  if (bias != nullptr) add_bias(y, ldy, m, n, bias, stream);
}

}  // namespace qwen2audio::kernels::cuda
