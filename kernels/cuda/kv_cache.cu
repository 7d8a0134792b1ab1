// KV cache writes: new keys and values (float32, in the fused QKV rows) rounded to BF16 into the
// [batch, kv_heads, capacity, head_dim] cache. One thread per element, consecutive threads on
// consecutive dims, so both the reads and the writes coalesce.

#include <cuda_bf16.h>

#include "kernels/cuda/check.cuh"
#include "kernels/cuda/kernels.h"

namespace qwen2audio::kernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void store_kv_kernel(const float* k, const float* v, int64_t ld, int64_t batch, int64_t steps,
                                int64_t kv_heads, int64_t head_dim, bf16* k_cache, bf16* v_cache, int64_t batch_stride,
                                int64_t head_stride, int64_t start) {
  const int64_t count = batch * steps * kv_heads * head_dim;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < count; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t d = i % head_dim;
    const int64_t g = (i / head_dim) % kv_heads;
    const int64_t t = (i / (head_dim * kv_heads)) % steps;
    const int64_t b = i / (head_dim * kv_heads * steps);
    const int64_t source = (b * steps + t) * ld + g * head_dim + d;
    const int64_t target = b * batch_stride + g * head_stride + (start + t) * head_dim + d;
    k_cache[target] = __float2bfloat16_rn(k[source]);
    v_cache[target] = __float2bfloat16_rn(v[source]);
  }
}

}  // namespace

void store_kv(const float* k, const float* v, int64_t ld, int64_t batch, int64_t steps, int64_t kv_heads,
              int64_t head_dim, bf16* k_cache, bf16* v_cache, int64_t batch_stride, int64_t head_stride, int64_t start,
              cudaStream_t stream) {
  detail::require(batch >= 0 && steps >= 0 && kv_heads >= 0 && head_dim >= 0 && start >= 0, "store_kv",
                  "negative shape or start");
  detail::require(ld >= kv_heads * head_dim, "store_kv", "row stride smaller than kv_heads * head_dim");
  const int64_t count = batch * steps * kv_heads * head_dim;
  if (count == 0) return;
  store_kv_kernel<<<detail::grid_for(count, kThreads), kThreads, 0, stream>>>(
      k, v, ld, batch, steps, kv_heads, head_dim, k_cache, v_cache, batch_stride, head_stride, start);
  detail::check_launch("store_kv");
}

}  // namespace qwen2audio::kernels::cuda
