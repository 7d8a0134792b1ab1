// The panel kernels of quantized_gemm.h on AVX512-VNNI: vpdpbusd adds four products of unsigned and
// signed bytes into each int32 lane, a lane per output column of the panel. Compiled for that target
// whatever the build's -march, and only called after cpuid says the CPU has it.
#include <immintrin.h>

// GCC 12 flags the deliberately undefined pass-through operands inside its own AVX-512 intrinsics
// (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/quantized_gemm_internal.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#endif

#include "kernels/cpu/dot_instructions.h"  // in the target region: its functions take 512-bit vectors

namespace qwen2audio::kernels::quantized_gemm_detail {

void store_panel_totals(const Problem& p, int64_t panel, int64_t row0, int64_t rows, const float* totals,
                        int64_t totals_stride) {
  const int64_t column = panel * kPanel;
  const int64_t width = std::min<int64_t>(kPanel, p.n - column);
  if (width <= 0) return;
  const __mmask16 mask = static_cast<__mmask16>(width == kPanel ? 0xffff : (1u << width) - 1);
  const __m512 bias = p.bias ? _mm512_maskz_loadu_ps(mask, p.bias + column) : _mm512_setzero_ps();
  for (int64_t r = 0; r < rows; ++r) {
    float* out = p.y + (row0 + r) * p.ldy + column;
    __m512 value = _mm512_add_ps(_mm512_load_ps(totals + r * totals_stride), bias);
    if (p.accumulate) value = _mm512_add_ps(value, _mm512_maskz_loadu_ps(mask, out));
    _mm512_mask_storeu_ps(out, mask, value);
  }
}

namespace {

// Each panel stream is prefetched this far ahead (a few steps of the next groups): the kernels read
// several panels at once, farther apart than the hardware prefetchers follow. Tiles of three or more
// rows spend longer on each line, so the same distance in time is more bytes (Zen 5 EPYC, 4-row int4
// decode: 2048 bytes took 0.89-0.99x the time of 1024; one row measured no better at 2048).
template <int Rows>
constexpr int64_t kPrefetchBytes = Rows >= 3 ? 2048 : 1024;

int32_t word_at(const int8_t* bytes) {
  int32_t word;
  std::memcpy(&word, bytes, sizeof word);
  return word;
}

// Rows [row0, row0 + R) against panels [panel0, panel0 + T).
//  - int8, prefill: the activations are the unsigned operand, as level + 128 (quantize_activations_
//    avx512 stores them so, vnni_offsets_levels, and each step's word is broadcast straight from
//    memory), and a group's total gives back 128 x the sum of its codes (Problem::w.code_sums,
//    shifted left by 7).
//  - int8, decode rows (Signed): |code| is the unsigned operand and the level, negated where the
//    code is negative, the signed one: two more instructions per product than the offset, but no
//    code sums to read beside the codes (AMX Xeon, avx512_bf16, 4 layers + head, three rounds in
//    turns: one row 49.9-50.6 ms a token against 51.5-51.8, two rows 50.8-51.8 against 53.7-54.7,
//    four rows 48.1-49.5 against 51.6-53.0).
//  - int4: the codes 0..15 are the unsigned operand and the levels the signed one; the codes' offset
//    of 8 comes back as 8 x the sum of the group's levels.
template <bool Int4, bool Signed, int R, int T>
void tile(const Problem& p, int64_t row0, int64_t panel0) {
  const int64_t panel_bytes = p.panel_bytes();
  const auto* base = static_cast<const uint8_t*>(p.w.data) + panel0 * panel_bytes;
  const __m512i nibble = _mm512_set1_epi8(15);
  // The float totals live in memory (L1): in registers beside the integer sums they pushed GCC into
  // copying the sums on every step.
  alignas(64) float total[R][T][kPanel] = {};
  __m512i sum[R][T];
  for (int64_t group = 0; group < p.groups; ++group) {
    const int64_t start = group * p.group_size, end = std::min(p.k, start + p.group_size);
    for (int r = 0; r < R; ++r)
      for (int t = 0; t < T; ++t) sum[r][t] = _mm512_setzero_si512();
    if constexpr (Int4) {
      for (int64_t i = start; i < end; i += 8) {
        __m512i low[T], high[T];
        for (int t = 0; t < T; ++t) {
          const uint8_t* step = base + t * panel_bytes + i * 8;
          _mm_prefetch(reinterpret_cast<const char*>(step) + kPrefetchBytes<R>, _MM_HINT_T0);
          const __m512i codes = _mm512_load_si512(step);
          low[t] = _mm512_and_si512(codes, nibble);
          high[t] = _mm512_and_si512(_mm512_srli_epi16(codes, 4), nibble);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const int8_t* x = p.levels + (row0 + r) * p.k + i;
          const __m512i first = _mm512_set1_epi32(word_at(x)), second = _mm512_set1_epi32(word_at(x + 4));
#pragma GCC unroll 8
          for (int t = 0; t < T; ++t) {
            dpbusd(sum[r][t], low[t], first);
            dpbusd(sum[r][t], high[t], second);
          }
        }
      }
    } else {
      for (int64_t i = start; i < end; i += 4) {
        __m512i codes[T], magnitudes[T];
        __mmask64 negative[T];
        for (int t = 0; t < T; ++t) {
          const uint8_t* step = base + t * panel_bytes + i * 16;
          _mm_prefetch(reinterpret_cast<const char*>(step) + kPrefetchBytes<R>, _MM_HINT_T0);
          codes[t] = _mm512_load_si512(step);
          if constexpr (Signed) {
            magnitudes[t] = _mm512_abs_epi8(codes[t]);
            negative[t] = _mm512_movepi8_mask(codes[t]);
          }
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
          const __m512i activations = _mm512_set1_epi32(word_at(p.levels + (row0 + r) * p.k + i));
#pragma GCC unroll 8
          for (int t = 0; t < T; ++t) {
            if constexpr (Signed)
              dpbusd(sum[r][t], magnitudes[t],
                     _mm512_mask_sub_epi8(activations, negative[t], _mm512_setzero_si512(), activations));
            else
              dpbusd(sum[r][t], activations, codes[t]);
          }
        }
      }
    }
    __m512 weight_scale[T];
    __m512i correction[T];
    for (int t = 0; t < T; ++t) {
      const int64_t at = ((panel0 + t) * p.groups + group) * kPanel;
      weight_scale[t] = _mm512_loadu_ps(p.w.scales + at);
      if constexpr (!Int4)
        correction[t] = Signed ? _mm512_setzero_si512() : _mm512_slli_epi32(_mm512_loadu_si512(p.w.code_sums + at), 7);
    }
    for (int r = 0; r < R; ++r) {
      const int64_t at = (row0 + r) * p.groups + group;
      const __m512 activation_scale = _mm512_set1_ps(p.x_scales[at]);
      if constexpr (Int4) {
        const __m512i offset = _mm512_set1_epi32(8 * p.level_sums[at]);
        for (int t = 0; t < T; ++t) correction[t] = offset;
      }
      for (int t = 0; t < T; ++t)
        _mm512_store_ps(total[r][t],
                        _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(sum[r][t], correction[t])),
                                        _mm512_mul_ps(activation_scale, weight_scale[t]), _mm512_load_ps(total[r][t])));
    }
  }
  for (int t = 0; t < T; ++t) store_panel_totals(p, panel0 + t, row0, R, total[0][t], T * kPanel);
}

