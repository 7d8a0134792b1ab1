// gemv (decode) kernels of every instruction-set tier this CPU has, for every weight format,
// against a double-precision loop over weights decoded from the documented format; weight-only
// quantization against its definition; CPU feature detection.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/gemv.h"
#include "kernels/cpu/memory_bandwidth.h"
#include "kernels/cpu/quantized_gemm.h"
#include "runtime/buffer.h"
#include "runtime/dtype.h"
#include "runtime/errors.h"

namespace qwen2audio::kernels {
namespace {

std::vector<float> random_values(size_t count, uint32_t seed, float scale = 1.0f) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(count);
  for (float& value : values) value = normal(generator);
  return values;
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> isas;
  for (Isa isa : kIsaTiers)
    if (isa_supported(isa)) isas.push_back(isa);
  return isas;
}

// A weight matrix [n, k] with row stride ld in one format, plus its values decoded here from the
// format's definition (independently of the library's dequantize_rows).
struct TestWeights {
  WeightFormat format = WeightFormat::F32;
  int64_t n = 0, k = 0, ld = 0, group_size = 0, scales_ld = 0;
  std::vector<uint8_t> storage;
  std::vector<float> scales;
  std::vector<double> values;  // [n, k] decoded

  WeightMatrix view() const {
    return WeightMatrix{format, storage.data(), ld, scales.empty() ? nullptr : scales.data(), scales_ld, group_size};
  }
};

TestWeights make_weights(WeightFormat format, int64_t n, int64_t k, int64_t ld, int64_t group_size, uint32_t seed) {
  TestWeights w;
  w.format = format;
  w.n = n;
  w.k = k;
  w.ld = ld;
  w.group_size = group_size;
  const std::vector<float> source = random_values(static_cast<size_t>(n * ld), seed, 0.5f);
  w.values.assign(static_cast<size_t>(n * k), 0.0);
  switch (format) {
    case WeightFormat::F32: {
      w.storage.resize(source.size() * 4);
      std::memcpy(w.storage.data(), source.data(), w.storage.size());
      for (int64_t j = 0; j < n; ++j)
        for (int64_t i = 0; i < k; ++i) w.values[j * k + i] = source[j * ld + i];
      break;
    }
    case WeightFormat::BF16: {
      w.storage.resize(source.size() * 2);
      auto* bits = reinterpret_cast<uint16_t*>(w.storage.data());
      for (size_t i = 0; i < source.size(); ++i) bits[i] = float_to_bf16(source[i]);
      for (int64_t j = 0; j < n; ++j)
        for (int64_t i = 0; i < k; ++i) w.values[j * k + i] = bf16_to_float(bits[j * ld + i]);
      break;
    }
    case WeightFormat::Int8:
    case WeightFormat::Int4: {
      // Random codes and scales, so every level (-127/127, 0/15) and sign of scale shows up.
      std::mt19937 generator(seed + 1);
      const int64_t groups = (k + group_size - 1) / group_size;
      w.scales_ld = groups + 1;  // a stride wider than the row tests scales_ld
      w.scales.assign(static_cast<size_t>(n * w.scales_ld), 0.0f);
      for (float& scale : w.scales) scale = std::normal_distribution<float>(0.0f, 0.02f)(generator);
      const int64_t row_bytes = format == WeightFormat::Int8 ? ld : ld / 2;
      w.storage.resize(static_cast<size_t>(n * row_bytes));
      for (uint8_t& byte : w.storage) byte = static_cast<uint8_t>(generator());
      for (int64_t j = 0; j < n; ++j) {
        for (int64_t i = 0; i < k; ++i) {
          const double scale = w.scales[j * w.scales_ld + i / group_size];
          int level;
          if (format == WeightFormat::Int8) {
            int8_t code = static_cast<int8_t>(w.storage[j * row_bytes + i]);
            if (code == -128) w.storage[j * row_bytes + i] = static_cast<uint8_t>(code = -127);  // outside the format
            level = code;
          } else {
            const int64_t block = i / 32 * 32, within = i % 32;
            const uint8_t byte = w.storage[j * row_bytes + block / 2 + within % 16];
            level = (within < 16 ? byte & 15 : byte >> 4) - 8;
          }
          w.values[j * k + i] = scale * level;
        }
      }
      break;
    }
  }
  return w;
}

// The quantized formats' activations as gemv.h defines them: per weight group, levels
// nearbyint(x * (top / max|x|)) times the scale max|x| / top, as float32 values [m, k]; top is 127
// (int8 levels, for int4 weights) or 32767 (int16 levels, for int8 weights).
std::vector<float> quantized_activations(const std::vector<float>& x, int64_t m, int64_t k, int64_t ldx,
                                         int64_t group_size, float top) {
  std::vector<float> values(static_cast<size_t>(m * k));
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t start = 0; start < k; start += group_size) {
      const int64_t end = std::min(k, start + group_size);
      float largest = 0.0f;
      for (int64_t i = start; i < end; ++i) largest = std::max(largest, std::abs(x[r * ldx + i]));
      const float inverse = largest > 0.0f ? top / largest : 0.0f;
      for (int64_t i = start; i < end; ++i) {
        const float level = std::nearbyint(x[r * ldx + i] * inverse);
        EXPECT_LE(std::abs(level), top);
        values[r * k + i] = (largest / top) * level;
      }
    }
  }
  return values;
}

struct Case {
  int64_t m, n, k;
  bool bias, accumulate, strided;
};

