#include "kernels/cpu/gemv.h"

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/cpu/gemv_internal.h"
#include "kernels/cpu/quantized_gemm.h"
#include "runtime/buffer.h"
#include "runtime/errors.h"

namespace qwen2audio::kernels {
namespace {

using gemv_detail::Problem;
using gemv_detail::RangeKernel;

// Output columns per OpenMP task: a multiple of every kernel's column tile (4), small enough that
// the static schedule splits even a 64-column projection over threads.
constexpr int64_t kColumnsPerTask = 16;

// Scratch of the calling thread: activations rounded to BF16, or converted to BF16 bits.
thread_local Buffer<float> tls_rounded_inputs;
thread_local Buffer<uint16_t> tls_bf16_inputs;
thread_local Buffer<int8_t> tls_quantized_inputs;
thread_local Buffer<float> tls_input_scales;
thread_local Buffer<int32_t> tls_input_level_sums;

thread_local Buffer<int16_t> tls_wide_inputs;

// The integer activations of the quantized formats (gemv.h): levels per weight group (int8 for int4
// weights, int16 for int8 weights), the group scales and, when level_sums is set, the sums of the
// levels. One scalar implementation, so every tier sees the same levels; `interleave` stores whole
// 64-element chunks in the order the vector int4 kernels unpack codes (gemv_internal.h). It runs on
// the calling thread before the parallel product, so it stays a few instructions per element.
template <typename Level>
void quantize_activations(const float* x, int64_t ldx, int64_t m, int64_t k, int64_t group_size, bool interleave,
                          Level* levels, float* scales, int32_t* level_sums) {
  constexpr float kTop = std::is_same_v<Level, int8_t> ? 127.0f : 32767.0f;
  const int64_t groups = scale_groups(k, group_size);
  for (int64_t row = 0; row < m; ++row) {
    const float* values = x + row * ldx;
    Level* out = levels + row * k;
    for (int64_t group = 0; group < groups; ++group) {
      const int64_t start = group * group_size;
      const int64_t length = std::min(group_size, k - start);
      const float* v = values + start;
      float largest[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // independent maxima: no serial dependency
      for (int64_t i = 0; i < length; i += 4)
        for (int j = 0; j < 4; ++j) largest[j] = std::max(largest[j], std::abs(v[i + j]));
      const float peak = std::max(std::max(largest[0], largest[1]), std::max(largest[2], largest[3]));
      const float inverse = peak > 0.0f ? kTop / peak : 0.0f;
      Level* group_out = out + start;
      int32_t sum = 0;
      for (int64_t i = 0; i < length; ++i) {
        const int level = static_cast<int>(std::clamp(std::nearbyint(v[i] * inverse), -kTop, kTop));
        group_out[i] = static_cast<Level>(level);
        sum += level;
      }
      if (interleave) {
        // Whole 64-element chunks: 16-element quarters 0, 2, 1, 3 (elements 0-15, 32-47, 16-31, 48-63).
        for (int64_t chunk = 0; chunk + 64 <= length; chunk += 64) {
          Level quarter[16];
          std::memcpy(quarter, group_out + chunk + 16, sizeof quarter);
          std::memcpy(group_out + chunk + 16, group_out + chunk + 32, sizeof quarter);
          std::memcpy(group_out + chunk + 32, quarter, sizeof quarter);
        }
      }
      scales[row * groups + group] = peak / kTop;
      if (level_sums) level_sums[row * groups + group] = sum;
    }
  }
}

float round_through_bf16(float value) { return bf16_to_float(float_to_bf16(value)); }

float source_value(const void* source, DType dtype, int64_t index) {
  switch (dtype) {
    case DType::F32:
      return static_cast<const float*>(source)[index];
    case DType::BF16:
      return bf16_to_float(static_cast<const uint16_t*>(source)[index]);
    case DType::F16:
      return f16_to_float(static_cast<const uint16_t*>(source)[index]);
    default:
      throw InvalidArgument("quantize_rows: source must be F32, BF16 or F16, got " + std::string(dtype_name(dtype)));
  }
}

void check_quantized_layout(WeightFormat format, int64_t k, int64_t group_size, const char* what) {
  if (!is_quantized(format)) return;
  if (group_size <= 0 || group_size % 32 != 0)
    throw InvalidArgument(std::string(what) + ": group_size must be a positive multiple of 32, got " +
                          std::to_string(group_size));
  if (k % 32 != 0)
    throw InvalidArgument(std::string(what) + ": quantized rows need k to be a multiple of 32, got " +
                          std::to_string(k));
}

void check_args(const GemvArgs& args) {
  if (args.m < 0 || args.n < 0 || args.k < 0) throw InvalidArgument("gemv: negative dimension");
  if (args.ldx < args.k || args.ldy < args.n || args.w.ld < args.k)
    throw InvalidArgument("gemv: leading dimension too small");
  if (args.m > 0 && args.n > 0 && (args.x == nullptr || args.y == nullptr || args.w.data == nullptr))
    throw InvalidArgument("gemv: null operand");
  check_quantized_layout(args.w.format, args.k, args.w.group_size, "gemv");
  if (args.w.layout == WeightLayout::Panels && !is_quantized(args.w.format))
    throw InvalidArgument("gemv: only int8 and int4 weights come in panels");
  if (is_quantized(args.w.format) && args.w.layout == WeightLayout::Rows) {
    if (args.w.scales == nullptr) throw InvalidArgument("gemv: quantized weights without scales");
    if (args.w.scales_ld < scale_groups(args.k, args.w.group_size))
      throw InvalidArgument("gemv: scale row stride too small");
    if (args.w.format == WeightFormat::Int4 && args.w.ld % 2 != 0)
      throw InvalidArgument("gemv: int4 rows must start on whole bytes (even ld)");
  }
}

// ---------------------------------------------------------------------------------- scalar tier

template <WeightFormat F>
float scalar_dot(const Problem& p, const float* x, int64_t column) {
  const WeightMatrix& w = p.w;
  if constexpr (F == WeightFormat::F32) {
    const float* row = static_cast<const float*>(w.data) + column * w.ld;
    float sum = 0.0f;
    for (int64_t i = 0; i < p.k; ++i) sum += x[i] * row[i];
    return sum;
  } else if constexpr (F == WeightFormat::BF16) {
    const uint16_t* row = static_cast<const uint16_t*>(w.data) + column * w.ld;
    float sum = 0.0f;
    for (int64_t i = 0; i < p.k; ++i) sum += x[i] * bf16_to_float(row[i]);
    return sum;
  }
}

// Int8 on the int16 activation levels of `row`: an exact integer sum per group, then its scales, as
// the vector tier computes.
float scalar_int8_dot(const Problem& p, int64_t row, int64_t column) {
  const WeightMatrix& w = p.w;
  const int8_t* codes = static_cast<const int8_t*>(w.data) + column * w.ld;
  const float* scales = w.scales + column * w.scales_ld;
  const int16_t* levels = p.x_q16 + row * p.ldx_q;
  float total = 0.0f;
  for (int64_t start = 0, group = 0; start < p.k; start += w.group_size, ++group) {
    const int64_t end = std::min(p.k, start + w.group_size);
    int64_t dot = 0;
    for (int64_t i = start; i < end; ++i) dot += int64_t{codes[i]} * levels[i];
    total += scales[group] * p.x_scales[row * p.ldx_groups + group] * static_cast<float>(dot);
  }
  return total;
}

// Int4 on the quantized activations of `row`: an exact integer sum per group, then its scales, as
// the vector tiers compute.
float scalar_int4_dot(const Problem& p, int64_t row, int64_t column) {
  const WeightMatrix& w = p.w;
  const uint8_t* codes = static_cast<const uint8_t*>(w.data) + column * (w.ld / 2);
  const float* scales = w.scales + column * w.scales_ld;
  const int8_t* levels = p.x_q + row * p.ldx_q;  // natural order: the scalar tier never interleaves
  float total = 0.0f;
  for (int64_t start = 0, group = 0; start < p.k; start += w.group_size, ++group) {
    const int64_t end = std::min(p.k, start + w.group_size);
    int32_t dot = 0;
    for (int64_t block = start; block < end; block += 32) {
      const uint8_t* bytes = codes + block / 2;
      for (int j = 0; j < 16; ++j)
        dot += (bytes[j] & 15) * levels[block + j] + (bytes[j] >> 4) * levels[block + j + 16];
    }
    const int32_t offset = 8 * p.x_level_sums[row * p.ldx_groups + group];
    total += scales[group] * p.x_scales[row * p.ldx_groups + group] * static_cast<float>(dot - offset);
  }
  return total;
}

template <WeightFormat F>
void scalar_range(const Problem& p, int64_t begin, int64_t end) {
  for (int64_t column = begin; column < end; ++column) {
    for (int64_t row = 0; row < p.m; ++row) {
      if constexpr (F == WeightFormat::Int4)
        p.store(row, column, scalar_int4_dot(p, row, column));
      else if constexpr (F == WeightFormat::Int8)
        p.store(row, column, scalar_int8_dot(p, row, column));
      else
        p.store(row, column, scalar_dot<F>(p, p.x + row * p.ldx, column));
    }
  }
}

RangeKernel select_kernel(Isa isa, WeightFormat format) {
  RangeKernel kernel = nullptr;
  if (isa == Isa::Avx512Bf16 || isa == Isa::Avx512)
    kernel = gemv_detail::avx512_kernel(format, isa == Isa::Avx512Bf16);
  else if (isa == Isa::Avx2)
    kernel = gemv_detail::avx2_kernel(format);
  return kernel ? kernel : gemv_detail::scalar_kernel(format);
}

}  // namespace

namespace gemv_detail {
RangeKernel scalar_kernel(WeightFormat format) {
  switch (format) {
    case WeightFormat::F32:
      return scalar_range<WeightFormat::F32>;
    case WeightFormat::BF16:
      return scalar_range<WeightFormat::BF16>;
    case WeightFormat::Int8:
      return scalar_range<WeightFormat::Int8>;
    case WeightFormat::Int4:
      return scalar_range<WeightFormat::Int4>;
  }
  return nullptr;
}
}  // namespace gemv_detail

const char* weight_format_name(WeightFormat format) {
  switch (format) {
    case WeightFormat::F32:
      return "float32";
    case WeightFormat::BF16:
      return "bfloat16";
    case WeightFormat::Int8:
      return "int8";
    case WeightFormat::Int4:
      return "int4";
  }
  return "unknown";
}

int64_t weight_row_bytes(WeightFormat format, int64_t k) {
  switch (format) {
    case WeightFormat::F32:
      return k * 4;
    case WeightFormat::BF16:
      return k * 2;
    case WeightFormat::Int8:
      return k;
    case WeightFormat::Int4:
      return (k + 1) / 2;
  }
  return 0;
}

int64_t scale_groups(int64_t k, int64_t group_size) { return group_size > 0 ? (k + group_size - 1) / group_size : 0; }

Isa gemv_isa(const GemvOptions& options, WeightFormat format) {
  Isa isa = widest_isa_up_to(std::min(options.isa, best_isa()));
  // AMX serves prefill-sized products of panels (quantized_gemm.h); a row at a time it has nothing to add.
  if (isa == Isa::Amx) isa = Isa::Avx512Bf16;
  // VNNI without BF16 serves the integer panels; these kernels run the tier below.
  if (isa == Isa::Avx2Vnni) isa = Isa::Avx2;
  if (isa == Isa::Avx512Vnni) isa = Isa::Avx512;
  // The BF16 tier adds the BF16 dot product and VNNI (int4); every other case runs the AVX-512
  // kernels, except int8 rows, whose 256-bit integer kernel measured faster than 512-bit ones (with
  // vpdpwssd too; VNNI CPUs run int8 in panels, quantized_gemm.h).
  const bool uses_tier = (format == WeightFormat::BF16 && options.round_bf16_inputs) || format == WeightFormat::Int4;
  if (isa == Isa::Avx512Bf16 && !uses_tier) isa = Isa::Avx512;
  if (format == WeightFormat::Int8 && isa > Isa::Avx2) isa = Isa::Avx2;
  return isa;
}

int64_t default_prefetch_distance(Isa /*isa*/, WeightFormat format, int64_t ld, ReadOrder order) {
  return order == ReadOrder::Rows ? 0 : gemv_detail::kColumnTile * weight_row_bytes(format, ld);
}

const char* read_order_name(ReadOrder order) {
  switch (order) {
    case ReadOrder::Auto:
      return "auto";
    case ReadOrder::Tiles:
      return "tiles";
    case ReadOrder::Rows:
      return "rows";
  }
  return "?";
}

namespace {

ReadOrder measure_read_order() {
  // 64 MiB of BF16 weights in 4096-element rows (the decoder's width): beyond the last-level cache of
  // the CPUs we run on, and ~1 ms per pass at their bandwidth. The orders alternate so a drift of
  // the machine's bandwidth hits both; each keeps its best pass.
  constexpr int64_t kWidth = 4096, kRows = 8192;
  constexpr int kPasses = 5;
  Buffer<uint16_t> weights(static_cast<size_t>(kRows * kWidth));
  uint16_t* data = weights.data();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < kRows * kWidth; ++i) data[i] = float_to_bf16(1e-3f * static_cast<float>(i % 97));
  std::vector<float> x(kWidth, 0.5f), y(kRows);
  const GemvArgs args{1,       kRows,    kWidth, x.data(), kWidth, WeightMatrix{WeightFormat::BF16, data, kWidth},
                      nullptr, y.data(), kRows,  false};
  double best[2] = {1e30, 1e30};
  for (int pass = 0; pass <= kPasses; ++pass) {
    for (int order = 0; order < 2; ++order) {
      GemvOptions options;
      options.isa = Isa::Avx512Bf16;
      options.read_order = order == 0 ? ReadOrder::Tiles : ReadOrder::Rows;
      const auto start = std::chrono::steady_clock::now();
      gemv(args, options);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (pass > 0) best[order] = std::min(best[order], seconds);  // pass 0 warms pages and threads
    }
  }
  return best[1] < best[0] ? ReadOrder::Rows : ReadOrder::Tiles;
}

}  // namespace

ReadOrder preferred_read_order() {
  if (const char* forced = std::getenv("QWEN2AUDIO_READ_ORDER"); forced != nullptr && *forced != '\0') {
    const std::string name(forced);
    if (name == "tiles") return ReadOrder::Tiles;
    if (name == "rows") return ReadOrder::Rows;
    throw InvalidArgument("QWEN2AUDIO_READ_ORDER must be tiles or rows, got '" + name + "'");
  }
  if (!isa_supported(Isa::Avx512Bf16)) return ReadOrder::Tiles;  // the only kernel with a choice
  // A fact about the CPU, the same for every model in the process.
  static const ReadOrder measured = measure_read_order();
  return measured;
}

void gemv(const GemvArgs& args, const GemvOptions& options) {
  check_args(args);
  if (args.m == 0 || args.n == 0) return;
  if (args.w.layout == WeightLayout::Panels) {
    // Quantized panels have one product for every row count (quantized_gemm.h).
    const Isa isa = std::min(options.isa, best_isa());
    quantized_gemm(args, isa);
    return;
  }
  Problem problem;
  problem.m = args.m;
  problem.k = args.k;
  problem.x = args.x;
  problem.ldx = args.ldx;
  problem.w = args.w;
  problem.bias = args.bias;
  problem.y = args.y;
  problem.ldy = args.ldy;
  problem.accumulate = args.accumulate;
  const Isa isa = gemv_isa(options, args.w.format);
  ReadOrder order = ReadOrder::Tiles;
  if (args.m == 1 && args.w.format == WeightFormat::BF16 && isa == Isa::Avx512Bf16)
    order = options.read_order == ReadOrder::Auto ? preferred_read_order() : options.read_order;
  problem.row_by_row = order == ReadOrder::Rows;
  problem.prefetch = options.prefetch_distance < 0 ? default_prefetch_distance(isa, args.w.format, args.w.ld, order)
                                                   : options.prefetch_distance;
  if (args.w.format == WeightFormat::BF16 && options.round_bf16_inputs) {
    if (isa == Isa::Avx512Bf16) {
      // Weights used in place from a checkpoint start wherever the file put them (a safetensors
      // tensor sits 8 + header bytes into the file: 40 bytes past a cache line in the synthetic 7B
      // checkpoint), and a misaligned 64-byte load touches two lines. Every row shares its start's
      // offset when the row stride is whole lines, so both read orders read from the line boundary
      // before each row, and x is shifted by as many zeros to line up with it.
      const auto address = reinterpret_cast<uintptr_t>(args.w.data);
      if (address % 2 == 0 && (args.w.ld * 2) % 64 == 0) problem.row_shift = static_cast<int64_t>(address % 64 / 2);
      // Rows padded with zeros to whole 32-element steps, so the kernel loads x without masks.
      const int64_t shift = problem.row_shift;
      const int64_t ld = (args.k + shift + 31) / 32 * 32;
      uint16_t* converted = tls_bf16_inputs.reserve(static_cast<size_t>(args.m * ld));
      for (int64_t row = 0; row < args.m; ++row) {
        uint16_t* out = converted + row * ld;
        std::fill(out, out + shift, uint16_t{0});
        for (int64_t i = 0; i < args.k; ++i) out[shift + i] = float_to_bf16(args.x[row * args.ldx + i]);
        std::fill(out + shift + args.k, out + ld, uint16_t{0});
      }
      problem.x_bf16 = converted;
      problem.ldx_bf16 = ld;
    } else {
      float* rounded = tls_rounded_inputs.reserve(static_cast<size_t>(args.m * args.k));
      for (int64_t row = 0; row < args.m; ++row)
        for (int64_t i = 0; i < args.k; ++i) rounded[row * args.k + i] = round_through_bf16(args.x[row * args.ldx + i]);
      problem.x = rounded;
      problem.ldx = args.k;
    }
  }

  if (is_quantized(args.w.format)) {
    const int64_t groups = scale_groups(args.k, args.w.group_size);
    float* scales = tls_input_scales.reserve(static_cast<size_t>(args.m * groups));
    problem.x_scales = scales;
    problem.ldx_q = args.k;
    problem.ldx_groups = groups;
    if (args.w.format == WeightFormat::Int4) {
      int8_t* levels = tls_quantized_inputs.reserve(static_cast<size_t>(args.m * args.k));
      int32_t* level_sums = tls_input_level_sums.reserve(static_cast<size_t>(args.m * groups));
      problem.x_q = levels;
      problem.x_level_sums = level_sums;
      problem.x_q_interleaved = isa != Isa::Scalar;  // every vector tier reads 64-element chunks
      quantize_activations(args.x, args.ldx, args.m, args.k, args.w.group_size, problem.x_q_interleaved, levels, scales,
                           level_sums);
    } else {
      int16_t* levels = tls_wide_inputs.reserve(static_cast<size_t>(args.m * args.k));
      problem.x_q16 = levels;
      quantize_activations(args.x, args.ldx, args.m, args.k, args.w.group_size, false, levels, scales,
                           static_cast<int32_t*>(nullptr));
    }
  }

  const RangeKernel kernel = select_kernel(isa, args.w.format);
  const int64_t tasks = (args.n + kColumnsPerTask - 1) / kColumnsPerTask;
  // A call too small to pay for waking the thread team runs on the calling thread.
  const bool parallel = args.n * weight_row_bytes(args.w.format, args.k) > (64 << 10);
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t begin = task * kColumnsPerTask;
    kernel(problem, begin, std::min(args.n, begin + kColumnsPerTask));
  }
}