// Rows [first, last) against panels [panel, panel + T): tiles of six rows, then the remainder.
template <bool Int4, int T>
void row_tiles(const Problem& p, int64_t first, int64_t last, int64_t panel) {
  int64_t row = first;
  for (; row + 6 <= last; row += 6) tile<Int4, false, 6, T>(p, row, panel);
  switch (last - row) {
    case 5:
      return tile<Int4, false, 5, T>(p, row, panel);
    case 4:
      return tile<Int4, false, 4, T>(p, row, panel);
    case 3:
      return tile<Int4, false, 3, T>(p, row, panel);
    case 2:
      return tile<Int4, false, 2, T>(p, row, panel);
    case 1:
      return tile<Int4, false, 1, T>(p, row, panel);
    default:
      return;
  }
}

// Activation rows per block of a long product: their levels (rows x k bytes) stay in L2 while every
// panel pair of the task serves them, and each panel pair stays in L1/L2 while it serves the block.
constexpr int64_t kRowBlockBytes = 256 << 10;

// Decode steps (up to a few rows) take several panels at once, so several weight streams are in
// flight: one row four panels (on a Zen 5 EPYC, 2 threads, 8 layers + head, each token paired with a
// read: int4 91-97 % of the read against 83-92 % with eight panels, int8 100-116 % against 95-105 %),
// and so do four rows (16 integer accumulators; int4, 4 layers + head: 15.0-16.4 ms a step against
// 18.1-19.8 with two panels, 1.07-1.13x one row's time against 1.30-1.36x); longer inputs take
// blocks of rows against two panels at a time, six rows per tile (12 integer accumulators in
// registers, the float totals in L1). int8 decode rows multiply signed levels (tile's comment).
template <bool Int4>
void run_panels(const Problem& p, int64_t panel_begin, int64_t panel_end) {
  if (p.m <= kDecodeRows)
    return run_decode_rows<4, 4>(p.m, panel_begin, panel_end, [&]<int R, int T>(int64_t row, int64_t panel) {
      tile<Int4, !Int4, R, T>(p, row, panel);
    });
  const int64_t block = std::max<int64_t>(6, kRowBlockBytes / p.k / 6 * 6);
  for (int64_t first = 0; first < p.m; first += block) {
    const int64_t last = std::min(p.m, first + block);
    int64_t panel = panel_begin;
    for (; panel + 2 <= panel_end; panel += 2) row_tiles<Int4, 2>(p, first, last, panel);
    for (; panel < panel_end; ++panel) row_tiles<Int4, 1>(p, first, last, panel);
  }
}

}  // namespace