std::string case_name(const Case& c) {
  return std::to_string(c.m) + "x" + std::to_string(c.n) + "x" + std::to_string(c.k) + (c.bias ? " bias" : "") +
         (c.accumulate ? " accumulate" : "") + (c.strided ? " strided" : "");
}

// Runs one case and compares with the double loop; the bound is float32 rounding of the sum of
// |x w| over k terms (with slack for the order of summation), not a tuned number.
void check_case(const Case& c, WeightFormat format, int64_t group_size, const GemvOptions& options, uint32_t seed) {
  SCOPED_TRACE(std::string(weight_format_name(format)) + " " + case_name(c) + " group " + std::to_string(group_size) +
               " isa " + isa_name(options.isa));
  const int64_t ldx = c.k + (c.strided ? 3 : 0);
  const int64_t ldw = c.k + (c.strided ? 32 : 0);
  const int64_t ldy = c.n + (c.strided ? 5 : 0);
  const TestWeights w = make_weights(format, c.n, c.k, ldw, group_size, seed);
  const std::vector<float> x = random_values(static_cast<size_t>(c.m * ldx), seed + 7);
  const std::vector<float> bias = random_values(static_cast<size_t>(c.n), seed + 8);
  std::vector<float> y = random_values(static_cast<size_t>(c.m * ldy), seed + 9);
  const std::vector<float> y0 = y;

  GemvArgs args;
  args.m = c.m;
  args.n = c.n;
  args.k = c.k;
  args.x = x.data();
  args.ldx = ldx;
  args.w = w.view();
  args.bias = c.bias ? bias.data() : nullptr;
  args.y = y.data();
  args.ldy = ldy;
  args.accumulate = c.accumulate;
  gemv(args, options);

  const bool round_inputs = format == WeightFormat::BF16 && options.round_bf16_inputs;
  const bool quantized_inputs = is_quantized(format);
  const std::vector<float> level_inputs =
      quantized_inputs
          ? quantized_activations(x, c.m, c.k, ldx, group_size, format == WeightFormat::Int4 ? 127.0f : 32767.0f)
          : std::vector<float>();
  double worst_ratio = 0.0;
  for (int64_t r = 0; r < c.m; ++r) {
    for (int64_t j = 0; j < c.n; ++j) {
      double sum = 0.0, magnitude = 0.0;
      for (int64_t i = 0; i < c.k; ++i) {
        float input = round_inputs ? bf16_to_float(float_to_bf16(x[r * ldx + i])) : x[r * ldx + i];
        if (quantized_inputs) input = level_inputs[r * c.k + i];
        sum += static_cast<double>(input) * w.values[j * c.k + i];
        magnitude += std::abs(static_cast<double>(input) * w.values[j * c.k + i]);
      }
      double expected = sum + (c.bias ? bias[j] : 0.0) + (c.accumulate ? y0[r * ldy + j] : 0.0);
      const double bound = 1e-6 * (magnitude + 1.0) * (1.0 + std::sqrt(static_cast<double>(c.k)));
      const double error = std::abs(y[r * ldy + j] - expected);
      worst_ratio = std::max(worst_ratio, error / bound);
      ASSERT_LE(error, bound) << "row " << r << " column " << j;
    }
    // Padding between rows of y is left alone.
    for (int64_t j = c.n; j < ldy; ++j) ASSERT_EQ(y[r * ldy + j], y0[r * ldy + j]);
  }
}

const std::vector<Case>& quantizable_cases() {
  static const std::vector<Case> cases = {{1, 7, 64, false, false, false}, {1, 130, 96, true, false, false},
                                          {2, 33, 128, false, true, true}, {3, 65, 160, true, true, false},
                                          {4, 16, 32, false, false, true}, {5, 64, 256, true, false, false},
                                          {8, 41, 320, true, true, true},  {6, 3, 512, false, false, false},
                                          {1, 1, 1024, true, true, false}, {7, 260, 64, false, true, true}};
  return cases;
}

const std::vector<Case>& odd_k_cases() {
  static const std::vector<Case> cases = {{1, 9, 67, true, false, false},
                                          {3, 10, 45, false, true, true},
                                          {6, 5, 33, true, true, true},
                                          {1, 4, 7, false, false, false},
                                          {8, 21, 129, true, false, true}};
  return cases;
}

TEST(Gemv, PlainFormatsOnEveryTier) {
  uint32_t seed = 1;
  for (Isa isa : supported_isas()) {
    for (WeightFormat format : {WeightFormat::F32, WeightFormat::BF16}) {
      for (bool round : {true, false}) {
        if (format == WeightFormat::F32 && !round) continue;
        // Both read orders (gemv.h: only one activation row of BF16 weights on the AVX512-BF16 tier
        // has a choice; elsewhere both must give the same, correct result).
        for (ReadOrder order : {ReadOrder::Tiles, ReadOrder::Rows}) {
          GemvOptions options{round, isa};
          options.read_order = order;
          for (const Case& c : quantizable_cases()) check_case(c, format, 0, options, seed++);
          for (const Case& c : odd_k_cases()) check_case(c, format, 0, options, seed++);
        }
      }
    }
  }
}

TEST(Gemv, QuantizedFormatsOnEveryTier) {
  uint32_t seed = 100;
  for (Isa isa : supported_isas()) {
    for (WeightFormat format : {WeightFormat::Int8, WeightFormat::Int4}) {
      // 128 leaves a shorter last group for k = 160 and 320.
      for (int64_t group_size : {32, 64, 128}) {
        GemvOptions options{true, isa};
        for (const Case& c : quantizable_cases()) check_case(c, format, group_size, options, seed++);
      }
    }
  }
}