// ------------------------------------------------------------------------------- quantization

void quantize_rows(const void* source, DType source_dtype, int64_t ld_source, int64_t n, int64_t k, WeightFormat format,
                   int64_t group_size, uint8_t* codes, float* scales) {
  if (!is_quantized(format)) throw InvalidArgument("quantize_rows: the format must be int8 or int4");
  check_quantized_layout(format, k, group_size, "quantize_rows");
  if (n < 0 || ld_source < k) throw InvalidArgument("quantize_rows: bad shape");
  source_value(source, source_dtype, 0 * n);  // rejects an unsupported dtype before the parallel loop
  const int64_t groups = scale_groups(k, group_size);
  const int64_t row_bytes = weight_row_bytes(format, k);
#pragma omp parallel
  {
    std::vector<float> values(static_cast<size_t>(k));
    std::vector<int> levels(static_cast<size_t>(group_size));
#pragma omp for schedule(static)
    for (int64_t row = 0; row < n; ++row) {
      for (int64_t i = 0; i < k; ++i) values[i] = source_value(source, source_dtype, row * ld_source + i);
      uint8_t* out = codes + row * row_bytes;
      for (int64_t group = 0; group < groups; ++group) {
        const int64_t start = group * group_size;
        const int64_t length = std::min(group_size, k - start);
        const float* v = values.data() + start;
        float extreme = 0.0f;  // the value of largest magnitude, sign kept
        for (int64_t i = 0; i < length; ++i)
          if (std::abs(v[i]) > std::abs(extreme)) extreme = v[i];
        float scale = 0.0f;
        if (format == WeightFormat::Int8) {
          scale = std::abs(extreme) / 127.0f;
          const float inverse = scale > 0.0f ? 1.0f / scale : 0.0f;
          for (int64_t i = 0; i < length; ++i)
            levels[i] = static_cast<int>(std::clamp(std::nearbyint(v[i] * inverse), -127.0f, 127.0f));
          for (int64_t i = 0; i < length; ++i) out[start + i] = static_cast<uint8_t>(static_cast<int8_t>(levels[i]));
        } else {
          scale = -extreme / 8.0f;
          const float inverse = scale != 0.0f ? 1.0f / scale : 0.0f;
          for (int64_t i = 0; i < length; ++i)
            levels[i] = static_cast<int>(std::clamp(std::nearbyint(v[i] * inverse), -8.0f, 7.0f)) + 8;
          for (int64_t block = 0; block < length; block += 32)
            for (int j = 0; j < 16; ++j)
              out[(start + block) / 2 + j] = static_cast<uint8_t>(levels[block + j] | (levels[block + j + 16] << 4));
        }
        scales[row * groups + group] = scale;
      }
    }
  }
}

