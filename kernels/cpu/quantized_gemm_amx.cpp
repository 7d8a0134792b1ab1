// The panel products of quantized_gemm.h on AMX-INT8, for prefill-sized inputs: one tile multiply
// adds 16 x 16 x 64 products, where AVX512-VNNI's vpdpbusd adds 16 x 4. A panel's 64-byte steps
// (16 columns x 4 elements) are exactly the rows of AMX's B operand, so a 64-element slice of a panel
// is one 1 KiB tile load straight from the int8 panels (int4 steps are widened to bytes first); the
// activation levels (quantize_activations_avx512's) are gathered into tiles once per call.
//
// Measured on a 2-core Sapphire Rapids-class Xeon (bench_kernels BM_Products, 2 threads): 1.4-1.7
// TFLOP/s against 0.83-0.95 for the VNNI kernel. What holds it there: the per-group scaling (a
// 16 x 16 tile of sums is stored and scaled for every 128 elements, two tile multiplies) and the
// panels' reads from L2 (with the panels' tile loads served from L1 instead, for timing only, 1.35x).
// Tried without gain: four A tiles against one panel (halves the L2 reads; 0.85x: an A register
// reloaded while its multiply still runs), scaling a pair's sums after the next pair's multiplies,
// software prefetch of the next pair's panels (T0 or T1), 2 or 4 panels per block instead of 8.
//
// Every group's int32 sums are exact and scaled by the same float operations, in the same order, as
// the VNNI kernel's, so the two give the same bits (tests/cpp/test_gemv.cpp checks it).
// Compiled for that target whatever the build's -march, and only called after cpuid says the CPU
// has it and the OS has let this process use the tile registers (cpu_features.cpp).
#include <immintrin.h>

// GCC 12 flags the deliberately undefined pass-through operands inside its own AVX-512 intrinsics
// (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/quantized_gemm_internal.h"

#if defined(__clang__)
#pragma clang attribute push(                                                                                 \
    __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,amx-tile,amx-int8"))), \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,amx-tile,amx-int8")
#endif

