// The quantized matrix multiply on AVX512-VNNI (quantized_gemm.h): vpdpbusd adds four products of
// unsigned and signed bytes into each int32 lane. Compiled for that target whatever the build's
// -march, and only called after cpuid says the CPU has it.
#include <immintrin.h>
#include <omp.h>

// GCC 12 flags the deliberately undefined pass-through operands inside its own AVX-512 intrinsics
// (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/quantized_gemm_internal.h"
#include "runtime/buffer.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#endif

namespace qwen2audio::kernels::quantized_gemm_detail {
namespace {

// A panel is 32 output columns (two vectors of 16 int32 lanes); a tile multiplies up to kRows
// activation rows with it, 2 * kRows integer and as many float accumulators in registers.
constexpr int64_t kPanel = 32;
constexpr int kRows = 6;

// vpdpbusd takes its unsigned operand from the activations: levels in [-127, 127] are stored as
// level + 128, and each group's total gives back 128 * (the sum of its codes), precomputed per
// panel column.
constexpr int kLevelOffset = 128;

thread_local Buffer<uint8_t> tls_levels;
thread_local Buffer<float> tls_scales;

// Per worker: one panel of packed codes, its per-group code sums and weight scales.
thread_local Buffer<int32_t> tls_panel;
thread_local Buffer<int32_t> tls_code_sums;
thread_local Buffer<float> tls_weight_scales;

float horizontal_max(__m512 value) { return _mm512_reduce_max_ps(value); }

// Levels + 128 and group scales of every row; the same formula as gemv's (scalar) int8 levels, so
// nearbyint here is the vector conversion in the default round-to-nearest-even mode.
void quantize_activations(const Problem& p, uint8_t* levels, float* scales) {
  const int64_t groups = p.groups;
#pragma omp parallel for schedule(static) if (p.m * p.k > (1 << 16))
  for (int64_t row = 0; row < p.m; ++row) {
    const float* values = p.x + row * p.ldx;
    uint8_t* out = levels + row * p.k;
    for (int64_t group = 0; group < groups; ++group) {
      const int64_t start = group * p.group_size;
      const int64_t length = std::min(p.group_size, p.k - start);  // a multiple of 32
      const __m512 sign_off = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
      __m512 largest0 = _mm512_setzero_ps(), largest1 = _mm512_setzero_ps();
      for (int64_t i = 0; i < length; i += 32) {
        largest0 = _mm512_max_ps(largest0, _mm512_and_ps(_mm512_loadu_ps(values + start + i), sign_off));
        largest1 = _mm512_max_ps(largest1, _mm512_and_ps(_mm512_loadu_ps(values + start + i + 16), sign_off));
      }
      const float peak = horizontal_max(_mm512_max_ps(largest0, largest1));
      const float inverse = peak > 0.0f ? 127.0f / peak : 0.0f;
      const __m512 factor = _mm512_set1_ps(inverse);
      const __m512i offset = _mm512_set1_epi32(kLevelOffset);
      for (int64_t i = 0; i < length; i += 16) {
        // |x * 127 / peak| <= 127 up to rounding, which the clamp of vpmovusdb cannot exceed.
        const __m512i level = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(values + start + i), factor));
        const __m512i clamped =
            _mm512_min_epi32(_mm512_max_epi32(level, _mm512_set1_epi32(-127)), _mm512_set1_epi32(127));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + start + i),
                         _mm512_cvtusepi32_epi8(_mm512_add_epi32(clamped, offset)));
      }
      scales[row * groups + group] = peak / 127.0f;
    }
  }
}

// Codes of columns [column, column + width) as int8 levels, laid out for vpdpbusd: for each step of
// four elements, 32 int32 words (one per column, its four levels), columns past `width` zero.
// Also each column's sum of levels and weight scale per group.
void pack_panel(const Problem& p, int64_t column, int64_t width, int32_t* panel, int32_t* code_sums,
                float* weight_scales) {
  const int64_t steps = p.k / 4;
  const int64_t groups = p.groups;
  std::memset(panel, 0, sizeof(int32_t) * steps * kPanel);
  std::memset(code_sums, 0, sizeof(int32_t) * groups * kPanel);
  std::memset(weight_scales, 0, sizeof(float) * groups * kPanel);
  alignas(64) int8_t row_levels[32];
  for (int64_t c = 0; c < width; ++c) {
    const int64_t n = column + c;
    if (p.w.format == WeightFormat::Int8) {
      const auto* codes = static_cast<const int8_t*>(p.w.data) + n * p.w.ld;
      for (int64_t step = 0; step < steps; ++step) std::memcpy(&panel[step * kPanel + c], codes + 4 * step, 4);
      for (int64_t group = 0; group < groups; ++group) {
        const int64_t start = group * p.group_size, end = std::min(p.k, start + p.group_size);
        int32_t sum = 0;
        for (int64_t i = start; i < end; ++i) sum += codes[i];
        code_sums[group * kPanel + c] = sum;
      }
    } else {
      // Int4: each 32-element block is 16 bytes, element j in byte j's low nibble, element j + 16 in
      // its high nibble, level = code - 8.
      const auto* codes = static_cast<const uint8_t*>(p.w.data) + n * (p.w.ld / 2);
      for (int64_t block = 0; block < p.k / 32; ++block) {
        for (int j = 0; j < 16; ++j) {
          const uint8_t byte = codes[block * 16 + j];
          row_levels[j] = static_cast<int8_t>((byte & 0x0f) - 8);
          row_levels[j + 16] = static_cast<int8_t>((byte >> 4) - 8);
        }
        for (int s = 0; s < 8; ++s) std::memcpy(&panel[(block * 8 + s) * kPanel + c], row_levels + 4 * s, 4);
        int32_t sum = 0;
        for (int8_t level : row_levels) sum += level;
        code_sums[(block * 32 / p.group_size) * kPanel + c] += sum;
      }
    }
    for (int64_t group = 0; group < groups; ++group)
      weight_scales[group * kPanel + c] = p.w.scales[n * p.w.scales_ld + group];
  }
}

