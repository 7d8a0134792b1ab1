#include "kernels/cpu/quantized_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/cpu/quantized_gemm_internal.h"
#include "runtime/errors.h"

namespace qwen2audio::kernels {
namespace {

using quantized_gemm_detail::kPanel;
using quantized_gemm_detail::Problem;

// A lane adds four products of at most 255 * 128 per step of four elements, so a group of up to
// this many elements sums exactly in int32.
constexpr int64_t kLongestExactGroup = 65536;
// Panels per OpenMP task: 128 output columns, so a 4096-wide projection still splits into 32 tasks.
constexpr int64_t kPanelsPerTask = 8;
// Rows from which the AMX kernel runs: below one tile's 16 rows a tile multiply does part of its work
// for nothing.
constexpr int64_t kAmxRows = 16;

thread_local Buffer<int8_t> tls_levels;
thread_local Buffer<float> tls_scales;
thread_local Buffer<int32_t> tls_level_sums;
thread_local Buffer<uint8_t> tls_amx_levels;

void check_layout(const WeightMatrix& w, int64_t k, const char* who) {
  if (!is_quantized(w.format))
    throw InvalidArgument(std::string(who) + " takes int8 or int4 weights, got " + weight_format_name(w.format));
  if (k % 32 != 0) throw InvalidArgument(std::string(who) + ": k must be a multiple of 32");
  if (w.group_size <= 0 || w.group_size % 32 != 0 || w.scales == nullptr)
    throw InvalidArgument(std::string(who) + ": weights need scales per group of a positive multiple of 32 elements");
  if (std::min(k, w.group_size) > kLongestExactGroup)
    throw InvalidArgument(std::string(who) + ": weight groups longer than " + std::to_string(kLongestExactGroup) +
                          " elements are not supported");
}

// Code (the level, for int4 c - 8) of row `row`, element i, of a Rows-layout matrix.
int rows_code(const WeightMatrix& w, int64_t row, int64_t i) {
  if (w.format == WeightFormat::Int8) return static_cast<const int8_t*>(w.data)[row * w.ld + i];
  const uint8_t byte = static_cast<const uint8_t*>(w.data)[row * (w.ld / 2) + i / 32 * 16 + i % 16];
  return (i % 32 < 16 ? byte & 15 : byte >> 4) - 8;
}

// Byte offset, within a panel, of the step holding element i, and the shift of its nibble (int4).
int64_t panel_offset(WeightFormat format, int64_t column, int64_t i, int* shift) {
  if (format == WeightFormat::Int8) {
    *shift = 0;
    return (i / 4) * 64 + 4 * column + i % 4;
  }
  *shift = (i % 8) < 4 ? 0 : 4;
  return (i / 8) * 64 + 4 * column + i % 4;
}

// Level of row n, element i, of a panel matrix.
int panel_level(const WeightMatrix& w, int64_t k, int64_t n, int64_t i) {
  const auto* panel = static_cast<const uint8_t*>(w.data) + (n / kPanel) * panel_bytes(w.format, k);
  int shift = 0;
  const uint8_t byte = panel[panel_offset(w.format, n % kPanel, i, &shift)];
  if (w.format == WeightFormat::Int8) return static_cast<int8_t>(byte);
  return ((byte >> shift) & 15) - 8;
}

void quantize_activations_scalar(const float* x, int64_t ldx, const Problem& p, int8_t* levels, float* scales,
                                 int32_t* level_sums) {
  for (int64_t row = 0; row < p.m; ++row) {
    for (int64_t group = 0; group < p.groups; ++group) {
      const int64_t start = group * p.group_size, end = std::min(p.k, start + p.group_size);
      float peak = 0.0f;
      for (int64_t i = start; i < end; ++i) peak = std::max(peak, std::abs(x[row * ldx + i]));
      const float inverse = peak > 0.0f ? 127.0f / peak : 0.0f;
      int32_t sum = 0;
      for (int64_t i = start; i < end; ++i) {
        const int level = static_cast<int>(std::clamp(std::nearbyint(x[row * ldx + i] * inverse), -127.0f, 127.0f));
        levels[row * p.k + i] = static_cast<int8_t>(level);
        sum += level;
      }
      scales[row * p.groups + group] = peak / 127.0f;
      level_sums[row * p.groups + group] = sum;
    }
  }
}

// The same sums as the vector kernel, element by element: for tiers without VNNI (tests, capped runs).
void run_scalar(const Problem& p, int64_t panel_begin, int64_t panel_end) {
  for (int64_t row = 0; row < p.m; ++row) {
    for (int64_t column = panel_begin * kPanel; column < std::min(p.n, panel_end * kPanel); ++column) {
      float total = 0.0f;
      for (int64_t group = 0; group < p.groups; ++group) {
        const int64_t start = group * p.group_size, end = std::min(p.k, start + p.group_size);
        int32_t sum = 0;
        for (int64_t i = start; i < end; ++i) sum += p.levels[row * p.k + i] * panel_level(p.w, p.k, column, i);
        const float scale = p.w.scales[((column / kPanel) * p.groups + group) * kPanel + column % kPanel];
        total += static_cast<float>(sum) * (p.x_scales[row * p.groups + group] * scale);
      }
      p.store(row, column, total);
    }
  }
}

}  // namespace

bool panels_supported(Isa isa) { return isa >= Isa::Avx2 && isa_supported(Isa::Avx2); }

size_t PackedPanels::bytes() const {
  return codes.capacity() + scales.capacity() * sizeof(float) + code_sums.capacity() * sizeof(int32_t);
}

PackedPanels pack_panels(const WeightMatrix& rows, int64_t n, int64_t k) {
  check_layout(rows, k, "pack_panels");
  if (rows.layout != WeightLayout::Rows) throw InvalidArgument("pack_panels: the matrix is already in panels");
  if (n < 0 || rows.ld < k) throw InvalidArgument("pack_panels: bad shape");
  const int64_t panels = (n + kPanel - 1) / kPanel;
  const int64_t groups = scale_groups(k, rows.group_size);
  const int64_t bytes_per_panel = panel_bytes(rows.format, k);
  PackedPanels packed;
  uint8_t* codes = packed.codes.reserve(static_cast<size_t>(std::max<int64_t>(1, panels * bytes_per_panel)));
  float* scales = packed.scales.reserve(static_cast<size_t>(std::max<int64_t>(1, panels * groups * kPanel)));
  int32_t* sums = rows.format == WeightFormat::Int8
                      ? packed.code_sums.reserve(static_cast<size_t>(std::max<int64_t>(1, panels * groups * kPanel)))
                      : nullptr;
#pragma omp parallel for schedule(static)
  for (int64_t panel = 0; panel < panels; ++panel) {
    uint8_t* out = codes + panel * bytes_per_panel;
    std::memset(out, 0, static_cast<size_t>(bytes_per_panel));
    for (int64_t c = 0; c < kPanel; ++c) {
      const int64_t row = panel * kPanel + c;
      for (int64_t group = 0; group < groups; ++group) {
        const int64_t at = (panel * groups + group) * kPanel + c;
        scales[at] = row < n ? rows.scales[row * rows.scales_ld + group] : 0.0f;
        if (sums) sums[at] = 0;
      }
      if (row >= n) continue;  // padding rows: zero codes and zero scales, never stored
      for (int64_t i = 0; i < k; ++i) {
        const int level = rows_code(rows, row, i);
        int shift = 0;
        const int64_t offset = panel_offset(rows.format, c, i, &shift);
        if (rows.format == WeightFormat::Int8) {
          out[offset] = static_cast<uint8_t>(static_cast<int8_t>(level));
          sums[(panel * groups + i / rows.group_size) * kPanel + c] += level;
        } else {
          out[offset] |= static_cast<uint8_t>((level + 8) << shift);
        }
      }
    }
  }
  packed.view = WeightMatrix{rows.format, codes, k, scales, groups, rows.group_size, WeightLayout::Panels, sums};
  return packed;
}

void unpack_panels(const WeightMatrix& panels, int64_t n, int64_t k, uint8_t* codes, float* scales) {
  check_layout(panels, k, "unpack_panels");
  if (panels.layout != WeightLayout::Panels) throw InvalidArgument("unpack_panels: the matrix is not in panels");
  const int64_t groups = scale_groups(k, panels.group_size);
  const int64_t row_bytes = weight_row_bytes(panels.format, k);
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < n; ++row) {
    uint8_t* out = codes + row * row_bytes;
    if (panels.format == WeightFormat::Int4) std::memset(out, 0, static_cast<size_t>(row_bytes));
    for (int64_t i = 0; i < k; ++i) {
      const int level = panel_level(panels, k, row, i);
      if (panels.format == WeightFormat::Int8)
        out[i] = static_cast<uint8_t>(static_cast<int8_t>(level));
      else
        out[i / 32 * 16 + i % 16] |= static_cast<uint8_t>((level + 8) << (i % 32 < 16 ? 0 : 4));
    }
    for (int64_t group = 0; group < groups; ++group)
      scales[row * groups + group] = panels.scales[((row / kPanel) * groups + group) * kPanel + row % kPanel];
  }
}

