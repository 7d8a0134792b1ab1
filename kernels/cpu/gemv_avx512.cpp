// gemv kernels for AVX-512 (16 float lanes), and BF16 weights through AVX512-BF16's dot product.
// Compiled for those targets whatever the build's -march, and only called after cpuid says the CPU
// has them.
#include <immintrin.h>

// GCC 12 flags the deliberately undefined pass-through operands inside its own AVX-512 intrinsics
// (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>

#include "kernels/cpu/gemv_internal.h"

// Clang ignores GCC's target pragma; its own attribute pragma gives every function here the same target.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq")
#endif

namespace qwen2audio::kernels::gemv_detail {
namespace {

// Four weight-row streams per tile; up to four activation rows share each weight load (32 vector
// registers hold the 16 accumulators).
constexpr int kColumns = kColumnTile;
constexpr int kRows = 4;

struct F32Weights {
  const float* base;
  int64_t ld;
  explicit F32Weights(const Problem& p) : base(static_cast<const float*>(p.w.data)), ld(p.w.ld) {}
  const char* address(int64_t row, int64_t i) const { return reinterpret_cast<const char*>(base + row * ld + i); }
  __m512 load16(int64_t row, int64_t i) const { return _mm512_loadu_ps(base + row * ld + i); }
  float at(int64_t row, int64_t i) const { return base[row * ld + i]; }
};

struct Bf16Weights {
  const uint16_t* base;
  int64_t ld;
  explicit Bf16Weights(const Problem& p) : base(static_cast<const uint16_t*>(p.w.data)), ld(p.w.ld) {}
  const char* address(int64_t row, int64_t i) const { return reinterpret_cast<const char*>(base + row * ld + i); }
  __m512 load16(int64_t row, int64_t i) const {
    const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(base + row * ld + i));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(packed), 16));
  }
  float at(int64_t row, int64_t i) const { return bf16_to_float(base[row * ld + i]); }
};

template <int R, int C, typename Weights>
void plain_tile(const Problem& p, const Weights& w, int64_t row0, int64_t column) {
  __m512 acc[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= p.k; i += 16) {
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      if (p.prefetch) _mm_prefetch(w.address(column + c, i) + p.prefetch, _MM_HINT_T0);
      const __m512 weights = w.load16(column + c, i);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r)
        acc[r][c] = _mm512_fmadd_ps(_mm512_loadu_ps(p.x + (row0 + r) * p.ldx + i), weights, acc[r][c]);
    }
  }
  for (int r = 0; r < R; ++r) {
    const float* x = p.x + (row0 + r) * p.ldx;
    for (int c = 0; c < C; ++c) {
      float sum = _mm512_reduce_add_ps(acc[r][c]);
      for (int64_t j = i; j < p.k; ++j) sum += x[j] * w.at(column + c, j);
      p.store(row0 + r, column + c, sum);
    }
  }
}

// Row passes of at most kRows; the remainder takes the one smaller tile it needs.
template <int C, typename Weights>
void column_tile(const Problem& p, const Weights& w, int64_t column) {
  int64_t row = 0;
  auto tile = [&]<int R>() {
    plain_tile<R, C>(p, w, row, column);
    row += R;
  };
  while (p.m - row >= kRows) tile.template operator()<kRows>();
  switch (p.m - row) {
    case 3:
      tile.template operator()<3>();
      break;
    case 2:
      tile.template operator()<2>();
      break;
    case 1:
      tile.template operator()<1>();
      break;
    default:
      break;
  }
}

template <typename Weights>
void range(const Problem& p, int64_t begin, int64_t end) {
  const Weights w(p);
  int64_t column = begin;
  for (; column + kColumns <= end; column += kColumns) column_tile<kColumns, Weights>(p, w, column);
  for (; column < end; ++column) column_tile<1, Weights>(p, w, column);
}

namespace without_vnni {
#include "kernels/cpu/gemv_int4_tile.h"
}  // namespace without_vnni

}  // namespace
}  // namespace qwen2audio::kernels::gemv_detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