// Rows [row, row + R) against one packed panel; writes columns [column, column + width).
template <int R>
void tile(const Problem& p, const uint8_t* levels, const float* scales, const int32_t* panel, const int32_t* code_sums,
          const float* weight_scales, int64_t row, int64_t column, int64_t width) {
  __m512 total[R][2];
  for (int r = 0; r < R; ++r) total[r][0] = total[r][1] = _mm512_setzero_ps();
  const uint8_t* a = levels + row * p.k;
  for (int64_t group = 0; group < p.groups; ++group) {
    const int64_t start = group * p.group_size, end = std::min(p.k, start + p.group_size);
    __m512i sum[R][2];
    for (int r = 0; r < R; ++r) sum[r][0] = sum[r][1] = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int64_t i = start; i < end; i += 4) {
      const __m512i low = _mm512_load_si512(panel + i / 4 * kPanel);
      const __m512i high = _mm512_load_si512(panel + i / 4 * kPanel + 16);
      for (int r = 0; r < R; ++r) {
        int32_t word;
        std::memcpy(&word, a + r * p.k + i, sizeof word);
        const __m512i broadcast = _mm512_set1_epi32(word);
        sum[r][0] = _mm512_dpbusd_epi32(sum[r][0], broadcast, low);
        sum[r][1] = _mm512_dpbusd_epi32(sum[r][1], broadcast, high);
      }
    }
    const __m512i correction_low = _mm512_slli_epi32(_mm512_load_si512(code_sums + group * kPanel), 7);
    const __m512i correction_high = _mm512_slli_epi32(_mm512_load_si512(code_sums + group * kPanel + 16), 7);
    const __m512 scale_low = _mm512_load_ps(weight_scales + group * kPanel);
    const __m512 scale_high = _mm512_load_ps(weight_scales + group * kPanel + 16);
    for (int r = 0; r < R; ++r) {
      const __m512 activation_scale = _mm512_set1_ps(scales[(row + r) * p.groups + group]);
      total[r][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(sum[r][0], correction_low)),
                                    _mm512_mul_ps(activation_scale, scale_low), total[r][0]);
      total[r][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(sum[r][1], correction_high)),
                                    _mm512_mul_ps(activation_scale, scale_high), total[r][1]);
    }
  }
  const __mmask16 mask_low = static_cast<__mmask16>(width >= 16 ? 0xffff : (1u << width) - 1);
  const __mmask16 mask_high = static_cast<__mmask16>(width >= 32 ? 0xffff : width <= 16 ? 0 : (1u << (width - 16)) - 1);
  __m512 bias_low = _mm512_setzero_ps(), bias_high = _mm512_setzero_ps();
  if (p.bias != nullptr) {
    bias_low = _mm512_maskz_loadu_ps(mask_low, p.bias + column);
    bias_high = _mm512_maskz_loadu_ps(mask_high, p.bias + column + 16);
  }
  for (int r = 0; r < R; ++r) {
    float* out = p.y + (row + r) * p.ldy + column;
    __m512 low = _mm512_add_ps(total[r][0], bias_low), high = _mm512_add_ps(total[r][1], bias_high);
    if (p.accumulate) {
      low = _mm512_add_ps(low, _mm512_maskz_loadu_ps(mask_low, out));
      high = _mm512_add_ps(high, _mm512_maskz_loadu_ps(mask_high, out + 16));
    }
    _mm512_mask_storeu_ps(out, mask_low, low);
    _mm512_mask_storeu_ps(out + 16, mask_high, high);
  }
}

using TileFn = void (*)(const Problem&, const uint8_t*, const float*, const int32_t*, const int32_t*, const float*,
                        int64_t, int64_t, int64_t);
constexpr TileFn kTiles[kRows + 1] = {nullptr, tile<1>, tile<2>, tile<3>, tile<4>, tile<5>, tile<6>};

}  // namespace

void run_avx512_vnni(const Problem& p) {
  uint8_t* levels = tls_levels.reserve(static_cast<size_t>(p.m * p.k));
  float* scales = tls_scales.reserve(static_cast<size_t>(p.m * p.groups));
  quantize_activations(p, levels, scales);
  const int64_t panels = (p.n + kPanel - 1) / kPanel;
#pragma omp parallel
  {
    int32_t* panel = tls_panel.reserve(static_cast<size_t>(p.k / 4 * kPanel));
    int32_t* code_sums = tls_code_sums.reserve(static_cast<size_t>(p.groups * kPanel));
    float* weight_scales = tls_weight_scales.reserve(static_cast<size_t>(p.groups * kPanel));
#pragma omp for schedule(dynamic)
    for (int64_t index = 0; index < panels; ++index) {
      const int64_t column = index * kPanel;
      const int64_t width = std::min(kPanel, p.n - column);
      pack_panel(p, column, width, panel, code_sums, weight_scales);
      for (int64_t row = 0; row < p.m; row += kRows) {
        const int rows = static_cast<int>(std::min<int64_t>(kRows, p.m - row));
        kTiles[rows](p, levels, scales, panel, code_sums, weight_scales, row, column, width);
      }
    }
  }
}

}  // namespace qwen2audio::kernels::quantized_gemm_detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