void quantized_gemm(const GemvArgs& args, Isa isa) {
  if (args.m < 0 || args.n < 0 || args.k < 0) throw InvalidArgument("quantized_gemm: negative dimension");
  check_layout(args.w, args.k, "quantized_gemm");
  if (args.w.layout != WeightLayout::Panels)
    throw InvalidArgument("quantized_gemm reads weights in the panel layout (pack_panels)");
  if (args.w.format == WeightFormat::Int8 && args.w.code_sums == nullptr)
    throw InvalidArgument("quantized_gemm: int8 panels need their code sums");
  if (args.ldx < args.k || args.ldy < args.n) throw InvalidArgument("quantized_gemm: leading dimension too small");
  if (args.m == 0 || args.n == 0) return;
  Problem p;
  p.m = args.m;
  p.n = args.n;
  p.k = args.k;
  p.group_size = args.w.group_size;
  p.groups = scale_groups(args.k, args.w.group_size);
  p.w = args.w;
  p.bias = args.bias;
  p.y = args.y;
  p.ldy = args.ldy;
  p.accumulate = args.accumulate;
  float* scales = tls_scales.reserve(static_cast<size_t>(p.m * p.groups));
  p.x_scales = scales;
  // AMX for inputs of at least one tile's rows, AVX512-VNNI from the Avx512Vnni tier up, AVX-VNNI
  // with Avx2Vnni, vpmaddubsw with Avx2 and Avx512; the scalar sums otherwise (tests).
  enum class Kernels { Scalar, Avx2, AvxVnni, Vnni, Amx } kernels = Kernels::Scalar;
  isa = widest_isa_up_to(isa);
  if (isa == Isa::Amx && p.m >= kAmxRows && quantized_gemm_detail::amx_shape_supported(p))
    kernels = Kernels::Amx;
  else if (isa >= Isa::Avx512Vnni)
    kernels = Kernels::Vnni;
  else if (isa == Isa::Avx2Vnni)
    kernels = Kernels::AvxVnni;
  else if (isa >= Isa::Avx2)
    kernels = Kernels::Avx2;
  if (kernels == Kernels::Amx) {
    // Straight into the tile order: the row-major levels would be a second pass over m x k bytes.
    uint8_t* tiles = tls_amx_levels.reserve(static_cast<size_t>(quantized_gemm_detail::amx_levels_bytes(p)));
    quantized_gemm_detail::quantize_activations_amx(args.x, args.ldx, p, tiles, scales);
    p.amx_levels = tiles;
  } else {
    int8_t* levels = tls_levels.reserve(static_cast<size_t>(p.m * p.k));
    int32_t* sums = tls_level_sums.reserve(static_cast<size_t>(p.m * p.groups));
    if (kernels == Kernels::Vnni)
      quantized_gemm_detail::quantize_activations_avx512(args.x, args.ldx, p, levels, scales, sums);
    else if (kernels == Kernels::Avx2 || kernels == Kernels::AvxVnni)
      quantized_gemm_detail::quantize_activations_avx2(
          args.x, args.ldx, p, kernels == Kernels::AvxVnni && quantized_gemm_detail::vnni_offsets_levels(p), levels,
          scales, sums);
    else
      quantize_activations_scalar(args.x, args.ldx, p, levels, scales, sums);
    p.levels = levels;
    p.level_sums = sums;
  }
  const int64_t panels = p.panels();
  const int64_t tasks = (panels + kPanelsPerTask - 1) / kPanelsPerTask;
  // A call too small to pay for waking the thread team runs on the calling thread.
  const bool parallel = tasks > 1 && p.m * panels * p.panel_bytes() > (64 << 10);
#pragma omp parallel for schedule(dynamic) if (parallel)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t begin = task * kPanelsPerTask, end = std::min(panels, begin + kPanelsPerTask);
    if (kernels == Kernels::Amx)
      quantized_gemm_detail::run_amx(p, begin, end);
    else if (kernels == Kernels::Vnni)
      quantized_gemm_detail::run_avx512_vnni(p, begin, end);
    else if (kernels == Kernels::AvxVnni)
      quantized_gemm_detail::run_avx_vnni(p, begin, end);
    else if (kernels == Kernels::Avx2)
      quantized_gemm_detail::run_avx2(p, begin, end);
    else
      run_scalar(p, begin, end);
  }
}

}  // namespace qwen2audio::kernels