namespace qwen2audio::kernels::quantized_gemm_detail {
namespace {

// A block multiplies 32 activation rows (two A tiles) by two panels (two B tiles) into four 16 x 16
// sums (tiles 0-3), the usual 2 x 2 arrangement: each loaded tile serves two multiplies.
constexpr int64_t kBlockRows = 32;
constexpr int64_t kStep = 64;  // elements per tile multiply
// The tile registers by role. GCC's tile intrinsics paste their operand into the instruction text,
// so these must be macros expanding to the register's number.
#define QWEN2AUDIO_SUM00 0
#define QWEN2AUDIO_SUM01 1
#define QWEN2AUDIO_SUM10 2
#define QWEN2AUDIO_SUM11 3
#define QWEN2AUDIO_ROWS0 4
#define QWEN2AUDIO_ROWS1 5
#define QWEN2AUDIO_PANEL0 6
#define QWEN2AUDIO_PANEL1 7

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {};
  uint8_t rows[16] = {};
};

TileConfig every_tile_16_by_64() {
  TileConfig config;
  for (int tile = 0; tile < 8; ++tile) {
    config.bytes_per_row[tile] = 64;
    config.rows[tile] = 16;
  }
  return config;
}

// Panels per block (quantized_gemm.cpp's tasks are 8 panels): each 64-element slice of a block's
// rows (two A tiles) serves all of them while it is in L1; the float totals (32 rows x 8 panels x
// 16, 16 KiB) stay in L1 too.
constexpr int64_t kMostPanels = 8;

struct Scratch {
  alignas(64) int32_t sums[2][2][kPanel][kPanel];  // [row tile][panel][row][column]
  alignas(64) float total[kBlockRows][kMostPanels][kPanel];
  alignas(64) uint8_t widened[2][kStep / 4][64];  // int4: one step of each panel as bytes (B tiles)
};

// Int4 panel steps hold eight elements per column: the low nibbles the first four, the high the next
// four. A 64-element slice is eight steps; as bytes it is sixteen rows of a B tile.
void widen_int4_slice(const uint8_t* slice, uint8_t (*out)[64]) {
  const __m512i nibble = _mm512_set1_epi8(15);
  for (int64_t step = 0; step < kStep / 8; ++step) {
    const __m512i codes = _mm512_load_si512(slice + step * 64);
    _mm512_store_si512(out[2 * step], _mm512_and_si512(codes, nibble));
    _mm512_store_si512(out[2 * step + 1], _mm512_and_si512(_mm512_srli_epi16(codes, 4), nibble));
  }
}

// One group of rows [row0, row0 + rows) (rows <= 32; their block of Problem::amx_levels at `levels`)
// against panels panel0 + {0, 1} (`pair` of the call's panels; the second is panel0 again where a
// call has an odd one left, and not scaled) into the totals.
template <bool Int4>
void group_pair(const Problem& p, const uint8_t* levels, int64_t row0, int64_t rows, int64_t group, int64_t panel0,
                int64_t panel1, int64_t pair, Scratch& s) {
  const int64_t panel_bytes = p.panel_bytes();
  const auto* panels = static_cast<const uint8_t*>(p.w.data);
  const uint8_t* first = panels + panel0 * panel_bytes;
  const uint8_t* second = panels + panel1 * panel_bytes;
  const int64_t start = group * p.group_size, end = std::min(p.k, start + p.group_size);
  _tile_zero(QWEN2AUDIO_SUM00);
  _tile_zero(QWEN2AUDIO_SUM01);
  _tile_zero(QWEN2AUDIO_SUM10);
  _tile_zero(QWEN2AUDIO_SUM11);
  for (int64_t i = start; i < end; i += kStep) {
    const uint8_t* slice = levels + i / kStep * kBlockRows * kStep;
    _tile_loadd(QWEN2AUDIO_ROWS0, slice, kStep);
    _tile_loadd(QWEN2AUDIO_ROWS1, slice + 16 * kStep, kStep);
    if constexpr (Int4) {
      // Codes 0..15 are the unsigned operand, the levels the signed one (as in the VNNI kernel).
      widen_int4_slice(first + i * 8, s.widened[0]);
      widen_int4_slice(second + i * 8, s.widened[1]);
      _tile_loadd(QWEN2AUDIO_PANEL0, s.widened[0], 64);
      _tile_loadd(QWEN2AUDIO_PANEL1, s.widened[1], 64);
      _tile_dpbsud(QWEN2AUDIO_SUM00, QWEN2AUDIO_ROWS0, QWEN2AUDIO_PANEL0);
      _tile_dpbsud(QWEN2AUDIO_SUM01, QWEN2AUDIO_ROWS0, QWEN2AUDIO_PANEL1);
      _tile_dpbsud(QWEN2AUDIO_SUM10, QWEN2AUDIO_ROWS1, QWEN2AUDIO_PANEL0);
      _tile_dpbsud(QWEN2AUDIO_SUM11, QWEN2AUDIO_ROWS1, QWEN2AUDIO_PANEL1);
    } else {
      // Levels + 128 are the unsigned operand, the codes the signed one.
      _tile_loadd(QWEN2AUDIO_PANEL0, first + i * kPanel, 64);
      _tile_loadd(QWEN2AUDIO_PANEL1, second + i * kPanel, 64);
      _tile_dpbusd(QWEN2AUDIO_SUM00, QWEN2AUDIO_ROWS0, QWEN2AUDIO_PANEL0);
      _tile_dpbusd(QWEN2AUDIO_SUM01, QWEN2AUDIO_ROWS0, QWEN2AUDIO_PANEL1);
      _tile_dpbusd(QWEN2AUDIO_SUM10, QWEN2AUDIO_ROWS1, QWEN2AUDIO_PANEL0);
      _tile_dpbusd(QWEN2AUDIO_SUM11, QWEN2AUDIO_ROWS1, QWEN2AUDIO_PANEL1);
    }
  }
  _tile_stored(QWEN2AUDIO_SUM00, s.sums[0][0], 64);
  _tile_stored(QWEN2AUDIO_SUM01, s.sums[0][1], 64);
  _tile_stored(QWEN2AUDIO_SUM10, s.sums[1][0], 64);
  _tile_stored(QWEN2AUDIO_SUM11, s.sums[1][1], 64);
  // The group's scaling, as run_avx512_vnni's tile does it.
  const int columns = panel1 == panel0 ? 1 : 2;
  __m512 weight_scale[2];
  __m512i correction[2];
  const int64_t panel_of[2] = {panel0, panel1};
  for (int t = 0; t < columns; ++t) {
    const int64_t at = (panel_of[t] * p.groups + group) * kPanel;
    weight_scale[t] = _mm512_loadu_ps(p.w.scales + at);
    if constexpr (!Int4) correction[t] = _mm512_slli_epi32(_mm512_loadu_si512(p.w.code_sums + at), 7);
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t at = (row0 + r) * p.groups + group;
    const __m512 activation_scale = _mm512_set1_ps(p.x_scales[at]);
    if constexpr (Int4) correction[0] = correction[1] = _mm512_set1_epi32(8 * p.level_sums[at]);
    for (int t = 0; t < columns; ++t) {
      float* total = s.total[r][2 * pair + t];
      const __m512i sum = _mm512_load_si512(s.sums[r / 16][t][r % 16]);
      _mm512_store_ps(total, _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(sum, correction[t])),
                                             _mm512_mul_ps(activation_scale, weight_scale[t]), _mm512_load_ps(total)));
    }
  }
}