TEST(Gemv, Int8SumsOfLongGroupsStayExact) {
  // Codes of -128 (a stored checkpoint may hold them) against activations at the top level
  // (32767) are the largest products an int32 lane can meet; groups of 8192 and 4128 elements sum
  // past 2^31 in one lane unless the kernel scales spans of kInt8ExactSpan separately.
  for (int64_t k : {int64_t{8192}, int64_t{4128}}) {
    const int64_t n = 5;
    std::vector<int8_t> codes(static_cast<size_t>(n * k), -128);
    for (int64_t i = 0; i < k; i += 3) codes[static_cast<size_t>(i)] = 127;  // row 0 mixes signs
    const std::vector<float> scales(static_cast<size_t>(n), 0.5f);
    // One activation row (column tiles) and three (the batched tile).
    for (int64_t m : {int64_t{1}, int64_t{3}}) {
      const std::vector<float> x(static_cast<size_t>(m * k), 2.0f);  // every level is 32767
      for (Isa isa : supported_isas()) {
        SCOPED_TRACE(std::string("k ") + std::to_string(k) + " rows " + std::to_string(m) + " isa " + isa_name(isa));
        std::vector<float> y(static_cast<size_t>(m * n));
        const WeightMatrix w{WeightFormat::Int8, codes.data(), k, scales.data(), 1, k};
        gemv(GemvArgs{m, n, k, x.data(), k, w, nullptr, y.data(), n, false}, GemvOptions{true, isa});
        for (int64_t j = 0; j < n; ++j) {
          double expected = 0.0;
          for (int64_t i = 0; i < k; ++i) expected += 0.5 * codes[static_cast<size_t>(j * k + i)] * 2.0;
          for (int64_t r = 0; r < m; ++r)
            EXPECT_NEAR(y[static_cast<size_t>(r * n + j)], expected, 1e-5 * std::abs(expected)) << "column " << j;
        }
      }
    }
  }
}

TEST(Gemv, TierFollowsTheCpuAndTheFormat) {
  EXPECT_EQ(gemv_isa(GemvOptions{true, Isa::Scalar}, WeightFormat::Int4), Isa::Scalar);
  for (WeightFormat format : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Int8, WeightFormat::Int4}) {
    const Isa chosen = gemv_isa(GemvOptions{true, Isa::Avx512Bf16}, format);
    EXPECT_TRUE(isa_supported(chosen));
    EXPECT_LE(static_cast<int>(chosen), static_cast<int>(best_isa()));
    // The BF16 tier serves BF16 weights with BF16-rounded activations (vdpbf16ps) and int4 (vpdpbusd).
    if (format == WeightFormat::F32) {
      EXPECT_NE(chosen, Isa::Avx512Bf16);
    }
    // int8 rows take the 256-bit integer kernel on every CPU that has AVX2 (it measured fastest).
    if (format == WeightFormat::Int8) {
      EXPECT_LE(static_cast<int>(chosen), static_cast<int>(Isa::Avx2));
    }
  }
  if (best_isa() >= Isa::Avx512Bf16) {  // not capped below it by QWEN2AUDIO_MAX_ISA
    // AMX has no row-at-a-time kernels: its tier runs the Avx512Bf16 ones.
    EXPECT_EQ(gemv_isa(GemvOptions{true, best_isa()}, WeightFormat::BF16), Isa::Avx512Bf16);
    EXPECT_EQ(gemv_isa(GemvOptions{true, Isa::Avx512Bf16}, WeightFormat::BF16), Isa::Avx512Bf16);
    EXPECT_EQ(gemv_isa(GemvOptions{false, Isa::Avx512Bf16}, WeightFormat::BF16), Isa::Avx512);
    EXPECT_EQ(gemv_isa(GemvOptions{true, Isa::Avx512Bf16}, WeightFormat::Int4), Isa::Avx512Bf16);
    EXPECT_EQ(gemv_isa(GemvOptions{true, Isa::Avx512Bf16}, WeightFormat::Int8), Isa::Avx2);
  }
  // VNNI without BF16 serves only the integer panels: the row kernels run the tier below.
  for (WeightFormat format : {WeightFormat::F32, WeightFormat::BF16, WeightFormat::Int8, WeightFormat::Int4}) {
    if (isa_supported(Isa::Avx2Vnni) && best_isa() >= Isa::Avx2Vnni) {
      EXPECT_EQ(gemv_isa(GemvOptions{true, Isa::Avx2Vnni}, format), Isa::Avx2);
    }
    if (isa_supported(Isa::Avx512Vnni) && best_isa() >= Isa::Avx512Vnni) {
      EXPECT_EQ(gemv_isa(GemvOptions{true, Isa::Avx512Vnni}, format),
                format == WeightFormat::Int8 ? Isa::Avx2 : Isa::Avx512);
    }
  }
}

