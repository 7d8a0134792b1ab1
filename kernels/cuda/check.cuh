#pragma once

// Error reporting shared by the CUDA kernels: every failure becomes a std::runtime_error that names
// the kernel or library call, so a caller far from the launch still learns what broke.

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cufft.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace qwen2audio::kernels::cuda::detail {

inline void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorName(status) + " (" +
                             cudaGetErrorString(status) + ")");
}

// After a <<<...>>> launch: reports bad launch configurations (and any earlier asynchronous fault).
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

inline void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("cuBLAS error in ") + what + ": " + cublasGetStatusName(status) + " (" +
                             cublasGetStatusString(status) + ")");
}

inline void check_cufft(cufftResult status, const char* what) {
  if (status != CUFFT_SUCCESS)
    throw std::runtime_error(std::string("cuFFT error in ") + what + ": code " +
                             std::to_string(static_cast<int>(status)));
}

inline void require(bool condition, const char* kernel, const std::string& message) {
  if (!condition) throw std::invalid_argument(std::string(kernel) + ": " + message);
}

// Blocks of `threads` covering `count` items with a grid-stride loop; capped so that huge counts
// loop instead of overflowing the grid.
inline unsigned grid_for(int64_t count, int threads) {
  const int64_t blocks = (count + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > (int64_t{1} << 20) ? (int64_t{1} << 20) : blocks));
}

// Block-wide sum of one value per thread (blockDim.x a multiple of 32, at most 1024). `scratch`: 32
// values of shared memory. Every thread gets the result.
template <typename T>
__device__ inline T block_sum(T value, T* scratch) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  __syncthreads();  // scratch may still be read from a previous call
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  value = lane < warps ? scratch[lane] : T(0);
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

__device__ inline float warp_max(float value) {
  for (int offset = 16; offset > 0; offset >>= 1) value = fmaxf(value, __shfl_xor_sync(0xffffffffu, value, offset));
  return value;
}

__device__ inline float warp_sum(float value) {
  for (int offset = 16; offset > 0; offset >>= 1) value += __shfl_xor_sync(0xffffffffu, value, offset);
  return value;
}

}  // namespace qwen2audio::kernels::cuda::detail
