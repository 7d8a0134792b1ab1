// gemv kernels for AVX2 + FMA (8 float lanes). Compiled for that target whatever the build's
// -march, and only called after cpuid says the CPU has it.
#include <immintrin.h>

#include <algorithm>

#include "kernels/cpu/gemv_internal.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace qwen2audio::kernels::gemv_detail {
namespace {

// Weight rows per tile: four independent row streams, and as many accumulators per activation row.
constexpr int kColumns = kColumnTile;
// Activation rows per tile; more rows run as further passes over the same weight rows, which are
// in L1/L2 by then, so the weights still come from memory once.
constexpr int kRows = 2;

inline float horizontal_sum(__m256 value) {
  const __m128 folded = _mm_add_ps(_mm256_castps256_ps128(value), _mm256_extractf128_ps(value, 1));
  const __m128 pairs = _mm_add_ps(folded, _mm_movehl_ps(folded, folded));
  return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
}

// Plain weights: 8 values of row `row` from element i, as float32.
struct F32Weights {
  const float* base;
  int64_t ld;
  explicit F32Weights(const Problem& p) : base(static_cast<const float*>(p.w.data)), ld(p.w.ld) {}
  const char* address(int64_t row, int64_t i) const { return reinterpret_cast<const char*>(base + row * ld + i); }
  __m256 load8(int64_t row, int64_t i) const { return _mm256_loadu_ps(base + row * ld + i); }
  float at(int64_t row, int64_t i) const { return base[row * ld + i]; }
};

struct Bf16Weights {
  const uint16_t* base;
  int64_t ld;
  explicit Bf16Weights(const Problem& p) : base(static_cast<const uint16_t*>(p.w.data)), ld(p.w.ld) {}
  const char* address(int64_t row, int64_t i) const { return reinterpret_cast<const char*>(base + row * ld + i); }
  __m256 load8(int64_t row, int64_t i) const {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(base + row * ld + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(packed), 16));
  }
  float at(int64_t row, int64_t i) const { return bf16_to_float(base[row * ld + i]); }
};

template <int R, int C, typename Weights>
void plain_tile(const Problem& p, const Weights& w, int64_t row0, int64_t column) {
  __m256 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= p.k; i += 8) {
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      if (p.prefetch) _mm_prefetch(w.address(column + c, i) + p.prefetch, _MM_HINT_T0);
      const __m256 weights = w.load8(column + c, i);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r)
        acc[r][c] = _mm256_fmadd_ps(_mm256_loadu_ps(p.x + (row0 + r) * p.ldx + i), weights, acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    const float* x = p.x + (row0 + r) * p.ldx;
    for (int c = 0; c < C; ++c) {
      float sum = horizontal_sum(acc[r][c]);
      for (int64_t j = i; j < p.k; ++j) sum += x[j] * w.at(column + c, j);
      p.store(row0 + r, column + c, sum);
    }
  }
}

// Int8 weights on int16 activation levels (gemv.h): each 16-element step widens the codes to int16
// (vpmovsxbw) and sums products in pairs into eight int32 lanes (pmaddwd), exactly; the float32
// version spent more instructions converting codes than the memory system needs to deliver them.
// This tile serves one activation row (a single sequence's decode step) against C weight rows; a
// second row would need more than AVX2's 16 vector registers, so batches take int8_rows_tile.
template <int C>
void int8_tile(const Problem& p, int64_t row, int64_t column) {
  const auto* base = static_cast<const int8_t*>(p.w.data);
  const int16_t* x = p.x_q16 + row * p.ldx_q;
  __m256 total[C];
  for (int c = 0; c < C; ++c) total[c] = _mm256_setzero_ps();
  const int64_t group_size = p.w.group_size;
  for (int64_t start = 0, group = 0; start < p.k; start += group_size, ++group) {
    const int64_t end = std::min(p.k, start + group_size);
    float scale[C];
    for (int c = 0; c < C; ++c)
      scale[c] = p.w.scales[(column + c) * p.w.scales_ld + group] * p.x_scales[row * p.ldx_groups + group];
    // A lane takes 4 products of at most 128 * 32767 per 32 elements, so int32 holds 4096 elements.
    for (int64_t span = start; span < end; span += kInt8ExactSpan) {
      const int64_t span_end = std::min(end, span + kInt8ExactSpan);
      __m256i sum[C];
      for (int c = 0; c < C; ++c) sum[c] = _mm256_setzero_si256();
      for (int64_t i = span; i < span_end; i += 32) {
        const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
        const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i + 16));
#pragma GCC unroll 4
        for (int c = 0; c < C; ++c) {
          const int8_t* codes = base + (column + c) * p.w.ld + i;
          if (p.prefetch) _mm_prefetch(reinterpret_cast<const char*>(codes) + p.prefetch, _MM_HINT_T0);
          const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
          const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + 16)));
          sum[c] = _mm256_add_epi32(sum[c], _mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1)));
        }
      }
      for (int c = 0; c < C; ++c)
        total[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[c]), _mm256_set1_ps(scale[c]), total[c]);
    }
  }
  for (int c = 0; c < C; ++c) p.store(row, column + c, horizontal_sum(total[c]));
}