namespace {

template <typename Store>
void dequantize_rows_layout(const WeightMatrix& w, int64_t k, int64_t row_begin, int64_t row_end, Store store);

template <typename Store>
void dequantize_with(const WeightMatrix& w, int64_t k, int64_t row_begin, int64_t row_end, Store store) {
  check_quantized_layout(w.format, k, w.group_size, "dequantize_rows");
  if (w.layout == WeightLayout::Panels) {
    // Unpacked panel by panel into the Rows layout, then read as such (tests; the model widens only
    // rows, see linear.h).
    const int64_t groups = scale_groups(k, w.group_size);
    for (int64_t first = row_begin / kPanelRows * kPanelRows; first < row_end; first += kPanelRows) {
      WeightMatrix panel = w;
      const int64_t panel_index = first / kPanelRows;
      panel.data = static_cast<const uint8_t*>(w.data) + panel_index * panel_bytes(w.format, k);
      panel.scales = w.scales + panel_index * groups * kPanelRows;
      panel.code_sums = w.code_sums ? w.code_sums + panel_index * groups * kPanelRows : nullptr;
      std::vector<uint8_t> codes(static_cast<size_t>(panel_bytes(w.format, k)));
      std::vector<float> scales(static_cast<size_t>(kPanelRows * groups));
      unpack_panels(panel, kPanelRows, k, codes.data(), scales.data());
      const WeightMatrix rows{w.format, codes.data(), k, scales.data(), groups, w.group_size};
      const int64_t begin = std::max(row_begin, first), end = std::min(row_end, first + kPanelRows);
      dequantize_rows_layout(rows, k, begin - first, end - first,
                             [&](int64_t row, int64_t i, float value) { store(row + begin - row_begin, i, value); });
    }
    return;
  }
  dequantize_rows_layout(w, k, row_begin, row_end, store);
}

template <typename Store>
void dequantize_rows_layout(const WeightMatrix& w, int64_t k, int64_t row_begin, int64_t row_end, Store store) {
  for (int64_t row = row_begin; row < row_end; ++row) {
    const int64_t out_row = row - row_begin;
    switch (w.format) {
      case WeightFormat::F32: {
        const float* values = static_cast<const float*>(w.data) + row * w.ld;
        for (int64_t i = 0; i < k; ++i) store(out_row, i, values[i]);
        break;
      }
      case WeightFormat::BF16: {
        const uint16_t* values = static_cast<const uint16_t*>(w.data) + row * w.ld;
        for (int64_t i = 0; i < k; ++i) store(out_row, i, bf16_to_float(values[i]));
        break;
      }
      case WeightFormat::Int8: {
        const int8_t* codes = static_cast<const int8_t*>(w.data) + row * w.ld;
        const float* scales = w.scales + row * w.scales_ld;
        for (int64_t start = 0; start < k; start += w.group_size) {
          const float scale = scales[start / w.group_size];
          const int64_t end = std::min(k, start + w.group_size);
          for (int64_t i = start; i < end; ++i) store(out_row, i, scale * static_cast<float>(codes[i]));
        }
        break;
      }
      case WeightFormat::Int4: {
        const uint8_t* bytes = static_cast<const uint8_t*>(w.data) + row * (w.ld / 2);
        const float* scales = w.scales + row * w.scales_ld;
        for (int64_t block = 0; block < k; block += 32) {
          const float scale = scales[block / w.group_size];
          for (int j = 0; j < 16; ++j) {
            const uint8_t byte = bytes[block / 2 + j];
            store(out_row, block + j, scale * static_cast<float>((byte & 15) - 8));
            store(out_row, block + j + 16, scale * static_cast<float>((byte >> 4) - 8));
          }
        }
        break;
      }
    }
  }
}

}  // namespace

void dequantize_rows(const WeightMatrix& w, int64_t k, int64_t row_begin, int64_t row_end, float* out, int64_t ld_out) {
  dequantize_with(w, k, row_begin, row_end,
                  [out, ld_out](int64_t row, int64_t i, float value) { out[row * ld_out + i] = value; });
}

void dequantize_rows_bf16(const WeightMatrix& w, int64_t k, int64_t row_begin, int64_t row_end, uint16_t* out,
                          int64_t ld_out) {
  dequantize_with(w, k, row_begin, row_end,
                  [out, ld_out](int64_t row, int64_t i, float value) { out[row * ld_out + i] = float_to_bf16(value); });
}

}  // namespace qwen2audio::kernels
