// The 256-bit panel kernels of quantized_gemm.h: for CPUs without VNNI (AVX2, and AVX-512 without
// VNNI), vpmaddubsw multiplies unsigned by signed bytes and adds pairs into int16 lanes, vpmaddwd by
// ones adds those pairs into int32 lanes, one lane per output column of a half panel (8 columns);
// with AVX-VNNI (the Avx2Vnni tier) one vpdpbusd does all three, as the AVX512-VNNI kernels do.
//
// vpmaddubsw saturates its int16 pairs, so the operands must keep each pair below 2^15:
//  - int4: the codes 0..15 are the unsigned operand, the levels (|level| <= 127) the signed one:
//    a pair is at most 2 * 15 * 127 = 3810, and two steps' pairs of both nibbles (four) still fit
//    before widening (15240).
//  - int8: |code| is the unsigned operand and the level takes the code's sign (vpsignb), so the
//    products keep their values, code * level, and a pair is at most 2 * 127 * 127 = 32258.
// With vpdpbusd, int8 decode rows keep the operands above (the int16 pairs are gone, so nothing
// saturates), while longer inputs take those of the AVX512-VNNI kernel: the activations unsigned,
// as level + 128, which a group's total gives back as 128 x the sum of its codes. Reading those
// sums is a second stream beside the codes that one decode row felt (an AMX Xeon capped to
// avx2_vnni, 4 layers + head, int8: 52.6-52.7 ms a token against 46.6-46.8 with |code| and the
// sign), while a prefill's tile saves the sign's instruction for every product (270 rows: 4 rows
// by 2 panels 635 GOP/s, with |code| and the sign 392 at 4 rows by 1).
// All give the exact int32 sums of the AVX512-VNNI kernel, so every tier computes the same numbers.
// Compiled for AVX2 whatever the build's -march (the VNNI product is asm, see dot_instructions.h),
// and only called after cpuid says the CPU has what the variant uses.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/cpu/quantized_gemm_internal.h"

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

#include "kernels/cpu/dot_instructions.h"  // in the target region: its functions take vectors