namespace {

// Quantizes every group of rows [0, m) by quantized_gemm.h's formula and hands each 16 levels (int32
// lanes) to store(row, element, levels): one arithmetic for the VNNI and the AMX layouts, so that both
// kernels multiply the same levels.
template <typename Store>
void quantize_rows(const float* x, int64_t ldx, const Problem& p, float* scales, int32_t* level_sums,
                   const Store& store) {
  const __m512 magnitude_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
#pragma omp parallel for schedule(static) if (p.m * p.k > (1 << 16))
  for (int64_t row = 0; row < p.m; ++row) {
    const float* values = x + row * ldx;
    for (int64_t group = 0; group < p.groups; ++group) {
      const int64_t start = group * p.group_size;
      const int64_t length = std::min(p.group_size, p.k - start);  // a multiple of 32
      __m512 largest0 = _mm512_setzero_ps(), largest1 = _mm512_setzero_ps();
      for (int64_t i = 0; i < length; i += 32) {
        largest0 = _mm512_max_ps(largest0, _mm512_and_ps(_mm512_loadu_ps(values + start + i), magnitude_mask));
        largest1 = _mm512_max_ps(largest1, _mm512_and_ps(_mm512_loadu_ps(values + start + i + 16), magnitude_mask));
      }
      const float peak = _mm512_reduce_max_ps(_mm512_max_ps(largest0, largest1));
      const __m512 factor = _mm512_set1_ps(peak > 0.0f ? 127.0f / peak : 0.0f);
      __m512i sum = _mm512_setzero_si512();
      for (int64_t i = 0; i < length; i += 16) {
        // The default rounding mode is round-to-nearest-even: nearbyint, as the scalar formula.
        __m512i level = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(values + start + i), factor));
        level = _mm512_min_epi32(_mm512_max_epi32(level, _mm512_set1_epi32(-127)), _mm512_set1_epi32(127));
        if (level_sums != nullptr) sum = _mm512_add_epi32(sum, level);
        store(row, start + i, level);
      }
      scales[row * p.groups + group] = peak / 127.0f;
      if (level_sums != nullptr) level_sums[row * p.groups + group] = _mm512_reduce_add_epi32(sum);
    }
  }
}

}  // namespace

void quantize_activations_avx512(const float* x, int64_t ldx, const Problem& p, int8_t* levels, float* scales,
                                 int32_t* level_sums) {
  // int8 prefill takes the levels as the unsigned operand: level + 128.
  const __m512i offset = _mm512_set1_epi32(vnni_offsets_levels(p) ? 128 : 0);
  quantize_rows(x, ldx, p, scales, level_sums, [&](int64_t row, int64_t element, __m512i level) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(levels + row * p.k + element),
                     _mm512_cvtepi32_epi8(_mm512_add_epi32(level, offset)));
  });
}

void quantize_activations_amx(const float* x, int64_t ldx, const Problem& p, uint8_t* tiles, float* scales) {
  const int64_t slices = p.k / kAmxStep, slice_bytes = kAmxBlockRows * kAmxStep;
  auto at = [&](int64_t row, int64_t element) {
    return tiles + (row / kAmxBlockRows * slices + element / kAmxStep) * slice_bytes + row % kAmxBlockRows * kAmxStep +
           element % kAmxStep;
  };
  quantize_rows(x, ldx, p, scales, nullptr, [&](int64_t row, int64_t element, __m512i level) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(at(row, element)), _mm512_cvtepi32_epi8(level));
  });
  // The last block's tiles read rows past m too; their sums are never stored, but the tiles should
  // not load bytes nothing wrote (memory checkers, and a buffer's stale levels from a larger call).
  const int64_t padded = amx_levels_bytes(p) / p.k;
  for (int64_t row = p.m; row < padded; ++row)
    for (int64_t slice = 0; slice < slices; ++slice) std::memset(at(row, slice * kAmxStep), 0, kAmxStep);
}

void run_avx512_vnni(const Problem& p, int64_t panel_begin, int64_t panel_end) {
  if (p.w.format == WeightFormat::Int4)
    run_panels<true>(p, panel_begin, panel_end);
  else
    run_panels<false>(p, panel_begin, panel_end);
}

}  // namespace qwen2audio::kernels::quantized_gemm_detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
