#pragma once

#include <cstdint>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/gemv.h"
#include "runtime/buffer.h"

// Products of float32 activation rows with weight-only quantized weights (gemv.h's Int8 and Int4) in
// the panel layout, on the CPU's integer dot-product units: every decode step (gemv forwards panels
// here) and the prefill of a quantized model, without widening the weights back to floats.
//
// Activations are quantized per row and weight group to int8 levels, nearbyint(x * 127 / max|x|) (an
// activation moves by at most 1/254 of its group's largest magnitude). Each group's products are then
// exact int32 sums, and only a group's total is scaled:
//   y[m, n] = sum over groups g of (max|x[m, g]| / 127) * scale[n, g] * sum_{k in g} level[m, k] code[n, k]
// (+ bias[n]; added to y with `accumulate`). Int4 codes count as their levels c - 8.
//
// In a panel the 16 output columns of a step share one vector, so a step of four (int8) or eight
// (int4) elements is one load and one or two vpdpbusd per activation row, and a group's scaling is one
// conversion and one multiply-add per 16 columns; with rows as stored each column would be a
// separate dot product to reduce and scale.
namespace qwen2audio::kernels {

// Whether vector panel kernels run on `isa`: AVX512-VNNI's vpdpbusd from the Avx512Vnni tier up,
// AVX-VNNI's on Avx2Vnni and vpmaddubsw on Avx2 and Avx512 (both in
// quantized_gemm_avx2.cpp). All compute the same exact int32 sums; without AVX2 a scalar
// implementation keeps panels correct (for tests), not fast.
bool panels_supported(Isa isa);

// Rows per panel, and the bytes of one panel's codes for rows of k elements (gemv.h's Panels layout).
constexpr int64_t kPanelRows = 16;
inline int64_t panel_bytes(WeightFormat format, int64_t k) {
  return format == WeightFormat::Int8 ? k * kPanelRows : k * kPanelRows / 2;
}

// A quantized matrix in the panel layout, owning its storage; `view` points into it.
struct PackedPanels {
  Buffer<uint8_t> codes;
  Buffer<float> scales;
  Buffer<int32_t> code_sums;
  WeightMatrix view;
  size_t bytes() const;
};

// Repacks the n x k quantized matrix `rows` (Rows layout) into panels. Parallel over panels.
PackedPanels pack_panels(const WeightMatrix& rows, int64_t n, int64_t k);

// The Rows layout of a panel matrix (codes: n rows of weight_row_bytes(format, k) bytes; scales:
// n rows of scale_groups(k, group_size)), e.g. to save it as a checkpoint stores it.
void unpack_panels(const WeightMatrix& panels, int64_t n, int64_t k, uint8_t* codes, float* scales);

// gemv's arguments (gemv.h), with weights (Int8 or Int4) in the Panels layout. Throws
// InvalidArgument on inconsistent arguments. Any m: tiles of up to 4 rows for decode steps, 6 for
// prefill. Runs on the calling thread's OpenMP thread count, splitting the panels; allocates
// nothing once the calling thread has seen a call of this size.
void quantized_gemm(const GemvArgs& args, Isa isa = best_isa());

}  // namespace qwen2audio::kernels