namespace qwen2audio::kernels::quantized_gemm_detail {
namespace {

// As the VNNI kernels: each panel stream prefetched a few steps ahead, farther for tiles of three or
// more rows, which spend longer on each line (4-row decode, int8, capped to AVX2 on an AMX Xeon:
// 0.95-0.98x the time of 1024 bytes).
template <int Rows>
constexpr int64_t kPrefetchBytes = Rows >= 3 ? 2048 : 1024;
constexpr int kHalves = 2;  // a 64-byte panel step is two 256-bit vectors of 8 columns
constexpr int64_t kHalfBytes = 32;
constexpr int64_t kHalfColumns = 8;

int32_t word_at(const int8_t* bytes) {
  int32_t word;
  std::memcpy(&word, bytes, sizeof word);
  return word;
}

enum class Multiply {
  Madd,       // vpmaddubsw + vpmaddwd (AVX2)
  Vnni,       // vpdpbusd (AVX-VNNI): int4 codes by levels, int8 |code| by levels with the codes' signs
  VnniOffset  // vpdpbusd on int8 levels + 128 and the codes (AVX-VNNI, vnni_offsets_levels)
};

// Rows [row0, row0 + R) against panels [panel0, panel0 + T), multiplying as M. A group runs its two
// half panels (8 columns each) one after the other, the second reading the group's codes again from
// L1: one half's integer sums (R * T registers) leave room for more rows and panels, and for the
// unpacked codes, among AVX2's 16 registers. Every loop over the accumulators is unrolled so GCC keeps them there.
template <Multiply M, bool Int4, int R, int T>
void tile(const Problem& p, int64_t row0, int64_t panel0) {
  const int64_t panel_bytes = p.panel_bytes();
  const auto* base = static_cast<const uint8_t*>(p.w.data) + panel0 * panel_bytes;
  const __m256i nibble = _mm256_set1_epi8(15);
  const __m256i ones = _mm256_set1_epi16(1);
  // The float totals live in memory (L1), as in the VNNI kernels: registers go to the integer sums.
  alignas(32) float total[R][T][kPanel] = {};
  for (int64_t group = 0; group < p.groups; ++group) {
    const int64_t start = group * p.group_size, end = std::min(p.k, start + p.group_size);
#pragma GCC unroll 2
    for (int h = 0; h < kHalves; ++h) {
      __m256i sum[R][T];
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r)
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) sum[r][t] = _mm256_setzero_si256();
      if constexpr (Int4 && M != Multiply::Madd) {
        // A step (8 elements) at a time, its nibbles unpacked once for every row and the two words of
        // each row's levels broadcast once for every panel (vpmaddubsw's pairing of two steps has no
        // use here). Capped to avx2_vnni, 4 layers + head: four decode rows 31.7-32.0 ms a token
        // against 34.9-36.5 two steps at a time; one row alike.
        for (int64_t i = start; i < end; i += 8) {
          __m256i low[T], high[T];
#pragma GCC unroll 8
          for (int t = 0; t < T; ++t) {
            const uint8_t* step = base + t * panel_bytes + i * 8;
            if (h == 0) _mm_prefetch(reinterpret_cast<const char*>(step) + kPrefetchBytes<R>, _MM_HINT_T0);
            const __m256i codes = _mm256_load_si256(reinterpret_cast<const __m256i*>(step + kHalfBytes * h));
            low[t] = _mm256_and_si256(codes, nibble);
            high[t] = _mm256_and_si256(_mm256_srli_epi16(codes, 4), nibble);
          }
#pragma GCC unroll 8
          for (int r = 0; r < R; ++r) {
            const int8_t* x = p.levels + (row0 + r) * p.k + i;
            const __m256i first = _mm256_set1_epi32(word_at(x)), second = _mm256_set1_epi32(word_at(x + 4));
#pragma GCC unroll 8
            for (int t = 0; t < T; ++t) {
              dpbusd_vex(sum[r][t], low[t], first);
              dpbusd_vex(sum[r][t], high[t], second);
            }
          }
        }
      } else if constexpr (Int4) {
        // Two steps (16 elements) at a time: one vpmaddwd widens the four int16 pairs of both
        // steps' nibbles where each step had one.
        for (int64_t i = start; i < end; i += 16) {
#pragma GCC unroll 8
          for (int t = 0; t < T; ++t) {
            const uint8_t* step = base + t * panel_bytes + i * 8;
            if (h == 0) {
              _mm_prefetch(reinterpret_cast<const char*>(step) + kPrefetchBytes<R>, _MM_HINT_T0);
              _mm_prefetch(reinterpret_cast<const char*>(step) + kPrefetchBytes<R> + 64, _MM_HINT_T0);
            }
            const __m256i codes0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(step + kHalfBytes * h));
            const __m256i codes1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(step + 64 + kHalfBytes * h));
            const __m256i low0 = _mm256_and_si256(codes0, nibble);
            const __m256i high0 = _mm256_and_si256(_mm256_srli_epi16(codes0, 4), nibble);
            const __m256i low1 = _mm256_and_si256(codes1, nibble);
            const __m256i high1 = _mm256_and_si256(_mm256_srli_epi16(codes1, 4), nibble);
#pragma GCC unroll 8
            for (int r = 0; r < R; ++r) {
              const int8_t* x = p.levels + (row0 + r) * p.k + i;
              const __m256i pairs0 = _mm256_add_epi16(_mm256_maddubs_epi16(low0, _mm256_set1_epi32(word_at(x))),
                                                      _mm256_maddubs_epi16(high0, _mm256_set1_epi32(word_at(x + 4))));
              const __m256i pairs1 = _mm256_add_epi16(_mm256_maddubs_epi16(low1, _mm256_set1_epi32(word_at(x + 8))),
                                                      _mm256_maddubs_epi16(high1, _mm256_set1_epi32(word_at(x + 12))));
              sum[r][t] = _mm256_add_epi32(sum[r][t], _mm256_madd_epi16(_mm256_add_epi16(pairs0, pairs1), ones));
            }
          }
        }
      } else {
        for (int64_t i = start; i < end; i += 4) {
          __m256i codes[T], magnitudes[T];
#pragma GCC unroll 8
          for (int t = 0; t < T; ++t) {
            const uint8_t* step = base + t * panel_bytes + i * 16;
            if (h == 0) _mm_prefetch(reinterpret_cast<const char*>(step) + kPrefetchBytes<R>, _MM_HINT_T0);
            codes[t] = _mm256_load_si256(reinterpret_cast<const __m256i*>(step + kHalfBytes * h));
            if constexpr (M != Multiply::VnniOffset) magnitudes[t] = _mm256_abs_epi8(codes[t]);
          }
#pragma GCC unroll 8
          for (int r = 0; r < R; ++r) {
            const __m256i activations = _mm256_set1_epi32(word_at(p.levels + (row0 + r) * p.k + i));
#pragma GCC unroll 8
            for (int t = 0; t < T; ++t) {
              if constexpr (M == Multiply::VnniOffset) {
                dpbusd_vex(sum[r][t], activations, codes[t]);
                continue;
              }
              if constexpr (M == Multiply::Vnni) {
                dpbusd_vex(sum[r][t], magnitudes[t], _mm256_sign_epi8(activations, codes[t]));
                continue;
              }
              const __m256i pairs = _mm256_maddubs_epi16(magnitudes[t], _mm256_sign_epi8(activations, codes[t]));
              sum[r][t] = _mm256_add_epi32(sum[r][t], _mm256_madd_epi16(pairs, ones));
            }
          }
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const int64_t at = (row0 + r) * p.groups + group;
        const __m256 activation_scale = _mm256_set1_ps(p.x_scales[at]);
        // int4 codes count as c - 8: the group's sum gives back 8 x the sum of its levels.
        const __m256i level_offset = _mm256_set1_epi32(Int4 ? 8 * p.level_sums[at] : 0);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t) {
          const int64_t columns = ((panel0 + t) * p.groups + group) * kPanel + kHalfColumns * h;
          const float* weight_scales = p.w.scales + columns;
          const __m256i correction =
              M == Multiply::VnniOffset && !Int4
                  ? _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.w.code_sums + columns)), 7)
                  : level_offset;
          float* out = total[r][t] + kHalfColumns * h;
          const __m256 scale = _mm256_mul_ps(activation_scale, _mm256_loadu_ps(weight_scales));
          _mm256_store_ps(out, _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(sum[r][t], correction)), scale,
                                               _mm256_load_ps(out)));
        }
      }
    }
  }
  for (int t = 0; t < T; ++t) {
    const int64_t column = (panel0 + t) * kPanel;
    const int64_t width = std::min<int64_t>(kPanel, p.n - column);
    for (int r = 0; r < R; ++r)
      for (int64_t c = 0; c < width; ++c) p.store(row0 + r, column + c, total[r][t][c]);
  }
}

