// The panel products of quantized_gemm.h on AMX-INT8, for prefill-sized inputs: one tile multiply
// adds 16 x 16 x 64 products, where AVX512-VNNI's vpdpbusd adds 16 x 4. A panel's 64-byte steps
// (16 columns x 4 elements) are exactly the rows of AMX's B operand, so a 64-element slice of a panel
// is one 1 KiB tile load straight from the int8 panels (int4 steps are widened to bytes first); the
// activation levels (quantize_activations_amx's) are written in tile order once per call.
//
// Both operands are signed (tdpbssd): the levels as they are (without the + 128 that the VNNI
// kernel's unsigned operand needs), int8 codes as stored, int4 codes widened as c - 8.
// The sums are then the group's exact products, with no per-row or per-column correction to subtract
// while scaling.
//
// Measured on a 2-core Sapphire Rapids-class Xeon (bench_kernels BM_Products, 2 threads): int8 2.1-2.8
// TFLOP/s at the encoder's and prefill's shapes, against 0.83-0.95 for the VNNI kernel; at 3120 rows
// the rate of oneDNN's own u8 x s8 matmul, which has one scale per column where these have one per
// group of 128. What holds it there is the per-group scaling: a 16 x 16 tile of sums is stored and
// scaled for every 128 elements, two tile multiplies (left out, for timing only, the kernel ran 1.4x
// faster). Each pair's sums are scaled after the next pair's multiplies are issued, from the other of
// two buffers: scaling them right after their tile stores had the vector loads wait on those stores
// (tile stores do not forward) and the next multiplies behind the loads (1.08-1.12x; with the signed
// operands and the row-tile scaling loops, 1.15-1.26x).
// Tried without gain: four A tiles against one panel (halves the L2 reads; 0.85x: an A register
// reloaded while its multiply still runs), one A tile against two panels with every operand tile
// double-buffered (0.94x at 3120 rows, 1.05x at 290), scaling a group's pairs after all their
// multiplies, software prefetch of the next pair's panels (T0 or T1), 2 or 4 panels per block or task
// instead of 8.
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

#include "kernels/cpu/quantized_gemm_internal.h"
#include "runtime/buffer.h"

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
  alignas(64) uint8_t widened[2][kAmxStep / 4][64];   // int4 widened step by step: one slice of each panel
  alignas(64) int32_t sums[2][2][2][kPanel][kPanel];  // [buffer][row tile][panel][row][column]
  alignas(64) float total[kAmxBlockRows][kMostPanels][kPanel];
};

// Int4 panels widened to bytes in the int8 panels' layout, once per call and task for up to
// kMostPanels panels (a thread's own): widening each pair's slices for every 32-row block took the
// vector ports beside the scaling (int4 products at 3120 rows 1.10-1.23x faster widened once). Calls
// of fewer blocks than this widen step by step into L1 instead (at 37 rows once per call was 0.8x).
thread_local Buffer<uint8_t> tls_widened;
constexpr int64_t kBlocksToWidenOnce = 4;

// Int4 panel steps hold eight elements per column: the low nibbles the first four, the high the next
// four. A 64-element slice is eight steps; as signed bytes c - 8 it is sixteen rows of a B tile.
void widen_int4_slice(const uint8_t* slice, uint8_t (*out)[64]) {
  const __m512i nibble = _mm512_set1_epi8(15), offset = _mm512_set1_epi8(8);
  for (int64_t step = 0; step < kAmxStep / 8; ++step) {
    const __m512i codes = _mm512_load_si512(slice + step * 64);
    _mm512_store_si512(out[2 * step], _mm512_sub_epi8(_mm512_and_si512(codes, nibble), offset));
    _mm512_store_si512(out[2 * step + 1],
                       _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(codes, 4), nibble), offset));
  }
}