// ------------------------------------------- BF16 weights through AVX512-BF16, int4 through VNNI

// Clang ignores GCC's target pragma; its own attribute pragma gives every function here the same target.
#if defined(__clang__)
#pragma clang attribute push(                                                                          \
    __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni"))), \
    apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni")
#endif

#include "kernels/cpu/dot_instructions.h"  // in the target region: its functions take 512-bit vectors

namespace qwen2audio::kernels::gemv_detail {
namespace {

// The lanes of the 32-element step at i that lie inside a BF16 weight row read from `shift` elements
// before its start (end = k + shift): all of them except in the first and last steps. bf16_dot_tile and
// bf16_dot_row share it, as they must share every step to give the same bits.
__mmask32 row_lanes(int64_t i, int64_t shift, int64_t end) {
  uint64_t lanes = ~uint64_t{0};
  if (i < shift) lanes &= ~uint64_t{0} << (shift - i);
  if (i + 32 > end) lanes &= (uint64_t{1} << (end - i)) - 1;
  return static_cast<__mmask32>(lanes);
}

// acc += x . w over pairs of BF16 values, C weight rows side by side against R activation rows. Like
// bf16_dot_row, each weight row is read from the cache-line boundary at or before its start
// (Problem::row_shift, the same for every row when the row stride is whole lines), so each 64-byte
// load touches one line instead of two; x_bf16 holds as many zeros before x and is zero-padded to
// whole steps, so only the weights need masks, and only in the first and last steps (the lanes
// outside a row hold its neighbours or the file's header, which may not even be numbers). A masked
// load reads only lines that hold part of the row, so it never touches a page the row is not on;
// the unmasked steps lie wholly inside the row.
template <int R, int C>
void bf16_dot_tile(const Problem& p, int64_t row0, int64_t column) {
  const int64_t shift = p.row_shift;
  const int64_t end = p.k + shift;
  const uint16_t* base = static_cast<const uint16_t*>(p.w.data) + column * p.w.ld - shift;
  __m512 acc[R][C];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) acc[r][c] = _mm512_setzero_ps();
  const auto step = [&](int64_t i, __mmask32 mask) __attribute__((always_inline)) {
    __m512bh x[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r)
      x[r] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(p.x_bf16 + (row0 + r) * p.ldx_bf16 + i));
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) {
      const uint16_t* row = base + c * p.w.ld + i;
      if (p.prefetch) _mm_prefetch(reinterpret_cast<const char*>(row) + p.prefetch, _MM_HINT_T0);
      const __m512bh weights = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(mask, row));
      // The intrinsic here, with every loop over the accumulators unrolled: GCC 12 then keeps all
      // R x C of them in registers, where the written-out instruction (dot_instructions.h) had it
      // copy them and, for 4 x 4, spill (and a loop it did not unroll kept them on the stack).
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], x[r], weights);
    }
  };
  int64_t i = 0;
  if (shift > 0) {
    step(0, row_lanes(0, shift, end));
    i = 32;
  }
  for (; i + 32 <= end; i += 32) step(i, ~__mmask32{0});
  if (i < end) step(i, row_lanes(i, shift, end));
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) p.store(row0 + r, column + c, _mm512_reduce_add_ps(acc[r][c]));
}

