#pragma once

#include <immintrin.h>

#include <cstdint>

// Small vector helpers of the benchmarks' naive reference kernels (not an op of the engine).
namespace qwen2audio::kernels::simd {

inline float dot(const float* a, const float* b, int64_t count) {
  int64_t index = 0;
  float total = 0.0f;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 sum0 = _mm256_setzero_ps();
  __m256 sum1 = _mm256_setzero_ps();
  for (; index + 16 <= count; index += 16) {
    sum0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + index), _mm256_loadu_ps(b + index), sum0);
    sum1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + index + 8), _mm256_loadu_ps(b + index + 8), sum1);
  }
  for (; index + 8 <= count; index += 8)
    sum0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + index), _mm256_loadu_ps(b + index), sum0);
  const __m256 sum = _mm256_add_ps(sum0, sum1);
  const __m128 folded = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps(sum, 1));
  const __m128 pairs = _mm_add_ps(folded, _mm_movehl_ps(folded, folded));
  total = _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
#endif
  for (; index < count; ++index) total += a[index] * b[index];
  return total;
}

// y += alpha * x
inline void axpy(float alpha, const float* x, float* y, int64_t count) {
  for (int64_t index = 0; index < count; ++index) y[index] += alpha * x[index];
}

}  // namespace qwen2audio::kernels::simd