// Checkpoint weights start anywhere (8 + header bytes into a safetensors file). Rows read from the
// cache line before their start must ignore what lies outside the row: NaN bit patterns here, before
// the first row, after the last and between rows (k < ld). Every even byte offset within a line, in
// both read orders and with 1-4 activation rows (a batch's decode step reads tiles), on every tier;
// n = 37 leaves a column tail after the 4-row tiles.
TEST(Gemv, Bf16RowsAtAnyOffsetIgnoreTheirNeighbours) {
  const int64_t n = 37, ld = 96;  // 192-byte rows: every row shares its start's offset
  for (int64_t k : {int64_t{96}, int64_t{83}}) {
    const std::vector<float> values = random_values(static_cast<size_t>(n * k), 41);
    const std::vector<float> x = random_values(static_cast<size_t>(4 * k), 42);
    // The exact products of BF16-rounded x with the weights, and each output's tolerance: the same for
    // every offset, tier, order, prefetch and row count below.
    std::vector<double> expected(static_cast<size_t>(4 * n)), tolerance(static_cast<size_t>(4 * n));
    for (int64_t r = 0; r < 4; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        double sum = 0.0, magnitude = 0.0;
        for (int64_t i = 0; i < k; ++i) {
          const double product = static_cast<double>(bf16_to_float(float_to_bf16(x[r * k + i]))) *
                                 bf16_to_float(float_to_bf16(values[j * k + i]));
          sum += product;
          magnitude += std::abs(product);
        }
        expected[r * n + j] = sum;
        tolerance[r * n + j] = 1e-6 * (magnitude + 1.0) * (1.0 + std::sqrt(static_cast<double>(k)));
      }
    }
    Buffer<uint16_t> storage(static_cast<size_t>(n * ld + 128));
    for (int64_t offset = 0; offset < 32; ++offset) {
      std::fill(storage.data(), storage.data() + n * ld + 128, uint16_t{0x7fc1});  // NaN
      uint16_t* w = storage.data() + 32 + offset;
      for (int64_t j = 0; j < n; ++j)
        for (int64_t i = 0; i < k; ++i) w[j * ld + i] = float_to_bf16(values[j * k + i]);
      for (Isa isa : supported_isas()) {
        for (ReadOrder order : {ReadOrder::Tiles, ReadOrder::Rows}) {
          // -1: the tier's prefetch distance; 0: none.
          for (int64_t prefetch : {int64_t{-1}, int64_t{0}}) {
            for (int64_t m = 1; m <= 4; ++m) {
              SCOPED_TRACE("k " + std::to_string(k) + " offset " + std::to_string(offset) + " isa " + isa_name(isa) +
                           " order " + read_order_name(order) + " prefetch " + std::to_string(prefetch) + " rows " +
                           std::to_string(m));
              GemvOptions options{true, isa};
              options.read_order = order;
              options.prefetch_distance = prefetch;
              std::vector<float> y(static_cast<size_t>(m * n));
              gemv({m, n, k, x.data(), k, WeightMatrix{WeightFormat::BF16, w, ld}, nullptr, y.data(), n, false},
                   options);
              for (int64_t r = 0; r < m; ++r)
                for (int64_t j = 0; j < n; ++j)
                  ASSERT_NEAR(y[r * n + j], expected[r * n + j], tolerance[r * n + j])
                      << "row " << r << " column " << j;
            }
          }
        }
      }
    }
  }
}

TEST(Gemv, EveryRowGetsTheSameBitsWhateverItsBatchAndReadOrder) {
  // The read order of one BF16 row is chosen by a timing at load, and a row decodes alone or in a
  // batch: neither may change a result's bits, or a rerun of the same prompt (or the same clip in
  // another batch) could break a near tie of the greedy choice the other way.
  uint32_t seed = 300;
  for (Isa isa : supported_isas()) {
    // Quantized weights as rows and as panels (the layout the model decodes them in).
    for (auto [format, panels] : {std::pair{WeightFormat::F32, false}, std::pair{WeightFormat::BF16, false},
                                  std::pair{WeightFormat::Int8, false}, std::pair{WeightFormat::Int4, false},
                                  std::pair{WeightFormat::Int8, true}, std::pair{WeightFormat::Int4, true}}) {
      for (auto [plain_k, plain_ld] :
           {std::pair<int64_t, int64_t>{200, 224}, std::pair<int64_t, int64_t>{1024, 1024}}) {
        const int64_t n = 37, rows = 6;
        // Quantized rows hold whole groups (here of 64), with no padding between rows.
        const bool quantized_format = is_quantized(format);
        const int64_t k = quantized_format ? plain_k / 64 * 64 : plain_k;
        const TestWeights w =
            make_weights(format, n, k, quantized_format ? k : plain_ld, quantized_format ? 64 : 0, seed++);
        PackedPanels packed;
        if (panels) packed = pack_panels(w.view(), n, k);
        const WeightMatrix weights = panels ? packed.view : w.view();
        const std::vector<float> x = random_values(static_cast<size_t>(rows * k), seed++);
        std::vector<float> whole(static_cast<size_t>(rows * n));
        GemvOptions options{true, isa};
        options.read_order = ReadOrder::Tiles;
        gemv({rows, n, k, x.data(), k, weights, nullptr, whole.data(), n, false}, options);
        for (ReadOrder order : {ReadOrder::Tiles, ReadOrder::Rows}) {
          options.read_order = order;
          for (int64_t m = 1; m <= rows; ++m) {
            for (int64_t first = 0; first + m <= rows; first += m) {
              SCOPED_TRACE(std::string("isa ") + isa_name(isa) + " format " + std::to_string(static_cast<int>(format)) +
                           (panels ? " panels" : "") + " k " + std::to_string(k) + " order " + read_order_name(order) +
                           " rows " + std::to_string(first) + "+" + std::to_string(m));
              std::vector<float> part(static_cast<size_t>(m * n));
              gemv({m, n, k, x.data() + first * k, k, weights, nullptr, part.data(), n, false}, options);
              for (int64_t r = 0; r < m; ++r)
                for (int64_t j = 0; j < n; ++j)
                  ASSERT_EQ(std::bit_cast<uint32_t>(part[r * n + j]),
                            std::bit_cast<uint32_t>(whole[(first + r) * n + j]))
                      << "row " << first + r << " column " << j;
            }
          }
        }
      }
    }
  }
}

