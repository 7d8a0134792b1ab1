#pragma once

// Shared by quantized_gemm.cpp (checks, activation levels, the scalar implementation, dispatch) and
// the per-instruction-set file. Not a public interface.
#include <cstdint>

#include "kernels/cpu/quantized_gemm.h"

namespace qwen2audio::kernels::quantized_gemm_detail {

constexpr int64_t kPanel = kPanelRows;

// One call after checks, with the activations already quantized: levels [m, k] (row stride k), and
// per row and group their scale and the sum of their levels (row stride `groups`).
struct Problem {
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  int64_t group_size = 0;
  int64_t groups = 0;
  const int8_t* levels = nullptr;
  const float* x_scales = nullptr;
  const int32_t* level_sums = nullptr;
  // run_amx: the levels, signed (int8 weights included), in blocks of kAmxBlockRows rows (zeros past
  // m), each block kAmxStep-element slice by slice, a slice's rows kAmxStep bytes apart: each of its
  // halves one A tile in 1 KiB. In place, a tile's 16 rows would lie k bytes apart, with k = 4096 all
  // in one set of the L1 cache, more than its ways. (levels and level_sums are then not used.)
  const uint8_t* amx_levels = nullptr;
  WeightMatrix w;
  const float* bias = nullptr;
  float* y = nullptr;
  int64_t ldy = 0;
  bool accumulate = false;

  int64_t panels() const { return (n + kPanel - 1) / kPanel; }
  // Bytes of one panel's codes.
  int64_t panel_bytes() const { return kernels::panel_bytes(w.format, k); }
  void store(int64_t row, int64_t column, float dot) const {
    float* out = y + row * ldy + column;
    const float value = dot + (bias ? bias[column] : 0.0f);
    *out = accumulate ? *out + value : value;
  }
};

// Levels, scales and level sums of rows [0, m) of x (row stride ldx), by the formula of
// quantized_gemm.h; the vector version gives the same numbers, its levels for int8 weights stored
// as level + 128 (the unsigned operand of its kernel).
void quantize_activations_avx512(const float* x, int64_t ldx, const Problem& p, int8_t* levels, float* scales,
                                 int32_t* level_sums);
// The same levels and scales for the AMX kernel: the levels signed, straight into its tile order
// (Problem::amx_levels; amx_levels_bytes() bytes), the rows of the last block past m zero.
void quantize_activations_amx(const float* x, int64_t ldx, const Problem& p, uint8_t* tiles, float* scales);
// Panels [panel_begin, panel_end) of every row.
void run_avx512_vnni(const Problem& p, int64_t panel_begin, int64_t panel_end);
// Writes rows [row0, row0 + rows) of one panel's 16 columns from float totals (16 floats a row,
// `totals_stride` apart): bias added, then what y held where `accumulate`, columns past n left alone.
// The VNNI and AMX kernels both end so, which keeps their results the same bits.
void store_panel_totals(const Problem& p, int64_t panel, int64_t row0, int64_t rows, const float* totals,
                        int64_t totals_stride);

// The AMX-INT8 kernel (quantized_gemm_amx.cpp), on the same levels as run_avx512_vnni and with the
// same bits: for shapes whose groups are whole kAmxStep-element tile steps. It reads the levels in
// tile order (Problem::amx_levels, written by quantize_activations_amx).
constexpr int64_t kAmxBlockRows = 32;  // rows of a block: two A tiles
constexpr int64_t kAmxStep = 64;       // elements per tile multiply
bool amx_shape_supported(const Problem& p);
int64_t amx_levels_bytes(const Problem& p);
void run_amx(const Problem& p, int64_t panel_begin, int64_t panel_end);

// Calls of up to kDecodeRows rows (decode steps), for the VNNI and AVX2 panel kernels: one row
// against OneRowPanels panels at a time, more in tiles of up to four rows against RowsPanels panels;
// panels that do not fill a whole group go one at a time. `tile.template operator()<R, T>(
// row0, panel0)` runs rows [row0, row0 + R) against panels [panel0, panel0 + T).
constexpr int64_t kDecodeRows = 8;
template <int OneRowPanels, int RowsPanels, typename Tile>
void run_decode_rows(int64_t m, int64_t panel_begin, int64_t panel_end, const Tile& tile) {
  auto columns = [&]<int R, int T>(int64_t row) {
    int64_t panel = panel_begin;
    for (; panel + T <= panel_end; panel += T) tile.template operator()<R, T>(row, panel);
    for (; panel < panel_end; ++panel) tile.template operator()<R, 1>(row, panel);
  };
  if (m == 1) return columns.template operator()<1, OneRowPanels>(0);
  int64_t row = 0;
  for (; row + 4 <= m; row += 4) columns.template operator()<4, RowsPanels>(row);
  switch (m - row) {
    case 3:
      return columns.template operator()<3, RowsPanels>(row);
    case 2:
      return columns.template operator()<2, RowsPanels>(row);
    case 1:
      return columns.template operator()<1, RowsPanels>(row);
    default:
      return;
  }
}

// Whether the VNNI kernels (AVX512-VNNI, AVX-VNNI) take an int8 product's levels as level + 128, the
// unsigned operand of vpdpbusd, which a group's total gives back as 128 x the sum of its codes: for
// prefill. Decode rows multiply |code| by the level with the code's sign instead, which reads no
// code sums beside the codes (a second stream, which decode steps felt; see the kernels).
inline bool vnni_offsets_levels(const Problem& p) { return p.w.format == WeightFormat::Int8 && p.m > kDecodeRows; }

// The 256-bit kernels (quantized_gemm_avx2.cpp). Levels stored as they are, except with
// `offset_levels` (AVX-VNNI and vnni_offsets_levels) as level + 128.
void quantize_activations_avx2(const float* x, int64_t ldx, const Problem& p, bool offset_levels, int8_t* levels,
                               float* scales, int32_t* level_sums);
// vpmaddubsw (AVX2), and vpdpbusd (AVX-VNNI; int8 levels offset).
void run_avx2(const Problem& p, int64_t panel_begin, int64_t panel_end);
void run_avx_vnni(const Problem& p, int64_t panel_begin, int64_t panel_end);

}  // namespace qwen2audio::kernels::quantized_gemm_detail