// ReadOrder::Rows (gemv.h) for one activation row: a weight row front to back from the cache-line
// boundary at or before its start (Problem::row_shift); only the first and last steps take masks
// (the lanes outside the row hold the neighbouring row or the file's header, which may not even be
// numbers). One sum along k, step after step, as bf16_dot_tile keeps for each of its rows: the two
// orders then give the same bits, so the order measured at load and the batch a row decodes in never
// change a result. (Four interleaved sums gave different roundings, and the measurement picks either
// order from run to run where they are within noise of each other.) One chain of dot products moves
// 64 bytes per instruction latency, 32-35 GB/s a core on a Zen 5 EPYC: more than a core read from
// memory in our runs there; where memory is faster, or the chain slower (a Sapphire Rapids-class
// Xeon: 87 % of a 26 GB/s 2-thread read, the tiles 118 %), the load-time measurement picks the tiles,
// whose columns are separate chains.
void bf16_dot_row(const Problem& p, int64_t column) {
  const int64_t shift = p.row_shift;
  const uint16_t* row = static_cast<const uint16_t*>(p.w.data) + column * p.w.ld - shift;
  const int64_t end = p.k + shift;
  __m512 acc = _mm512_setzero_ps();
  const auto x = [&](int64_t i) { return reinterpret_cast<__m512bh>(_mm512_loadu_si512(p.x_bf16 + i)); };
  const auto w = [&](int64_t i) { return reinterpret_cast<__m512bh>(_mm512_loadu_si512(row + i)); };
  const auto masked_w = [&](int64_t i) {
    return reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi16(row_lanes(i, shift, end), row + i));
  };
  int64_t i = 0;
  if (shift > 0) {
    dpbf16(acc, x(0), masked_w(0));
    i = 32;
  }
  for (; i + 128 <= end; i += 128) {
    if (p.prefetch) _mm_prefetch(reinterpret_cast<const char*>(row + i) + p.prefetch, _MM_HINT_T0);
    dpbf16(acc, x(i), w(i));
    dpbf16(acc, x(i + 32), w(i + 32));
    dpbf16(acc, x(i + 64), w(i + 64));
    dpbf16(acc, x(i + 96), w(i + 96));
  }
  for (; i + 32 <= end; i += 32) dpbf16(acc, x(i), w(i));
  if (i < end) dpbf16(acc, x(i), masked_w(i));
  p.store(0, column, _mm512_reduce_add_ps(acc));
}

template <int C>
void bf16_dot_columns(const Problem& p, int64_t column) {
  int64_t row = 0;
  for (; row + kRows <= p.m; row += kRows) bf16_dot_tile<kRows, C>(p, row, column);
  switch (p.m - row) {
    case 3:
      bf16_dot_tile<3, C>(p, row, column);
      break;
    case 2:
      bf16_dot_tile<2, C>(p, row, column);
      break;
    case 1:
      bf16_dot_tile<1, C>(p, row, column);
      break;
    default:
      break;
  }
}

void bf16_dot_range(const Problem& p, int64_t begin, int64_t end) {
  int64_t column = begin;
  if (p.row_by_row) {  // one activation row (gemv.cpp sets it only then)
    for (; column < end; ++column) bf16_dot_row(p, column);
    return;
  }
  for (; column + kColumns <= end; column += kColumns) bf16_dot_columns<kColumns>(p, column);
  for (; column < end; ++column) bf16_dot_columns<1>(p, column);
}