TEST(Gemv, ReadOrderIsMeasuredOnceOrForced) {
  const ReadOrder measured = preferred_read_order();
  EXPECT_NE(measured, ReadOrder::Auto);
  EXPECT_EQ(preferred_read_order(), measured);  // remembered, not measured again
  if (!isa_supported(Isa::Avx512Bf16)) {
    EXPECT_EQ(measured, ReadOrder::Tiles);
  }
  ::setenv("QWEN2AUDIO_READ_ORDER", "rows", 1);
  EXPECT_EQ(preferred_read_order(), ReadOrder::Rows);
  ::setenv("QWEN2AUDIO_READ_ORDER", "tiles", 1);
  EXPECT_EQ(preferred_read_order(), ReadOrder::Tiles);
  ::setenv("QWEN2AUDIO_READ_ORDER", "sideways", 1);
  EXPECT_THROW(preferred_read_order(), InvalidArgument);
  ::unsetenv("QWEN2AUDIO_READ_ORDER");
}

TEST(Gemv, ThreadCountDoesNotChangeResults) {
  // Each output is computed whole by one thread in a fixed order, so results are bit-identical.
  const TestWeights w = make_weights(WeightFormat::Int4, 517, 256, 256, 128, 42);
  const std::vector<float> x = random_values(3 * 256, 43);
  std::vector<float> one(3 * 517), two(3 * 517);
  for (auto [threads, y] : {std::pair{1, &one}, std::pair{2, &two}}) {
    GemvArgs args{3, 517, 256, x.data(), 256, w.view(), nullptr, y->data(), 517, false};
    const int previous = omp_get_max_threads();
    omp_set_num_threads(threads);
    gemv(args);
    omp_set_num_threads(previous);
  }
  EXPECT_EQ(one, two);
}

TEST(Gemv, BadArgumentsThrow) {
  const TestWeights w = make_weights(WeightFormat::Int8, 4, 64, 64, 32, 5);
  std::vector<float> x(64), y(4);
  GemvArgs good{1, 4, 64, x.data(), 64, w.view(), nullptr, y.data(), 4, false};
  EXPECT_NO_THROW(gemv(good));
  GemvArgs bad = good;
  bad.w.group_size = 48;
  EXPECT_THROW(gemv(bad), InvalidArgument);
  bad = good;
  bad.w.scales = nullptr;
  EXPECT_THROW(gemv(bad), InvalidArgument);
  bad = good;
  bad.w.scales_ld = 1;
  EXPECT_THROW(gemv(bad), InvalidArgument);
  bad = good;
  bad.k = 48;  // quantized rows need whole 32-element blocks
  bad.ldx = 48;
  EXPECT_THROW(gemv(bad), InvalidArgument);
  bad = good;
  bad.ldx = 10;
  EXPECT_THROW(gemv(bad), InvalidArgument);
  bad = good;
  bad.ldy = 2;
  EXPECT_THROW(gemv(bad), InvalidArgument);
  bad = good;
  bad.m = -1;
  EXPECT_THROW(gemv(bad), InvalidArgument);
  bad = good;
  bad.x = nullptr;
  EXPECT_THROW(gemv(bad), InvalidArgument);
}

// ------------------------------------------------------------------------------ quantization

struct Quantized {
  std::vector<uint8_t> codes;
  std::vector<float> scales;
  WeightMatrix view(WeightFormat format, int64_t k, int64_t group_size) const {
    return WeightMatrix{format, codes.data(), k, scales.data(), scale_groups(k, group_size), group_size};
  }
};

Quantized quantize(const std::vector<float>& source, int64_t n, int64_t k, WeightFormat format, int64_t group_size) {
  Quantized q;
  q.codes.resize(static_cast<size_t>(n * weight_row_bytes(format, k)));
  q.scales.resize(static_cast<size_t>(n * scale_groups(k, group_size)));
  quantize_rows(source.data(), DType::F32, k, n, k, format, group_size, q.codes.data(), q.scales.data());
  return q;
}

TEST(Quantize, Int8IsSymmetricRoundToNearestPerGroup) {
  const int64_t n = 5, k = 160, group = 64;
  std::vector<float> source = random_values(static_cast<size_t>(n * k), 11);
  std::fill(source.begin() + 64, source.begin() + 128, 0.0f);  // an all-zero group
  const Quantized q = quantize(source, n, k, WeightFormat::Int8, group);
  std::vector<float> back(static_cast<size_t>(n * k));
  dequantize_rows(q.view(WeightFormat::Int8, k, group), k, 0, n, back.data(), k);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t g = 0; g < 3; ++g) {
      const int64_t start = g * group, end = std::min(k, start + group);
      float largest = 0.0f;
      for (int64_t i = start; i < end; ++i) largest = std::max(largest, std::abs(source[j * k + i]));
      const float scale = q.scales[j * 3 + g];
      EXPECT_FLOAT_EQ(scale, largest / 127.0f);
      for (int64_t i = start; i < end; ++i) {
        const int code = static_cast<int8_t>(q.codes[j * k + i]);
        ASSERT_GE(code, -127);
        ASSERT_LE(std::abs(back[j * k + i] - source[j * k + i]), scale * 0.5f * (1 + 1e-5f) + 1e-30f);
        ASSERT_EQ(back[j * k + i], scale * static_cast<float>(code));
      }
    }
  }
  EXPECT_EQ(q.scales[1], 0.0f);
  for (int64_t i = 64; i < 128; ++i) EXPECT_EQ(back[i], 0.0f);
}