// Several activation rows (a batch's decode step) against one weight row: each widened block of
// codes serves up to four rows, which read their activations straight from L1, where a pass per
// row would widen every code again.
template <int R>
void int8_rows_tile(const Problem& p, int64_t row0, int64_t column) {
  const int8_t* codes = static_cast<const int8_t*>(p.w.data) + column * p.w.ld;
  __m256 total[R];
  for (int r = 0; r < R; ++r) total[r] = _mm256_setzero_ps();
  const int64_t group_size = p.w.group_size;
  for (int64_t start = 0, group = 0; start < p.k; start += group_size, ++group) {
    const int64_t end = std::min(p.k, start + group_size);
    const float weight_scale = p.w.scales[column * p.w.scales_ld + group];
    for (int64_t span = start; span < end; span += kInt8ExactSpan) {
      const int64_t span_end = std::min(end, span + kInt8ExactSpan);
      __m256i sum[R];
      for (int r = 0; r < R; ++r) sum[r] = _mm256_setzero_si256();
      for (int64_t i = span; i < span_end; i += 32) {
        if (p.prefetch) _mm_prefetch(reinterpret_cast<const char*>(codes + i) + p.prefetch, _MM_HINT_T0);
        const __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + i)));
        const __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + i + 16)));
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) {
          const int16_t* x = p.x_q16 + (row0 + r) * p.ldx_q + i;
          const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
          const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + 16));
          sum[r] = _mm256_add_epi32(sum[r], _mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1)));
        }
      }
      for (int r = 0; r < R; ++r) {
        const float scale = weight_scale * p.x_scales[(row0 + r) * p.ldx_groups + group];
        total[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[r]), _mm256_set1_ps(scale), total[r]);
      }
    }
  }
  for (int r = 0; r < R; ++r) p.store(row0 + r, column, horizontal_sum(total[r]));
}

void int8_range(const Problem& p, int64_t begin, int64_t end) {
  if (p.m == 1) {
    int64_t column = begin;
    for (; column + kColumns <= end; column += kColumns) int8_tile<kColumns>(p, 0, column);
    for (; column < end; ++column) int8_tile<1>(p, 0, column);
    return;
  }
  for (int64_t column = begin; column < end; ++column) {
    int64_t row = 0;
    for (; row + 4 <= p.m; row += 4) int8_rows_tile<4>(p, row, column);
    switch (p.m - row) {
      case 3:
        int8_rows_tile<3>(p, row, column);
        break;
      case 2:
        int8_rows_tile<2>(p, row, column);
        break;
      case 1:
        int8_rows_tile<1>(p, row, column);
        break;
      default:
        break;
    }
  }
}

template <int C, typename Weights>
void column_tile(const Problem& p, const Weights& w, int64_t column) {
  int64_t row = 0;
  for (; row + kRows <= p.m; row += kRows) plain_tile<kRows, C>(p, w, row, column);
  for (; row < p.m; ++row) plain_tile<1, C>(p, w, row, column);
}

// Four or more activation rows (a batch's decode step): tiles of two weight rows against four
// activation rows, so each converted block of weights serves four rows where the 4 x 2 tile would
// convert it twice (8 accumulators either way).
template <typename Weights>
void batch_column_tile(const Problem& p, const Weights& w, int64_t column) {
  int64_t row = 0;
  for (; row + 4 <= p.m; row += 4) plain_tile<4, 2>(p, w, row, column);
  for (; row + 2 <= p.m; row += 2) plain_tile<2, 2>(p, w, row, column);
  for (; row < p.m; ++row) plain_tile<1, 2>(p, w, row, column);
}

template <typename Weights>
void range(const Problem& p, int64_t begin, int64_t end) {
  const Weights w(p);
  int64_t column = begin;
  if (p.m >= 4) {
    for (; column + 2 <= end; column += 2) batch_column_tile(p, w, column);
  } else {
    for (; column + kColumns <= end; column += kColumns) column_tile<kColumns, Weights>(p, w, column);
  }
  for (; column < end; ++column) column_tile<1, Weights>(p, w, column);
}

#include "kernels/cpu/gemv_int4_tile.h"

}  // namespace
}  // namespace qwen2audio::kernels::gemv_detail

#pragma GCC pop_options

namespace qwen2audio::kernels::gemv_detail {

RangeKernel avx2_kernel(WeightFormat format) {
  switch (format) {
    case WeightFormat::F32:
      return range<F32Weights>;
    case WeightFormat::BF16:
      return range<Bf16Weights>;
    case WeightFormat::Int8:
      return int8_range;
    case WeightFormat::Int4:
      // One activation row per pass: two would need more than AVX2's 16 vector registers (a tile of
      // one weight row against four activation rows measured no faster).
      return int4_range<1>;
  }
  return nullptr;
}

}  // namespace qwen2audio::kernels::gemv_detail