// One group of a block's rows (their levels at `levels`) against panels panel0 and panel1 (panel0
// again where a call has an odd one left; `panels` points at `first_panel`, int8 or int4 panels widened
// already, or int4 panels that WidenHere widens slice by slice): the four tiles of int32 sums, stored
// to `sums`.
template <bool WidenHere>
void multiply_pair(const Problem& p, const uint8_t* levels, const uint8_t* panels, int64_t first_panel, int64_t group,
                   int64_t panel0, int64_t panel1, int32_t (*sums)[2][kPanel][kPanel], Scratch& s) {
  constexpr int64_t kBytesPerElement = WidenHere ? 8 : kPanel;  // of a panel, per element of k
  const int64_t panel_bytes = p.k * kBytesPerElement;
  const uint8_t* first = panels + (panel0 - first_panel) * panel_bytes;
  const uint8_t* second = panels + (panel1 - first_panel) * panel_bytes;
  const int64_t start = group * p.group_size, end = std::min(p.k, start + p.group_size);
  _tile_zero(QWEN2AUDIO_SUM00);
  _tile_zero(QWEN2AUDIO_SUM01);
  _tile_zero(QWEN2AUDIO_SUM10);
  _tile_zero(QWEN2AUDIO_SUM11);
  for (int64_t i = start; i < end; i += kAmxStep) {
    const uint8_t* slice = levels + i / kAmxStep * kAmxBlockRows * kAmxStep;
    _tile_loadd(QWEN2AUDIO_ROWS0, slice, kAmxStep);
    _tile_loadd(QWEN2AUDIO_ROWS1, slice + 16 * kAmxStep, kAmxStep);
    if constexpr (WidenHere) {
      widen_int4_slice(first + i * kBytesPerElement, s.widened[0]);
      widen_int4_slice(second + i * kBytesPerElement, s.widened[1]);
      _tile_loadd(QWEN2AUDIO_PANEL0, s.widened[0], 64);
      _tile_loadd(QWEN2AUDIO_PANEL1, s.widened[1], 64);
    } else {
      _tile_loadd(QWEN2AUDIO_PANEL0, first + i * kPanel, 64);
      _tile_loadd(QWEN2AUDIO_PANEL1, second + i * kPanel, 64);
    }
    _tile_dpbssd(QWEN2AUDIO_SUM00, QWEN2AUDIO_ROWS0, QWEN2AUDIO_PANEL0);
    _tile_dpbssd(QWEN2AUDIO_SUM01, QWEN2AUDIO_ROWS0, QWEN2AUDIO_PANEL1);
    _tile_dpbssd(QWEN2AUDIO_SUM10, QWEN2AUDIO_ROWS1, QWEN2AUDIO_PANEL0);
    _tile_dpbssd(QWEN2AUDIO_SUM11, QWEN2AUDIO_ROWS1, QWEN2AUDIO_PANEL1);
  }
  _tile_stored(QWEN2AUDIO_SUM00, sums[0][0], 64);
  _tile_stored(QWEN2AUDIO_SUM01, sums[0][1], 64);
  _tile_stored(QWEN2AUDIO_SUM10, sums[1][0], 64);
  _tile_stored(QWEN2AUDIO_SUM11, sums[1][1], 64);
}

// Adds one group's sums of rows [row0, row0 + rows) against panel0 and panel1 (`pair` of the block's)
// to the totals, with run_avx512_vnni's float operations in its order: the sum (exact, so the same
// value as the VNNI kernel's corrected one) as float, times activation scale x weight scale. The
// first group adds to zeros held in a register, as the VNNI kernel's do (clearing the totals in
// memory for every block was 1.6 % of a prefill).
template <bool FirstGroup>
void scale_pair(const Problem& p, int64_t row0, int64_t rows, int64_t group, int64_t panel0, int64_t panel1,
                int64_t pair, const int32_t (*sums)[2][kPanel][kPanel], Scratch& s) {
  const __m512 weight_scale0 = _mm512_loadu_ps(p.w.scales + (panel0 * p.groups + group) * kPanel);
  const __m512 weight_scale1 = _mm512_loadu_ps(p.w.scales + (panel1 * p.groups + group) * kPanel);
  auto so_far = [](const float* total) { return FirstGroup ? _mm512_setzero_ps() : _mm512_load_ps(total); };
  // Row tile by row tile, with the test for a lone panel outside the loops: indexing the sums by
  // r / 16 and testing per row cost 3-7 % of the kernel.
  for (int64_t tile = 0; tile < 2 && 16 * tile < rows; ++tile) {
    const int64_t count = std::min<int64_t>(16, rows - 16 * tile);
    const float* activation_scales = p.x_scales + (row0 + 16 * tile) * p.groups + group;
    const int32_t* sums0 = sums[tile][0][0];
    const int32_t* sums1 = sums[tile][1][0];
    float* totals = s.total[16 * tile][2 * pair];
    constexpr int64_t kTotalsStride = kMostPanels * kPanel;
    if (panel1 != panel0) {
      for (int64_t r = 0; r < count; ++r) {
        const __m512 activation_scale = _mm512_set1_ps(activation_scales[r * p.groups]);
        float* total = totals + r * kTotalsStride;
        _mm512_store_ps(total, _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(sums0 + r * kPanel)),
                                               _mm512_mul_ps(activation_scale, weight_scale0), so_far(total)));
        _mm512_store_ps(total + kPanel,
                        _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(sums1 + r * kPanel)),
                                        _mm512_mul_ps(activation_scale, weight_scale1), so_far(total + kPanel)));
      }
    } else {
      for (int64_t r = 0; r < count; ++r) {
        const __m512 activation_scale = _mm512_set1_ps(activation_scales[r * p.groups]);
        float* total = totals + r * kTotalsStride;
        _mm512_store_ps(total, _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_load_si512(sums0 + r * kPanel)),
                                               _mm512_mul_ps(activation_scale, weight_scale0), so_far(total)));
      }
    }
  }
}