// Rows [first, last) against panels [panel, panel + T): tiles of four rows, then the remainder.
template <Multiply M, bool Int4, int T>
void row_tiles(const Problem& p, int64_t first, int64_t last, int64_t panel) {
  int64_t row = first;
  for (; row + 4 <= last; row += 4) tile<M, Int4, 4, T>(p, row, panel);
  switch (last - row) {
    case 3:
      return tile<M, Int4, 3, T>(p, row, panel);
    case 2:
      return tile<M, Int4, 2, T>(p, row, panel);
    case 1:
      return tile<M, Int4, 1, T>(p, row, panel);
    default:
      return;
  }
}

// Activation rows per block of a long product, so their levels stay in L2 while the panels of a
// task serve them (as the VNNI kernels).
constexpr int64_t kRowBlockBytes = 256 << 10;

// One row (a decode step) takes four panels at once and up to eight rows tiles of four rows
// against two panels (eight accumulators either way; on an AMX Xeon capped to AVX2, 4 decoder
// layers + head in the model, against one row with two panels and four rows with one: one row
// 1.07-1.09x the fraction of the read, four rows 1.13-1.14x); longer inputs take tiles of up to
// four rows against one panel, in blocks of rows, or with AVX-VNNI against two (270 rows, the 7B
// decoder's shapes: int8 635-675 GOP/s against 455-475 with one; int4, a step at a time, 640-670
// against 497-515 for two steps against one panel).
template <bool Vnni, bool Int4>
void run_panels(const Problem& p, int64_t panel_begin, int64_t panel_end) {
  if (p.m <= kDecodeRows) {
    constexpr Multiply kDecodeMultiply = Vnni ? Multiply::Vnni : Multiply::Madd;
    return run_decode_rows<4, 2>(p.m, panel_begin, panel_end, [&]<int R, int T>(int64_t row, int64_t panel) {
      tile<kDecodeMultiply, Int4, R, T>(p, row, panel);
    });
  }
  constexpr Multiply kMultiply = !Vnni ? Multiply::Madd : Int4 ? Multiply::Vnni : Multiply::VnniOffset;
  constexpr int kPanels = Vnni ? 2 : 1;
  const int64_t block = std::max<int64_t>(4, kRowBlockBytes / p.k / 4 * 4);
  for (int64_t first = 0; first < p.m; first += block) {
    const int64_t last = std::min(p.m, first + block);
    int64_t panel = panel_begin;
    for (; panel + kPanels <= panel_end; panel += kPanels) row_tiles<kMultiply, Int4, kPanels>(p, first, last, panel);
    for (; panel < panel_end; ++panel) row_tiles<kMultiply, Int4, 1>(p, first, last, panel);
  }
}

