#pragma once

#include <cstdint>

#include "kernels/cpu/cpu_features.h"
#include "runtime/dtype.h"

// Matrix-vector products for decoding: y[m, n] = x[m, k] W[n, k]^T (+ bias) for a few rows m
// (a decode step of a batch). Each weight byte is read once per call, so the time is the weight
// bytes over the memory bandwidth; the kernels convert weights to float32 in registers and never
// touch them again. Larger m belongs to a matrix-multiply (Gemm), which re-uses each weight.
namespace qwen2audio::kernels {

// Storage of W [n, k] (the nn.Linear layout, row-major, row stride `ld` elements):
//   F32, BF16  plain values.
//   Int8       int8 codes q in [-127, 127]; w = scale * q.
//   Int4       4-bit codes c in [0, 15], two per byte; w = scale * (c - 8). Each block of 32
//              consecutive elements of a row takes 16 bytes: byte j holds element j in its low
//              nibble and element j + 16 in its high nibble (both halves unpack with one mask
//              and one shift). Rows take ld / 2 bytes.
// Quantized formats carry a float32 scale per group of `group_size` consecutive elements of a row:
// scales[row * scales_ld + p / group_size]. group_size is a multiple of 32, k a multiple of 32 (the
// last group may be shorter than group_size).
//
// Activations: F32 and BF16 weights meet float32 activations. The quantized formats meet
// activations quantized per weight group, so each group's products are exact integer sums on
// dot-product instructions (pmaddwd, pmaddubsw, vpdpbusd) and only each group's total is scaled:
// a float32 kernel is bound by converting codes to floats, not by memory.
//   Int8 weights: int16 levels, scale max|x| / 32767, level nearbyint(x * (32767 / max|x|)). The
//              rounding moves an activation by at most 1/65534 of its group's largest magnitude,
//              1/258 of the weights' own worst step (1/254 of theirs).
//   Int4 weights: int8 levels, scale max|x| / 127, level nearbyint(x * (127 / max|x|)): at most
//              1/254 of the group's largest magnitude, against int4's step of 1/8 of the weights'.
enum class WeightFormat : uint8_t { F32, BF16, Int8, Int4 };

const char* weight_format_name(WeightFormat format);
// Int8 and Int4: codes with a float scale per group of a row (see WeightMatrix).
inline bool is_quantized(WeightFormat format) { return format == WeightFormat::Int8 || format == WeightFormat::Int4; }

// How a quantized matrix is laid out: Rows as above, or Panels (made by pack_panels, read by the
// integer dot-product kernels of quantized_gemm.h): the rows in panels of 16 (the last panel padded
// with zero rows), each panel a run of 64-byte steps in which the 16 rows sit side by side, so one
// vector load holds a step of 16 output columns and the products add into 16 int32 lanes, one per
// column:
//   Int8: k / 4 steps; byte 4 c + j of step s is code (4 s + j) of the panel's row c.
//   Int4: k / 8 steps; byte 4 c + j of step s holds code (8 s + j) of row c in its low nibble and
//         code (8 s + 4 + j) in its high nibble.
// Panels take their scales as [panel][group][16] (scales_ld unused) and, for Int8, code_sums
// [panel][group][16]: the sum of each row's codes over the group.
enum class WeightLayout : uint8_t { Rows, Panels };

struct WeightMatrix {
  WeightFormat format = WeightFormat::F32;
  const void* data = nullptr;
  int64_t ld = 0;
  const float* scales = nullptr;
  int64_t scales_ld = 0;
  int64_t group_size = 0;
  WeightLayout layout = WeightLayout::Rows;
  const int32_t* code_sums = nullptr;  // Int8 panels
};

// Bytes of one row of k elements, and the scale entries per row.
int64_t weight_row_bytes(WeightFormat format, int64_t k);
int64_t scale_groups(int64_t k, int64_t group_size);

struct GemvArgs {
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  const float* x = nullptr;
  int64_t ldx = 0;
  WeightMatrix w;
  const float* bias = nullptr;  // [n] or null
  float* y = nullptr;
  int64_t ldy = 0;
  bool accumulate = false;  // y += x W^T (+ bias): a residual connection for free
};

// The row count up to which gemv is the right tool; a single call takes any m, but beyond this
// the weights are better re-used from cache by a matrix multiply.
constexpr int64_t kGemvMaxRows = 8;

// How the AVX512-BF16 kernel walks BF16 weights for a single activation row. Tiles: four weight rows
// side by side, four streams each prefetched one tile ahead (on Zen 3 a read of four streams ran
// 5-10 % faster than one). Rows: each weight row front to back, one stream per thread, which the
// hardware prefetcher of a Zen 5 EPYC follows far better: two 7B decoder layers and the output head
// took 32-36 ms against 44-46 ms (bench_gemv, 2 threads; 89-106 % of its streaming read against
// 67-78 %). Batches always read tiles: a row order re-reads every activation row once per weight
// row, and 4 rows took 67-75 ms that way against 54-60 ms in tiles (81 ms against 44 ms with both
// reading mapped rows from their cache line). Auto takes the order preferred_read_order measured on this
// CPU; other tiers and formats have one order. Both orders add each row's products in the same sequence,
// so they give the same bits: the choice, and the batch a row is in, never change a result.
enum class ReadOrder : uint8_t { Auto, Tiles, Rows };

const char* read_order_name(ReadOrder order);

// The faster order on this CPU, measured once per process on a BF16 matrix larger than the
// last-level cache (tens of milliseconds; the model asks at load so decoding never waits for it).
// QWEN2AUDIO_READ_ORDER=tiles|rows overrides the measurement.
ReadOrder preferred_read_order();

struct GemvOptions {
  // BF16 weights meet activations rounded to BF16, the contract of Gemm's BF16 path (and what
  // AVX512-BF16's dot product instruction computes), so decode and prefill agree. Off keeps them
  // float32 (then the AVX512-BF16 tier falls back to the AVX-512 kernels). Quantized and F32
  // weights always take float32 activations.
  bool round_bf16_inputs = true;
  // The kernel tier; capped at what the CPU supports.
  Isa isa = best_isa();
  // Software prefetch distance in bytes ahead of each weight row stream; 0 turns it off, -1 takes
  // the tier's default (default_prefetch_distance).
  int64_t prefetch_distance = -1;
  ReadOrder read_order = ReadOrder::Auto;
};

// Chosen with bench/bench_gemv.cpp (bench/README.md): every tier prefetches the same place of the
// weight rows its next column tile will read (4 rows further). On Zen 3 (AVX2) that kept the
// prefetchers ahead of rows as short as int4's 2 KiB where a fixed 1 KiB did not; on a Zen 5 EPYC
// (AVX-512, 2 threads) the BF16 tier read 4096 x 11008 rows at 44 GB/s with it, 35 GB/s with a fixed
// 32 KiB and 24-38 GB/s with 1 KiB or half a tile (the 4096-long rows the same 46-48 GB/s).
// Rows order prefetches nothing by default: on the Zen 5 EPYC distances of 1-4 KiB read no faster
// than the hardware prefetcher alone and 16-32 KiB slower.
int64_t default_prefetch_distance(Isa isa, WeightFormat format, int64_t ld, ReadOrder order = ReadOrder::Tiles);

// Throws InvalidArgument on inconsistent arguments. Runs on the calling thread's OpenMP thread
// count, splitting n; allocates nothing once the calling thread has seen a call of this m * k.
void gemv(const GemvArgs& args, const GemvOptions& options = {});

// The tier gemv would run for these options on this CPU.
Isa gemv_isa(const GemvOptions& options, WeightFormat format);

// Weight-only quantization of rows [0, n) of a float32/BF16/F16 matrix `source` (row stride
// ld_source elements): writes codes into `codes` (row stride weight_row_bytes(format, k) bytes) and
// scales into `scales` (row stride scale_groups(k, group_size)). Symmetric, round to nearest even:
//   Int8: scale = max|w| / 127.
//   Int4: scale = -m / 8 for the group's value m of largest magnitude, so m itself is code 0 and
//         the 16 codes span [-8, 7] steps (one level more than a +-7 grid; the largest value of the
//         opposite sign clamps to 7).
// Groups of zeros get scale 0. Parallel over rows.
void quantize_rows(const void* source, DType source_dtype, int64_t ld_source, int64_t n, int64_t k, WeightFormat format,
                   int64_t group_size, uint8_t* codes, float* scales);

// The float32 (or BF16, rounded to nearest even) values of rows [row_begin, row_end) of `w`, row
// stride ld_out elements: what a matrix multiply takes for the prefill of a quantized layer.
// Single-threaded: callers parallelise over row blocks.
void dequantize_rows(const WeightMatrix& w, int64_t k, int64_t row_begin, int64_t row_end, float* out, int64_t ld_out);
void dequantize_rows_bf16(const WeightMatrix& w, int64_t k, int64_t row_begin, int64_t row_end, uint16_t* out,
                          int64_t ld_out);

}  // namespace qwen2audio::kernels
