#pragma once

// Shared by gemv.cpp (checks, dispatch, threading) and the per-instruction-set files, each of
// which compiles its kernels under its own `#pragma GCC target`. Not a public interface.
#include <cstdint>

#include "kernels/cpu/gemv.h"

namespace qwen2audio::kernels::gemv_detail {

// One gemv call after checks. x is float32 [m, k] (already rounded to BF16 values when the call
// asks for it); x_bf16, when set, holds the same rows as BF16 bits with row stride ldx_bf16 (even,
// zero-padded), for the AVX512-BF16 dot product.
struct Problem {
  int64_t m = 0;
  int64_t k = 0;
  const float* x = nullptr;
  int64_t ldx = 0;
  const uint16_t* x_bf16 = nullptr;
  int64_t ldx_bf16 = 0;
  // Int4 weights: x quantized to int8 per weight group (row stride ldx_q = k), each group's scale
  // and the sum of its levels (row stride ldx_groups), which takes the codes' offset of 8 out of the
  // inner loop: sum (c - 8) q = sum c q - 8 sum q. With x_q_interleaved (every vector tier), each
  // whole 64-element chunk of a group holds its elements in the order the kernels unpack a chunk's
  // 32 bytes of codes: 0-15, 32-47, 16-31, 48-63 (a trailing 32-element block keeps its order).
  // Int8 weights: x as int16 levels per weight group in x_q16 (row stride ldx_q = k), with the group
  // scales in x_scales; x_q and x_level_sums stay null.
  const int8_t* x_q = nullptr;
  const int16_t* x_q16 = nullptr;
  int64_t ldx_q = 0;
  bool x_q_interleaved = false;
  const float* x_scales = nullptr;
  const int32_t* x_level_sums = nullptr;
  int64_t ldx_groups = 0;
  WeightMatrix w;
  // Software prefetch this many bytes ahead in each weight row stream (0: none). Server cores
  // keep few misses in flight each, and a tile reads several rows at once; prefetching raises the
  // bandwidth one core draws (measured in bench_gemv.cpp).
  int64_t prefetch = 0;
  // ReadOrder::Rows (gemv.h): each weight row front to back instead of a column tile's rows side by
  // side. Set only for one activation row of BF16 weights on the AVX512-BF16 tier.
  bool row_by_row = false;
  // BF16 weights on the AVX512-BF16 tier (either order): the elements each weight row starts past a
  // 64-byte boundary; x_bf16 then holds as many zeros before x, so step i of a row read from that
  // boundary meets x_bf16 + i.
  int64_t row_shift = 0;
  const float* bias = nullptr;
  float* y = nullptr;
  int64_t ldy = 0;
  bool accumulate = false;

  void store(int64_t row, int64_t column, float dot) const {
    float* out = y + row * ldy + column;
    const float value = dot + (bias ? bias[column] : 0.0f);
    *out = accumulate ? *out + value : value;
  }
};

// Weight rows per column tile of the kernels of one activation row (four independent row streams;
// the AVX-512 int8 kernel takes two tiles at once); every tier's default prefetch distance is one
// such tile of rows (gemv.h).
constexpr int kColumnTile = 4;

// The most elements of one weight group an int8 kernel may sum in int32 before scaling: every
// product is at most 128 * 32767 in magnitude (codes in [-128, 127], activation levels in
// [-32767, 32767]) and a 256-bit lane adds 4 of them per 32 elements, so 4096 elements stay below
// 2^31 (longer groups are summed in spans of this length).
constexpr int64_t kInt8ExactSpan = 4096;

// Computes output columns [begin, end) of every row. begin is a multiple of 4.
using RangeKernel = void (*)(const Problem& problem, int64_t begin, int64_t end);

RangeKernel scalar_kernel(WeightFormat format);
RangeKernel avx2_kernel(WeightFormat format);
// vnni_bf16: the Avx512Bf16 tier (BF16 weights through vdpbf16ps with Problem::x_bf16, int4
// through vpdpbusd); otherwise AVX-512 F/BW/VL/DQ only.
RangeKernel avx512_kernel(WeightFormat format, bool vnni_bf16);

}  // namespace qwen2audio::kernels::gemv_detail