template <bool Vnni>
void run_format(const Problem& p, int64_t panel_begin, int64_t panel_end) {
  if (p.w.format == WeightFormat::Int4)
    run_panels<Vnni, true>(p, panel_begin, panel_end);
  else
    run_panels<Vnni, false>(p, panel_begin, panel_end);
}

}  // namespace

void quantize_activations_avx2(const float* x, int64_t ldx, const Problem& p, bool offset_levels, int8_t* levels,
                               float* scales, int32_t* level_sums) {
  const __m256 magnitude_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  // packs_epi32 then packs_epi16 leave each 128-bit lane's words in the order 0, 2, 4, 6 | 1, 3, 5, 7
  // of the eight source quarters; this puts them back in element order.
  const __m256i unshuffle = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  // level + 128 is the level's byte with its top bit flipped
  const __m256i offset = _mm256_set1_epi8(offset_levels ? static_cast<char>(0x80) : 0);
#pragma omp parallel for schedule(static) if (p.m * p.k > (1 << 16))
  for (int64_t row = 0; row < p.m; ++row) {
    const float* values = x + row * ldx;
    for (int64_t group = 0; group < p.groups; ++group) {
      const int64_t start = group * p.group_size;
      const int64_t length = std::min(p.group_size, p.k - start);  // a multiple of 32
      __m256 largest0 = _mm256_setzero_ps(), largest1 = _mm256_setzero_ps();
      for (int64_t i = 0; i < length; i += 16) {
        largest0 = _mm256_max_ps(largest0, _mm256_and_ps(_mm256_loadu_ps(values + start + i), magnitude_mask));
        largest1 = _mm256_max_ps(largest1, _mm256_and_ps(_mm256_loadu_ps(values + start + i + 8), magnitude_mask));
      }
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, _mm256_max_ps(largest0, largest1));
      const float peak = *std::max_element(lanes, lanes + 8);
      const __m256 factor = _mm256_set1_ps(peak > 0.0f ? 127.0f / peak : 0.0f);
      __m256i sum = _mm256_setzero_si256();
      for (int64_t i = 0; i < length; i += 32) {
        __m256i level[4];
        for (int64_t q = 0; q < 4; ++q) {
          // The default rounding mode is round-to-nearest-even: nearbyint, as the scalar formula.
          level[q] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(values + start + i + 8 * q), factor));
          level[q] = _mm256_min_epi32(_mm256_max_epi32(level[q], _mm256_set1_epi32(-127)), _mm256_set1_epi32(127));
          sum = _mm256_add_epi32(sum, level[q]);
        }
        const __m256i bytes = _mm256_xor_si256(
            _mm256_packs_epi16(_mm256_packs_epi32(level[0], level[1]), _mm256_packs_epi32(level[2], level[3])), offset);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(levels + row * p.k + start + i),
                            _mm256_permutevar8x32_epi32(bytes, unshuffle));
      }
      alignas(32) int32_t sums[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(sums), sum);
      scales[row * p.groups + group] = peak / 127.0f;
      level_sums[row * p.groups + group] =
          sums[0] + sums[1] + sums[2] + sums[3] + sums[4] + sums[5] + sums[6] + sums[7];
    }
  }
}

void run_avx2(const Problem& p, int64_t panel_begin, int64_t panel_end) {
  run_format<false>(p, panel_begin, panel_end);
}

void run_avx_vnni(const Problem& p, int64_t panel_begin, int64_t panel_end) {
  run_format<true>(p, panel_begin, panel_end);
}

}  // namespace qwen2audio::kernels::quantized_gemm_detail

#pragma GCC pop_options