namespace with_vnni {
#include "kernels/cpu/gemv_int4_tile.h"

// int4 on 512-bit VNNI: a 64-element chunk is 32 bytes of codes; [bytes | bytes >> 4] & 15 puts, per
// 128-bit lane, the elements 0-15, 32-47, 16-31 and 48-63, the order in which gemv.cpp stored the
// chunk's activations (Problem::x_q_interleaved), so one vpdpbusd takes 64 products. A group's
// trailing 32-element block (k or group_size not a multiple of 64) goes through 256 bits.
template <int R, int C>
void int4_tile_512(const Problem& p, int64_t row0, int64_t column) {
  const auto* base = static_cast<const uint8_t*>(p.w.data);
  const int64_t row_bytes = p.w.ld / 2;
  const __m512i mask = _mm512_set1_epi8(15);
  __m512 total[R][C];
  float correction[R][C];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) {
      total[r][c] = _mm512_setzero_ps();
      correction[r][c] = 0.0f;
    }
  const int64_t group_size = p.w.group_size;
  for (int64_t start = 0, group = 0; start < p.k; start += group_size, ++group) {
    const int64_t end = std::min(p.k, start + group_size);
    __m512i sum[R][C];
    for (int r = 0; r < R; ++r)
      for (int c = 0; c < C; ++c) sum[r][c] = _mm512_setzero_si512();
    int64_t i = start;
    for (; i + 64 <= end; i += 64) {
      __m512i activations[R];
      for (int r = 0; r < R; ++r) activations[r] = _mm512_loadu_si512(p.x_q + (row0 + r) * p.ldx_q + i);
#pragma GCC unroll 4
      for (int c = 0; c < C; ++c) {
        const uint8_t* bytes = base + (column + c) * row_bytes + (i >> 1);
        if (p.prefetch) _mm_prefetch(reinterpret_cast<const char*>(bytes) + p.prefetch, _MM_HINT_T0);
        const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes));
        const __m512i both =
            _mm512_and_si512(_mm512_inserti64x4(_mm512_castsi256_si512(packed), _mm256_srli_epi16(packed, 4), 1), mask);
#pragma GCC unroll 4
        for (int r = 0; r < R; ++r) dpbusd(sum[r][c], both, activations[r]);
      }
    }
    if (i < end) {
      __m256i activations[R];
      for (int r = 0; r < R; ++r)
        activations[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.x_q + (row0 + r) * p.ldx_q + i));
      for (int c = 0; c < C; ++c) {
        const __m256i codes = int4_block_codes(base + (column + c) * row_bytes + (i >> 1));
        for (int r = 0; r < R; ++r) {
          const __m256i tail = _mm256_dpbusd_epi32(_mm256_setzero_si256(), codes, activations[r]);
          sum[r][c] = _mm512_add_epi32(sum[r][c], _mm512_zextsi256_si512(tail));
        }
      }
    }
    for (int r = 0; r < R; ++r) {
      const float offset = int4_group_offset(p, row0 + r, group);
      for (int c = 0; c < C; ++c) {
        const float scale = int4_group_scale(p, row0 + r, column + c, group);
        total[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[r][c]), _mm512_set1_ps(scale), total[r][c]);
        correction[r][c] += scale * offset;
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) p.store(row0 + r, column + c, _mm512_reduce_add_ps(total[r][c]) - correction[r][c]);
}

void int4_range_512(const Problem& p, int64_t begin, int64_t end) {
  int64_t column = begin;
  auto rows = [&]<int Columns>() {
    int64_t row = 0;
    // Two rows at most: each row-column pair holds an integer and a float accumulator.
    for (; row + 2 <= p.m; row += 2) int4_tile_512<2, Columns>(p, row, column);
    for (; row < p.m; ++row) int4_tile_512<1, Columns>(p, row, column);
  };
  for (; column + kColumns <= end; column += kColumns) rows.template operator()<kColumns>();
  for (; column < end; ++column) rows.template operator()<1>();
}

}  // namespace with_vnni

}  // namespace
}  // namespace qwen2audio::kernels::gemv_detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

namespace qwen2audio::kernels::gemv_detail {

RangeKernel avx512_kernel(WeightFormat format, bool vnni_bf16) {
  switch (format) {
    case WeightFormat::F32:
      return range<F32Weights>;
    case WeightFormat::BF16:
      return vnni_bf16 ? bf16_dot_range : range<Bf16Weights>;
    case WeightFormat::Int8:
      // gemv_isa sends int8 rows to the AVX2 tier: a 512-bit vpdpwssd kernel measured slower than its
      // 256-bit one on a Zen 5 EPYC (69 % against 83 % of the bound; VNNI CPUs run int8 in panels,
      // quantized_gemm.h); this keeps a direct call right.
      return avx2_kernel(format);
    case WeightFormat::Int4:
      // Several activation rows share each decoded block (32 vector registers).
      return vnni_bf16 ? with_vnni::int4_range_512 : without_vnni::int4_range<2>;
  }
  return nullptr;
}

}  // namespace qwen2audio::kernels::gemv_detail