// Rows [row0, row0 + rows) against panels [panel_begin, panel_end): group by group, each 64-element
// slice of the rows' levels (two A tiles) stays in L1 while every panel pair of the call uses it. A
// pair's sums are scaled once the next pair's multiplies are under way (see the top of the file).
template <bool WidenHere>
void block(const Problem& p, const uint8_t* levels, const uint8_t* panels, int64_t row0, int64_t rows,
           int64_t panel_begin, int64_t panel_end, Scratch& s) {
  struct Multiplied {
    int64_t group = -1, panel = 0, pair = 0;
    int buffer = 0;
  } waiting;
  auto scale = [&](const Multiplied& done) {
    const int64_t panel1 = std::min(done.panel + 1, panel_end - 1);
    if (done.group == 0)
      scale_pair<true>(p, row0, rows, done.group, done.panel, panel1, done.pair, s.sums[done.buffer], s);
    else
      scale_pair<false>(p, row0, rows, done.group, done.panel, panel1, done.pair, s.sums[done.buffer], s);
  };
  int buffer = 0;
  for (int64_t group = 0; group < p.groups; ++group) {
    for (int64_t panel = panel_begin, pair = 0; panel < panel_end; panel += 2, ++pair) {
      multiply_pair<WidenHere>(p, levels, panels, panel_begin, group, panel, std::min(panel + 1, panel_end - 1),
                               s.sums[buffer], s);
      if (waiting.group >= 0) scale(waiting);
      waiting = {group, panel, pair, buffer};
      buffer ^= 1;
    }
  }
  scale(waiting);
  for (int64_t panel = panel_begin; panel < panel_end; ++panel)
    store_panel_totals(p, panel, row0, rows, s.total[0][panel - panel_begin], kMostPanels * kPanel);
}

}  // namespace

int64_t amx_levels_bytes(const Problem& p) { return (p.m + kAmxBlockRows - 1) / kAmxBlockRows * kAmxBlockRows * p.k; }

bool amx_shape_supported(const Problem& p) { return p.k % kAmxStep == 0 && p.group_size % kAmxStep == 0; }

void run_amx(const Problem& p, int64_t panel_begin, int64_t panel_end) {
  static const TileConfig config = every_tile_16_by_64();
  _tile_loadconfig(&config);
  Scratch scratch;
  const bool int4 = p.w.format == WeightFormat::Int4;
  const int64_t blocks = (p.m + kAmxBlockRows - 1) / kAmxBlockRows;
  const bool widen_here = int4 && blocks < kBlocksToWidenOnce;
  for (int64_t first = panel_begin; first < panel_end; first += kMostPanels) {
    const int64_t last = std::min(panel_end, first + kMostPanels);
    const auto* panels = static_cast<const uint8_t*>(p.w.data) + first * p.panel_bytes();
    if (int4 && !widen_here) {
      uint8_t* widened = tls_widened.reserve(static_cast<size_t>((last - first) * p.k * kPanel));
      for (int64_t panel = 0; panel < last - first; ++panel)
        for (int64_t i = 0; i < p.k; i += kAmxStep)
          widen_int4_slice(panels + panel * p.panel_bytes() + i * 8,
                           reinterpret_cast<uint8_t(*)[64]>(widened + (panel * p.k + i) * kPanel));
      panels = widened;
    }
    for (int64_t row = 0; row < p.m; row += kAmxBlockRows) {
      const int64_t rows = std::min<int64_t>(kAmxBlockRows, p.m - row);
      if (widen_here)
        block<true>(p, p.amx_levels + row * p.k, panels, row, rows, first, last, scratch);
      else
        block<false>(p, p.amx_levels + row * p.k, panels, row, rows, first, last, scratch);
    }
  }
  _tile_release();
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