TEST(Quantize, Int4MapsTheLargestMagnitudeToLevelMinus8AndPacksNibbles) {
  const int64_t n = 3, k = 128, group = 64;
  std::vector<float> source = random_values(static_cast<size_t>(n * k), 12);
  const Quantized q = quantize(source, n, k, WeightFormat::Int4, group);
  std::vector<float> back(static_cast<size_t>(n * k));
  dequantize_rows(q.view(WeightFormat::Int4, k, group), k, 0, n, back.data(), k);
  for (int64_t j = 0; j < n; ++j) {
    for (int64_t g = 0; g < 2; ++g) {
      const float* v = source.data() + j * k + g * group;
      int64_t extreme = 0;
      for (int64_t i = 0; i < group; ++i)
        if (std::abs(v[i]) > std::abs(v[extreme])) extreme = i;
      const float scale = q.scales[j * 2 + g];
      EXPECT_FLOAT_EQ(scale, -v[extreme] / 8.0f);
      EXPECT_FLOAT_EQ(back[j * k + g * group + extreme], v[extreme]);
      for (int64_t i = 0; i < group; ++i) {
        // Within the grid: half a step; the opposite extreme may clamp at level 7 (one step).
        const float error = std::abs(back[j * k + g * group + i] - v[i]);
        const bool clamped = std::nearbyint(v[i] / scale) > 7.0f;
        ASSERT_LE(error, std::abs(scale) * (clamped ? 1.0f : 0.5f) * (1 + 1e-5f)) << i;
      }
    }
    // The documented layout: byte b of a 32-element block holds element b (low nibble) and
    // element b + 16 (high nibble), level + 8.
    for (int64_t i = 0; i < k; ++i) {
      const float scale = q.scales[j * 2 + i / group];
      const uint8_t byte = q.codes[j * (k / 2) + i / 32 * 16 + i % 16];
      const int level = ((i % 32) < 16 ? byte & 15 : byte >> 4) - 8;
      ASSERT_EQ(back[j * k + i], scale * static_cast<float>(level));
    }
  }
}

TEST(Quantize, BF16SourceAndBF16Dequantization) {
  const int64_t n = 4, k = 96, group = 32;
  const std::vector<float> source = random_values(static_cast<size_t>(n * k), 13);
  std::vector<uint16_t> bits(source.size());
  std::vector<float> rounded(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    bits[i] = float_to_bf16(source[i]);
    rounded[i] = bf16_to_float(bits[i]);
  }
  for (WeightFormat format : {WeightFormat::Int8, WeightFormat::Int4}) {
    const Quantized from_float = quantize(rounded, n, k, format, group);
    Quantized from_bf16;
    from_bf16.codes.resize(from_float.codes.size());
    from_bf16.scales.resize(from_float.scales.size());
    quantize_rows(bits.data(), DType::BF16, k, n, k, format, group, from_bf16.codes.data(), from_bf16.scales.data());
    EXPECT_EQ(from_bf16.codes, from_float.codes);
    EXPECT_EQ(from_bf16.scales, from_float.scales);
    std::vector<float> as_float(source.size());
    std::vector<uint16_t> as_bf16(source.size());
    const WeightMatrix view = from_float.view(format, k, group);
    dequantize_rows(view, k, 1, n, as_float.data(), k);  // rows 1.. only
    dequantize_rows_bf16(view, k, 1, n, as_bf16.data(), k);
    for (size_t i = 0; i < static_cast<size_t>((n - 1) * k); ++i) ASSERT_EQ(as_bf16[i], float_to_bf16(as_float[i]));
  }
}

TEST(Quantize, RejectsLayoutsTheKernelsCannotRead) {
  const std::vector<float> source(64 * 2, 1.0f);
  std::vector<uint8_t> codes(128);
  std::vector<float> scales(8);
  EXPECT_THROW(quantize_rows(source.data(), DType::F32, 64, 2, 64, WeightFormat::Int8, 48, codes.data(), scales.data()),
               InvalidArgument);
  EXPECT_THROW(quantize_rows(source.data(), DType::F32, 60, 2, 60, WeightFormat::Int4, 32, codes.data(), scales.data()),
               InvalidArgument);
  EXPECT_THROW(quantize_rows(source.data(), DType::F32, 64, 2, 64, WeightFormat::BF16, 32, codes.data(), scales.data()),
               InvalidArgument);
  EXPECT_THROW(quantize_rows(source.data(), DType::I32, 64, 2, 64, WeightFormat::Int8, 32, codes.data(), scales.data()),
               InvalidArgument);
}

// ---------------------------------------------------------------------------- CPU features