// Rows [row0, row0 + rows) against panels [panel_begin, panel_end): group by group, each 64-element
// slice of the rows' levels (two A tiles) stays in L1 while every panel pair of the call uses it.
template <bool Int4>
void block(const Problem& p, const uint8_t* levels, int64_t row0, int64_t rows, int64_t panel_begin, int64_t panel_end,
           Scratch& s) {
  std::memset(s.total, 0, sizeof s.total);
  for (int64_t group = 0; group < p.groups; ++group)
    for (int64_t panel = panel_begin, pair = 0; panel < panel_end; panel += 2, ++pair)
      group_pair<Int4>(p, levels, row0, rows, group, panel, std::min(panel + 1, panel_end - 1), pair, s);
  for (int64_t panel = panel_begin; panel < panel_end; ++panel)
    store_panel_totals(p, panel, row0, rows, s.total[0][panel - panel_begin], kMostPanels * kPanel);
}

template <bool Int4>
void run_panels(const Problem& p, int64_t panel_begin, int64_t panel_end) {
  static const TileConfig config = every_tile_16_by_64();
  _tile_loadconfig(&config);
  Scratch scratch;
  for (int64_t first = panel_begin; first < panel_end; first += kMostPanels) {
    const int64_t last = std::min(panel_end, first + kMostPanels);
    for (int64_t row = 0; row < p.m; row += kBlockRows) {
      const int64_t rows = std::min<int64_t>(kBlockRows, p.m - row);
      block<Int4>(p, p.amx_levels + row * p.k, row, rows, first, last, scratch);
    }
  }
  _tile_release();
}

}  // namespace

int64_t amx_levels_bytes(const Problem& p) { return (p.m + kBlockRows - 1) / kBlockRows * kBlockRows * p.k; }

void gather_amx_levels(const Problem& p, uint8_t* out) {
  const auto* levels = reinterpret_cast<const uint8_t*>(p.levels);
  const int64_t blocks = (p.m + kBlockRows - 1) / kBlockRows, slices = p.k / kStep;
#pragma omp parallel for collapse(2) schedule(static) if (p.m * p.k > (1 << 16))
  for (int64_t block = 0; block < blocks; ++block) {
    for (int64_t slice = 0; slice < slices; ++slice) {
      uint8_t* gathered = out + (block * slices + slice) * kBlockRows * kStep;
      for (int64_t r = 0; r < kBlockRows; ++r) {
        const int64_t row = block * kBlockRows + r;
        const __m512i bytes =
            row < p.m ? _mm512_loadu_si512(levels + row * p.k + slice * kStep) : _mm512_setzero_si512();
        _mm512_store_si512(gathered + r * kStep, bytes);
      }
    }
  }
}

bool amx_shape_supported(const Problem& p) { return p.k % kStep == 0 && p.group_size % kStep == 0; }

void run_amx(const Problem& p, int64_t panel_begin, int64_t panel_end) {
  if (p.w.format == WeightFormat::Int4)
    run_panels<true>(p, panel_begin, panel_end);
  else
    run_panels<false>(p, panel_begin, panel_end);
}

}  // namespace qwen2audio::kernels::quantized_gemm_detail

#undef QWEN2AUDIO_SUM00
#undef QWEN2AUDIO_SUM01
#undef QWEN2AUDIO_SUM10
#undef QWEN2AUDIO_SUM11
#undef QWEN2AUDIO_ROWS0
#undef QWEN2AUDIO_ROWS1
#undef QWEN2AUDIO_PANEL0
#undef QWEN2AUDIO_PANEL1

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