TEST(CpuFeatures, TiersAreConsistent) {
  const CpuFeatures& f = cpu_features();
  EXPECT_TRUE(isa_supported(Isa::Scalar));
  EXPECT_TRUE(isa_supported(best_isa()));
  EXPECT_TRUE(!isa_supported(Isa::Avx2) || (f.avx2 && f.fma && f.f16c));
  EXPECT_TRUE(!isa_supported(Isa::Avx2Vnni) || (isa_supported(Isa::Avx2) && f.avx_vnni));
  EXPECT_TRUE(!isa_supported(Isa::Avx512) || (isa_supported(Isa::Avx2) && f.avx512f && f.avx512bw));
  EXPECT_TRUE(!isa_supported(Isa::Avx512Vnni) || (isa_supported(Isa::Avx512) && f.avx512_vnni));
  EXPECT_TRUE(!isa_supported(Isa::Avx512Bf16) || (isa_supported(Isa::Avx512Vnni) && f.avx512_bf16));
  EXPECT_TRUE(!f.amx_bf16 || f.amx_tile);
  EXPECT_TRUE(!isa_supported(Isa::Amx) || (isa_supported(Isa::Avx512Bf16) && f.amx_int8 && f.amx_bf16));
  for (Isa isa : kIsaTiers) {
    EXPECT_EQ(isa_from_name(isa_name(isa)), isa);
    // A cap at a tier this CPU lacks (Avx2Vnni on Zen 4, or anything above its best) takes the best
    // one below it.
    const Isa capped = widest_isa_up_to(isa);
    EXPECT_TRUE(isa_supported(capped));
    EXPECT_LE(static_cast<int>(capped), static_cast<int>(isa));
    if (isa_supported(isa)) {
      EXPECT_EQ(capped, isa);
    }
    for (Isa other : kIsaTiers) {
      if (other > capped && other <= isa) {
        EXPECT_FALSE(isa_supported(other)) << isa_name(other);
      }
    }
  }
  EXPECT_FALSE(isa_from_name("avx9").has_value());
  EXPECT_GE(physical_core_count(), 1);
  EXPECT_NE(cpu_description().find(isa_name(best_isa())), std::string::npos);
  EXPECT_FALSE(f.vendor.empty());
}

TEST(MemoryBandwidth, StreamingReadSumsEveryWord) {
  // The bound's read must really touch every word (and not skip what its stream split leaves over):
  // sizes that split evenly and unevenly over threads and streams.
  for (size_t bytes : {size_t{256}, size_t{1} << 20, (size_t{1} << 20) + 256 * 3, size_t{256} * 4099}) {
    Buffer<uint64_t> buffer(bytes / 8);
    uint64_t expected = 0;
    for (size_t i = 0; i < bytes / 8; ++i) {
      buffer.data()[i] = i * 2654435761u + 1;
      expected += buffer.data()[i];
    }
    EXPECT_EQ(streaming_read(buffer.data(), bytes), expected) << bytes << " bytes";
  }
  std::vector<uint64_t> unaligned(64);
  EXPECT_THROW(streaming_read(unaligned.data(), 100), InvalidArgument);
}

TEST(MemoryBandwidth, ReadProbeReadsWholeChunksOfItsBuffer) {
  ReadProbe probe((size_t{1} << 20) + 100);  // rounded down to whole 256-byte chunks
  EXPECT_EQ(probe.bytes(), size_t{1} << 20);
  const double first = probe.read_gbs(), second = probe.read_gbs();
  EXPECT_GT(first, 0.0);
  EXPECT_GT(second, 0.0);
  EXPECT_THROW(ReadProbe(1000), InvalidArgument);
}

// The integer products of quantized weights in panels (quantized_gemm.h) against their definition:
// activations quantized per row and weight group to int8 levels (the same levels as gemv's for int4
// weights), summed exactly per group, then scaled. Shapes cover row tails of every tile (1-13 rows),
// panels cut short (n not a multiple of 16), the several panels a decode row's tile takes at once
// with a panel left over, a last group shorter than the others, strides, bias and
// accumulation; the vector kernel where the CPU has it and the scalar one everywhere; through
// quantized_gemm and through gemv, which forwards panels.
TEST(QuantizedPanels, ProductsMatchTheirDefinitionOnEveryShape) {
  const std::vector<Case> cases = {
      {1, 7, 64, false, false, false},
      {1, 130, 288, true, false, true},
      {2, 33, 96, true, false, true},
      {3, 48, 128, false, true, false},
      {4, 70, 352, true, true, true},
      {5, 17, 64, false, false, false},
      {7, 130, 288, true, false, false},
      {9, 40, 256, false, true, false},
      {13, 130, 288, true, false, true},
      {11, 72, 160, false, true, true},
      {12, 32, 4096, false, false, false},
      // From 16 rows the Amx tier runs tile products: whole and partial 32-row blocks, an odd panel
      // left in a task, groups longer than one 64-element tile step, 4096 elements; from four blocks
      // (97 rows) int4 panels are widened once per call instead of slice by slice.
      {16, 48, 256, true, true, false},
      {33, 130, 384, true, false, true},
      {70, 272, 512, false, true, false},
      {40, 64, 4096, false, false, false},
      {100, 40, 192, true, true, true}};
  // Every tier the CPU (and QWEN2AUDIO_MAX_ISA) allows: scalar, vpmaddubsw (Avx2, Avx512), AVX-VNNI
  // (Avx2Vnni), AVX512-VNNI (Avx512Vnni, Avx512Bf16), AMX.
  const std::vector<Isa> isas = supported_isas();
  uint32_t seed = 300;
  for (WeightFormat format : {WeightFormat::Int8, WeightFormat::Int4}) {
    for (int64_t group_size : {int64_t{32}, int64_t{128}}) {
      for (const Case& c : cases) {
        const int64_t ldx = c.k + (c.strided ? 3 : 0), ldw = c.k + (c.strided ? 32 : 0),
                      ldy = c.n + (c.strided ? 5 : 0);
        const TestWeights w = make_weights(format, c.n, c.k, ldw, group_size, ++seed);
        const PackedPanels packed = pack_panels(w.view(), c.n, c.k);
        const std::vector<float> x = random_values(static_cast<size_t>(c.m * ldx), seed + 7);
        const std::vector<float> bias = random_values(static_cast<size_t>(c.n), seed + 8);
        const std::vector<float> y0 = random_values(static_cast<size_t>(c.m * ldy), seed + 9);
        const std::vector<float> levels = quantized_activations(x, c.m, c.k, ldx, group_size, 127.0f);
        std::vector<float> first_vector_result;  // the vector tiers' exact group sums agree to the bit
        for (Isa isa : isas) {
          for (bool through_gemv : {false, true}) {
            SCOPED_TRACE(std::string(weight_format_name(format)) + " " + case_name(c) + " group " +
                         std::to_string(group_size) + " isa " + isa_name(isa) + (through_gemv ? " gemv" : ""));
            std::vector<float> y = y0;
            if (through_gemv)
              gemv({c.m, c.n, c.k, x.data(), ldx, packed.view, c.bias ? bias.data() : nullptr, y.data(), ldy,
                    c.accumulate},
                   GemvOptions{true, isa});
            else
              quantized_gemm({c.m, c.n, c.k, x.data(), ldx, packed.view, c.bias ? bias.data() : nullptr, y.data(), ldy,
                              c.accumulate},
                             isa);
            for (int64_t r = 0; r < c.m; ++r) {
              for (int64_t j = 0; j < c.n; ++j) {
                double sum = 0.0, magnitude = 0.0;
                for (int64_t i = 0; i < c.k; ++i) {
                  sum += static_cast<double>(levels[r * c.k + i]) * w.values[j * c.k + i];
                  magnitude += std::abs(static_cast<double>(levels[r * c.k + i]) * w.values[j * c.k + i]);
                }
                const double expected = sum + (c.bias ? bias[j] : 0.0) + (c.accumulate ? y0[r * ldy + j] : 0.0);
                // Group totals are exact; what remains is float32 rounding of one product and sum per group.
                const double bound = 1e-6 * (magnitude + 1.0) * (1.0 + std::sqrt(static_cast<double>(c.k / 32)));
                ASSERT_LE(std::abs(y[r * ldy + j] - expected), bound) << "row " << r << " column " << j;
              }
              for (int64_t j = c.n; j < ldy; ++j) ASSERT_EQ(y[r * ldy + j], y0[r * ldy + j]);
            }
            // gemv caps the tier at QWEN2AUDIO_MAX_ISA; a direct call runs the tier it is given.
            const Isa ran = through_gemv ? std::min(isa, best_isa()) : isa;
            if (ran == Isa::Scalar) continue;
            if (first_vector_result.empty())
              first_vector_result = y;
            else
              ASSERT_EQ(y, first_vector_result);
          }
        }
      }
    }
  }
}

TEST(QuantizedPanels, UnpackAndDequantizeGiveTheRowsBack) {
  for (WeightFormat format : {WeightFormat::Int8, WeightFormat::Int4}) {
    const int64_t n = 37, k = 352, group = 128;
    const TestWeights w = make_weights(format, n, k, k, group, 77);
    const PackedPanels packed = pack_panels(w.view(), n, k);
    EXPECT_EQ(packed.view.layout, WeightLayout::Panels);
    const int64_t groups = scale_groups(k, group);
    std::vector<uint8_t> codes(static_cast<size_t>(n * weight_row_bytes(format, k)));
    std::vector<float> scales(static_cast<size_t>(n * groups));
    unpack_panels(packed.view, n, k, codes.data(), scales.data());
    EXPECT_EQ(codes, w.storage);
    for (int64_t row = 0; row < n; ++row)
      for (int64_t g = 0; g < groups; ++g) ASSERT_EQ(scales[row * groups + g], w.scales[row * w.scales_ld + g]);
    std::vector<float> values(static_cast<size_t>(n * k));
    dequantize_rows(packed.view, k, 3, n, values.data(), k);  // from the middle of a panel
    for (int64_t row = 3; row < n; ++row)
      for (int64_t i = 0; i < k; ++i)
        ASSERT_EQ(values[(row - 3) * k + i], static_cast<float>(w.values[row * k + i])) << row << " " << i;
  }
}

TEST(QuantizedPanels, RefusesWhatItCannotDo) {
  const TestWeights w = make_weights(WeightFormat::Int8, 4, 64, 64, 32, 1);
  std::vector<float> x(64 * 4), y(16);
  GemvArgs args{4, 4, 64, x.data(), 64, w.view(), nullptr, y.data(), 4, false};
  EXPECT_THROW(quantized_gemm(args), InvalidArgument);  // rows, not panels
  const PackedPanels packed = pack_panels(w.view(), 4, 64);
  EXPECT_THROW(pack_panels(packed.view, 4, 64), InvalidArgument);
  args.w = packed.view;
  args.k = 48;
  EXPECT_THROW(quantized_gemm(args), InvalidArgument);
  const TestWeights plain = make_weights(WeightFormat::BF16, 4, 64, 64, 32, 1);
  args = {4, 4, 64, x.data(), 64, plain.view(), nullptr, y.data(), 4, false};
  EXPECT_THROW(quantized_gemm(args), InvalidArgument);
}

}  // namespace
}  // namespace qwen2audio::kernels
