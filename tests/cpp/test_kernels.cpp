// Each CPU kernel against a naive loop written from the op's definition, in double precision.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/conv1d.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/pool.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/vector_math.h"
#include "runtime/dtype.h"

namespace qwen2audio::kernels {
namespace {

std::vector<float> random_values(size_t count, uint32_t seed, float scale = 1.0f) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> values(count);
  for (float& value : values) value = normal(generator);
  return values;
}

std::vector<uint16_t> to_bf16(const std::vector<float>& values) {
  std::vector<uint16_t> bits(values.size());
  for (size_t i = 0; i < values.size(); ++i) bits[i] = float_to_bf16(values[i]);
  return bits;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]));
  return worst;
}

// y[i, j] = (accumulate ? y0 : 0) + bias[j] + sum_p round?(x[i, p]) * w[j, p], in double.
std::vector<double> naive_linear(const std::vector<float>& x, int64_t ldx, const std::vector<float>& w, int64_t ldw,
                                 const std::vector<float>* bias, const std::vector<float>& y0, int64_t ldy, int64_t m,
                                 int64_t n, int64_t k, bool accumulate, bool round_inputs) {
  std::vector<double> y(y0.begin(), y0.end());
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double sum = bias ? (*bias)[j] : 0.0;
      for (int64_t p = 0; p < k; ++p) {
        const float input = round_inputs ? bf16_to_float(float_to_bf16(x[i * ldx + p])) : x[i * ldx + p];
        sum += static_cast<double>(input) * w[j * ldw + p];
      }
      y[i * ldy + j] = (accumulate ? y[i * ldy + j] : 0.0) + sum;
    }
  }
  return y;
}

struct GemmCase {
  int64_t m, n, k;
  bool bias, accumulate, strided;
};

class GemmTest : public ::testing::TestWithParam<GemmCase> {};

// Covers the decode (m <= 4) and the blocked prefill paths, odd sizes that leave vector tails,
// strided operands, bias and accumulation.
INSTANTIATE_TEST_SUITE_P(
    Shapes, GemmTest,
    ::testing::Values(GemmCase{1, 7, 5, false, false, false}, GemmCase{1, 130, 67, true, false, false},
                      GemmCase{3, 65, 33, true, true, true}, GemmCase{4, 200, 64, false, true, false},
                      GemmCase{5, 129, 100, true, false, true}, GemmCase{37, 70, 129, true, true, true},
                      GemmCase{64, 256, 48, false, false, false}));

void run_gemm_case(const GemmCase& param, DType dtype, GemmOptions options, double tolerance) {
  const int64_t ldx = param.k + (param.strided ? 3 : 0);
  const int64_t ldw = param.k + (param.strided ? 5 : 0);
  const int64_t ldy = param.n + (param.strided ? 2 : 0);
  std::vector<float> x = random_values(param.m * ldx, 1);
  std::vector<float> w = random_values(param.n * ldw, 2, 0.5f);
  // BF16 weights are compared on their exact BF16 values.
  if (dtype == DType::BF16)
    for (float& value : w) value = bf16_to_float(float_to_bf16(value));
  std::vector<float> bias = random_values(param.n, 3);
  std::vector<float> y = random_values(param.m * ldy, 4);
  const std::vector<uint16_t> w_bits = to_bf16(w);
  const bool rounds = dtype == DType::BF16 && options.round_bf16_inputs;
  const std::vector<double> expected = naive_linear(x, ldx, w, ldw, param.bias ? &bias : nullptr, y, ldy, param.m,
                                                    param.n, param.k, param.accumulate, rounds);
  Gemm gemm(options);
  GemmArgs args{param.m,  param.n, param.k,
                x.data(), ldx,     dtype == DType::F32 ? static_cast<const void*>(w.data()) : w_bits.data(),
                dtype,    ldw,     param.bias ? bias.data() : nullptr,
                y.data(), ldy,     param.accumulate};
  gemm(args);
  EXPECT_LT(max_abs_diff(y, expected), tolerance);
  // A second call reuses the cached primitive and must give the same answer.
  std::vector<float> again = random_values(param.m * ldy, 4);
  args.y = again.data();
  gemm(args);
  EXPECT_EQ(again, y);
}

TEST_P(GemmTest, Float32MatchesNaiveLoop) { run_gemm_case(GetParam(), DType::F32, {}, 2e-4); }

TEST_P(GemmTest, Bf16WithRoundedInputsMatchesNaiveLoop) { run_gemm_case(GetParam(), DType::BF16, {true, true}, 2e-4); }

TEST_P(GemmTest, Bf16PortablePathMatchesNaiveLoop) { run_gemm_case(GetParam(), DType::BF16, {true, false}, 2e-4); }

TEST_P(GemmTest, Bf16WithFloat32InputsMatchesNaiveLoop) { run_gemm_case(GetParam(), DType::BF16, {false, true}, 2e-4); }

// GELU fused as a post-op (oneDNN) or applied after the product (portable paths): the reference is
// the exact erf form on the naive product; accumulating products take no activation.
void run_gelu_case(const GemmCase& param, DType dtype, GemmOptions options) {
  const int64_t ldx = param.k + (param.strided ? 3 : 0), ldw = param.k + (param.strided ? 5 : 0);
  const int64_t ldy = param.n + (param.strided ? 2 : 0);
  const std::vector<float> x = random_values(param.m * ldx, 11);
  std::vector<float> w = random_values(param.n * ldw, 12, 0.5f);
  for (float& value : w) value = bf16_to_float(float_to_bf16(value));
  const std::vector<uint16_t> w_bits = to_bf16(w);
  const std::vector<float> bias = random_values(param.n, 13);
  std::vector<float> y = random_values(param.m * ldy, 14);
  const std::vector<float> before = y;
  const bool rounds = dtype == DType::BF16 && options.round_bf16_inputs;
  std::vector<double> expected =
      naive_linear(x, ldx, w, ldw, param.bias ? &bias : nullptr, y, ldy, param.m, param.n, param.k, false, rounds);
  for (int64_t row = 0; row < param.m; ++row)
    for (int64_t column = 0; column < param.n; ++column) {
      double& value = expected[row * ldy + column];
      value = 0.5 * value * (1.0 + std::erf(value / std::sqrt(2.0)));
    }
  Gemm gemm(options);
  GemmArgs args{param.m,
                param.n,
                param.k,
                x.data(),
                ldx,
                dtype == DType::F32 ? static_cast<const void*>(w.data()) : w_bits.data(),
                dtype,
                ldw,
                param.bias ? bias.data() : nullptr,
                y.data(),
                ldy,
                param.accumulate,
                Activation::GeluErf};
  if (param.accumulate) {
    EXPECT_THROW(gemm(args), std::invalid_argument);
    EXPECT_EQ(y, before);
    return;
  }
  gemm(args);
  EXPECT_LT(max_abs_diff(y, expected), 2e-4);
}

TEST_P(GemmTest, GeluActivationMatchesProductThenGelu) {
  run_gelu_case(GetParam(), DType::F32, {});
  run_gelu_case(GetParam(), DType::BF16, {true, true});
  run_gelu_case(GetParam(), DType::BF16, {true, false});
  run_gelu_case(GetParam(), DType::BF16, {false, true});
}

TEST(Gemm, RejectsUnsupportedWeightsAndBadStrides) {
  Gemm gemm;
  float x[4] = {}, y[4] = {};
  EXPECT_THROW(gemm({1, 1, 4, x, 4, x, DType::F16, 4, nullptr, y, 1, false}), std::invalid_argument);
  EXPECT_THROW(gemm({1, 1, 4, x, 2, x, DType::F32, 4, nullptr, y, 1, false}), std::invalid_argument);
}

struct AttentionCase {
  int64_t batch, q_len, kv_len, heads, kv_heads, head_dim;
  bool causal, masked;
};

// The ISA variants this CPU runs (the widest it lacks are skipped, not faked).
std::vector<Isa> runnable_isas() {
  std::vector<Isa> isas;
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512})
    if (isa_supported(isa)) isas.push_back(isa);
  return isas;
}

class AttentionTest : public ::testing::TestWithParam<AttentionCase> {};

// Small shapes reach every branch cheaply; the larger ones cross several 64-key tiles and
// 48-query blocks, with head sizes of the real models (64: encoder, 128: decoder) and masks that
// hide whole tiles (encoder padding) or the start of a row (left padding).
INSTANTIATE_TEST_SUITE_P(Shapes, AttentionTest,
                         ::testing::Values(AttentionCase{2, 9, 9, 4, 4, 16, false, true},       // encoder
                                           AttentionCase{2, 7, 7, 4, 2, 8, true, true},         // prefill, GQA
                                           AttentionCase{3, 1, 12, 6, 2, 12, true, true},       // decode step
                                           AttentionCase{1, 3, 10, 2, 1, 32, true, false},      // chunk after cache
                                           AttentionCase{2, 2, 75, 4, 2, 20, true, true},       // two-token step
                                           AttentionCase{2, 150, 150, 2, 2, 64, false, true},   // encoder tiles
                                           AttentionCase{2, 100, 170, 4, 2, 128, true, true},   // prefill after cache
                                           AttentionCase{1, 130, 130, 3, 1, 40, true, false},   // odd head size
                                           AttentionCase{1, 200, 200, 4, 2, 64, false, false},  // in place, GQA
                                           AttentionCase{2, 1, 300, 4, 4, 128, true, true},     // decode, long cache
                                           // decode steps whose keys and values are read ahead (BF16
                                           // caches under 128 KiB a head), and head sizes that leave
                                           // value sums of 4 + 1 vectors and a scalar tail
                                           AttentionCase{3, 1, 200, 4, 2, 128, true, true},
                                           AttentionCase{2, 1, 40, 4, 4, 72, true, true}));

// Keys and values hold exactly representable BF16 values, so the F32 and BF16 caches must give the
// same attention; the reference is computed in double.
void run_attention_case(const AttentionCase& c, DType kv_dtype, Isa isa) {
  SCOPED_TRACE(std::string(isa_name(isa)) + (kv_dtype == DType::BF16 ? " bf16" : " f32"));
  // q, out: [b, t, h, d]; k, v: [b, g, s, d] with spare rows per head (strides differ from sizes).
  const int64_t capacity = c.kv_len + 2;
  std::vector<float> q = random_values(c.batch * c.q_len * c.heads * c.head_dim, 5);
  std::vector<float> k = random_values(c.batch * c.kv_heads * capacity * c.head_dim, 6);
  std::vector<float> v = random_values(c.batch * c.kv_heads * capacity * c.head_dim, 7);
  for (float& value : k) value = bf16_to_float(float_to_bf16(value));
  for (float& value : v) value = bf16_to_float(float_to_bf16(value));
  std::vector<uint8_t> mask(c.batch * capacity, 1);
  if (c.masked) {
    for (int64_t b = 0; b < c.batch; ++b)
      for (int64_t s = 0; s < b + 1 && s < c.kv_len - 1; ++s) mask[b * capacity + s] = 0;  // left padding
    if (c.kv_len > 100) {
      // Row 1: a hidden stretch covering a whole tile (padding of an earlier chat turn); row 0: a
      // hidden tail (encoder padding of a short clip).
      for (int64_t s = 20; s < 90; ++s) mask[1 * capacity + s] = 0;
      for (int64_t s = c.kv_len - 70; s < c.kv_len; ++s) mask[s] = 0;
    }
    // A hidden key holding NaN must not reach any output.
    k[(0 * c.kv_heads + 0) * capacity * c.head_dim] = std::numeric_limits<float>::quiet_NaN();
    v[(0 * c.kv_heads + 0) * capacity * c.head_dim] = std::numeric_limits<float>::quiet_NaN();
  }
  const std::vector<uint16_t> k_bits = to_bf16(k), v_bits = to_bf16(v);
  std::vector<float> out(q.size(), -1.0f);
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  AttentionArgs args;
  args.batch = c.batch;
  args.q_len = c.q_len;
  args.kv_len = c.kv_len;
  args.num_heads = c.heads;
  args.num_kv_heads = c.kv_heads;
  args.head_dim = c.head_dim;
  args.q = q.data();
  args.q_batch_stride = c.q_len * c.heads * c.head_dim;
  args.q_row_stride = c.heads * c.head_dim;
  args.k = kv_dtype == DType::BF16 ? static_cast<const void*>(k_bits.data()) : k.data();
  args.v = kv_dtype == DType::BF16 ? static_cast<const void*>(v_bits.data()) : v.data();
  args.kv_dtype = kv_dtype;
  args.kv_batch_stride = c.kv_heads * capacity * c.head_dim;
  args.kv_head_stride = capacity * c.head_dim;
  args.kv_row_stride = c.head_dim;
  args.out = out.data();
  args.out_batch_stride = args.q_batch_stride;
  args.out_row_stride = args.q_row_stride;
  args.scale = scale;
  args.causal = c.causal;
  args.key_mask = mask.data();
  args.key_mask_stride = capacity;
  AttentionScratch scratch;
  attention(args, scratch, isa);

  std::vector<double> expected(out.size(), 0.0);
  const int64_t group = c.heads / c.kv_heads;
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t h = 0; h < c.heads; ++h) {
      for (int64_t t = 0; t < c.q_len; ++t) {
        const int64_t g = h / group;
        const float* query = &q[((b * c.q_len + t) * c.heads + h) * c.head_dim];
        std::vector<double> weights(c.kv_len, 0.0);
        double max_score = -INFINITY, total = 0.0;
        for (int64_t s = 0; s < c.kv_len; ++s) {
          const bool visible = mask[b * capacity + s] && (!c.causal || s <= c.kv_len - c.q_len + t);
          if (!visible) continue;
          double score = 0.0;
          for (int64_t d = 0; d < c.head_dim; ++d)
            score += static_cast<double>(query[d]) * k[((b * c.kv_heads + g) * capacity + s) * c.head_dim + d];
          weights[s] = score * scale;
          max_score = std::max(max_score, weights[s]);
        }
        for (int64_t s = 0; s < c.kv_len; ++s) {
          const bool visible = mask[b * capacity + s] && (!c.causal || s <= c.kv_len - c.q_len + t);
          weights[s] = visible ? std::exp(weights[s] - max_score) : 0.0;
          total += weights[s];
        }
        double* result = &expected[((b * c.q_len + t) * c.heads + h) * c.head_dim];
        for (int64_t s = 0; s < c.kv_len; ++s) {
          if (weights[s] == 0.0) continue;
          for (int64_t d = 0; d < c.head_dim; ++d)
            result[d] += weights[s] / total * v[((b * c.kv_heads + g) * capacity + s) * c.head_dim + d];
        }
      }
    }
  }
  EXPECT_LT(max_abs_diff(out, expected), 2e-5);
  // The same scratch serves a second call (no stale state from the first).
  std::vector<float> again(out.size(), -1.0f);
  args.out = again.data();
  attention(args, scratch, isa);
  EXPECT_EQ(again, out);
  // Reading decode steps' keys and values ahead changes when they are read, not the result.
  std::vector<float> without_read_ahead(out.size(), -1.0f);
  args.out = without_read_ahead.data();
  args.read_ahead = false;
  attention(args, scratch, isa);
  EXPECT_EQ(without_read_ahead, out);
}

TEST_P(AttentionTest, MatchesNaiveSoftmaxAttention) {
  for (Isa isa : runnable_isas()) {
    run_attention_case(GetParam(), DType::F32, isa);
    run_attention_case(GetParam(), DType::BF16, isa);
  }
}

TEST(Attention, ReportsSkippedVariants) {
  if (!isa_supported(Isa::Avx512)) GTEST_SKIP() << "this CPU has no AVX-512: that variant is compiled but not run";
}

TEST(Attention, RejectsBadShapesAndTypes) {
  float data[8] = {};
  AttentionArgs args;
  args.batch = args.q_len = args.kv_len = 1;
  args.num_heads = 3;
  args.num_kv_heads = 2;
  args.head_dim = 8;
  args.q = args.out = data;
  args.k = args.v = data;
  EXPECT_THROW(attention(args), std::invalid_argument);
  args.num_heads = 2;
  args.kv_dtype = DType::F16;
  EXPECT_THROW(attention(args), std::invalid_argument);
  args.kv_dtype = DType::F32;
  args.causal = true;
  args.q_len = 2;
  EXPECT_THROW(attention(args), std::invalid_argument);
}

TEST(Attention, QueryThatSeesNoKeyGetsZeros) {
  const int64_t head_dim = 4;
  std::vector<float> q(head_dim, 1.0f), k(2 * head_dim, 1.0f), v(2 * head_dim, 3.0f), out(head_dim, -1.0f);
  std::vector<uint8_t> mask = {0, 1};
  AttentionArgs args;
  args.batch = 1;
  args.q_len = 1;
  args.kv_len = 2;
  args.num_heads = args.num_kv_heads = 1;
  args.head_dim = head_dim;
  args.q = q.data();
  args.k = k.data();
  args.v = v.data();
  args.kv_row_stride = head_dim;
  args.out = out.data();
  args.causal = true;
  args.key_mask = mask.data();
  args.kv_len = 1;  // the query sits on key 0, which is padding
  attention(args);
  for (float value : out) EXPECT_EQ(value, 0.0f);
}

TEST(Norms, RmsNormMatchesDefinition) {
  // 67: every vector width leaves a tail; 4096: the decoder's width, where float sums lose digits.
  for (const int64_t dim : {int64_t{67}, int64_t{4096}}) {
    const int64_t rows = 5, ld = dim + 3;
    const std::vector<float> x = random_values(rows * ld, 8, 3.0f);
    const std::vector<float> weight = random_values(dim, 9);
    std::vector<double> expected(rows * dim);
    for (int64_t r = 0; r < rows; ++r) {
      double squares = 0.0;
      for (int64_t i = 0; i < dim; ++i) squares += static_cast<double>(x[r * ld + i]) * x[r * ld + i];
      const double inverse = 1.0 / std::sqrt(squares / dim + 1e-6);
      for (int64_t i = 0; i < dim; ++i) expected[r * dim + i] = weight[i] * x[r * ld + i] * inverse;
    }
    for (Isa isa : runnable_isas()) {
      SCOPED_TRACE(isa_name(isa));
      std::vector<float> out(rows * dim);
      rms_norm(x.data(), rows, dim, ld, weight.data(), 1e-6f, out.data(), dim, isa);
      EXPECT_LT(max_abs_diff(out, expected), 1e-5);
    }
  }
}

TEST(Norms, LayerNormMatchesDefinitionInPlace) {
  for (const int64_t dim : {int64_t{33}, int64_t{1280}}) {
    const int64_t rows = 4;
    std::vector<float> original = random_values(rows * dim, 10, 2.0f);
    for (float& value : original) value += 5.0f;  // a mean far from zero
    const std::vector<float> weight = random_values(dim, 11), bias = random_values(dim, 12);
    std::vector<double> expected(original.size());
    for (int64_t r = 0; r < rows; ++r) {
      double mean = 0.0, variance = 0.0;
      for (int64_t i = 0; i < dim; ++i) mean += original[r * dim + i];
      mean /= dim;
      for (int64_t i = 0; i < dim; ++i) variance += (original[r * dim + i] - mean) * (original[r * dim + i] - mean);
      variance /= dim;
      for (int64_t i = 0; i < dim; ++i)
        expected[r * dim + i] = (original[r * dim + i] - mean) / std::sqrt(variance + 1e-5) * weight[i] + bias[i];
    }
    for (Isa isa : runnable_isas()) {
      SCOPED_TRACE(isa_name(isa));
      std::vector<float> x = original;
      layer_norm(x.data(), rows, dim, dim, weight.data(), bias.data(), 1e-5f, x.data(), dim, isa);
      EXPECT_LT(max_abs_diff(x, expected), 1e-5);
    }
  }
}

TEST(Rope, RotatesHalvesByPositionTimesFrequency) {
  for (const int64_t head_dim : {int64_t{8}, int64_t{40}, int64_t{128}}) {
    const int64_t rows = 3, heads = 2, stride = heads * head_dim + 4;
    const std::vector<int64_t> positions = {0, 5, 1000};
    std::vector<float> cos(rows * head_dim / 2), sin(rows * head_dim / 2);
    rope_tables(positions.data(), rows, head_dim, 10000.0, cos.data(), sin.data());
    const std::vector<float> original = random_values(rows * stride, 13);
    std::vector<double> expected(original.begin(), original.end());
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t i = 0; i < head_dim / 2; ++i) {
          const double angle = positions[r] * std::pow(10000.0, -2.0 * i / head_dim);
          const double x1 = original[r * stride + h * head_dim + i];
          const double x2 = original[r * stride + h * head_dim + i + head_dim / 2];
          expected[r * stride + h * head_dim + i] = x1 * std::cos(angle) - x2 * std::sin(angle);
          expected[r * stride + h * head_dim + i + head_dim / 2] = x2 * std::cos(angle) + x1 * std::sin(angle);
        }
      }
    }
    for (Isa isa : runnable_isas()) {
      SCOPED_TRACE(std::string(isa_name(isa)) + " head_dim " + std::to_string(head_dim));
      std::vector<float> x = original;
      apply_rope(x.data(), rows, heads, head_dim, stride, cos.data(), sin.data(), isa);
      // Position 1000 in float32 angles, as the reference computes them, leaves ~1e-4 of phase.
      EXPECT_LT(max_abs_diff(x, expected), 5e-4);
      EXPECT_EQ(x[0], original[0]);                                        // position 0 is the identity
      EXPECT_EQ(x[heads * head_dim + 1], original[heads * head_dim + 1]);  // the padding is untouched
    }
  }
}

// Inputs spanning where GELU and SiLU bend, saturate and underflow, plus signed zeros; an odd count
// so every vector width ends on a tail.
std::vector<float> activation_inputs() {
  std::vector<float> x = {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-6f, -1e-6f, 40.0f, -40.0f, 100.0f, -100.0f, 1e4f, -1e4f};
  for (int i = 0; i <= 4000; ++i) x.push_back(-12.0f + 24.0f * static_cast<float>(i) / 4000.0f);
  const std::vector<float> random = random_values(1001, 17, 3.0f);
  x.insert(x.end(), random.begin(), random.end());
  return x;
}

TEST(Elementwise, GeluMatchesErfDefinition) {
  const std::vector<float> original = activation_inputs();
  for (Isa isa : runnable_isas()) {
    SCOPED_TRACE(isa_name(isa));
    std::vector<float> x = original;
    gelu_erf(x.data(), static_cast<int64_t>(x.size()), isa);
    for (size_t i = 0; i < x.size(); ++i) {
      const double v = original[i];
      const double expected = 0.5 * v * std::erfc(-v / std::sqrt(2.0));  // erfc: exact where 1 + erf cancels
      // A few float ulps relative; below x = -5 the float rounding of z^2 = x^2 / 2 inside
      // exp(-z^2) grows the relative error as x^2 (values there are under 1e-6, and float's own
      // 1 + erf formula, the reference's, gives 0). Plus a floor for results below float's range.
      ASSERT_NEAR(x[i], expected, (1e-6 + 6e-8 * v * v) * std::abs(expected) + 1e-37) << "x = " << v;
    }
    EXPECT_TRUE(std::signbit(x[1]) || x[1] == 0.0f);
  }
}

TEST(Elementwise, SiluMulMatchesDefinition) {
  const std::vector<float> gate = activation_inputs();
  const std::vector<float> up = random_values(gate.size(), 18);
  for (Isa isa : runnable_isas()) {
    SCOPED_TRACE(isa_name(isa));
    std::vector<float> out(gate.size());
    silu_mul(gate.data(), up.data(), out.data(), static_cast<int64_t>(gate.size()), isa);
    for (size_t i = 0; i < gate.size(); ++i) {
      const double expected = gate[i] / (1.0 + std::exp(-static_cast<double>(gate[i]))) * up[i];
      ASSERT_NEAR(out[i], expected, 1e-6 * std::abs(expected) + 1e-37) << "gate = " << gate[i];
    }
    std::vector<float> aliased = gate;  // out may alias gate
    silu_mul(aliased.data(), up.data(), aliased.data(), static_cast<int64_t>(gate.size()), isa);
    EXPECT_EQ(aliased, out);
  }
}

TEST(Elementwise, AddRows) {
  std::vector<float> y = {1.0f, 2.0f, 0.0f, 3.0f, 4.0f, 0.0f};  // 2 rows of 2, stride 3
  const std::vector<float> add = {10.0f, 20.0f, 30.0f, 40.0f};
  add_rows(y.data(), 3, add.data(), 2, 2, 2);
  EXPECT_EQ(y, (std::vector<float>{11.0f, 22.0f, 0.0f, 33.0f, 44.0f, 0.0f}));
}

TEST(Conv1d, Im2colPlusGemmMatchesDirectConvolution) {
  const int64_t channels = 5, length = 11, out_channels = 3, kernel = 3;
  for (int64_t stride : {1, 2}) {
    const int64_t out_length = conv1d_output_length(length, kernel, stride, 1);
    EXPECT_EQ(out_length, (length + 2 - kernel) / stride + 1);
    const std::vector<float> x = random_values(channels * length, 14);  // channel-major [c, t]
    const std::vector<float> w = random_values(out_channels * channels * kernel, 15);
    const std::vector<float> bias = random_values(out_channels, 16);
    std::vector<float> columns(out_length * channels * kernel), y(out_length * out_channels);
    im2col_1d(x.data(), channels, length, length, 1, kernel, stride, 1, columns.data());
    Gemm gemm;
    gemm({out_length, out_channels, channels * kernel, columns.data(), channels * kernel, w.data(), DType::F32,
          channels * kernel, bias.data(), y.data(), out_channels, false});
    std::vector<double> expected(y.size());
    for (int64_t t = 0; t < out_length; ++t) {
      for (int64_t o = 0; o < out_channels; ++o) {
        double sum = bias[o];
        for (int64_t c = 0; c < channels; ++c)
          for (int64_t i = 0; i < kernel; ++i) {
            const int64_t s = t * stride + i - 1;
            if (s >= 0 && s < length)
              sum += static_cast<double>(w[(o * channels + c) * kernel + i]) * x[c * length + s];
          }
        expected[t * out_channels + o] = sum;
      }
    }
    EXPECT_LT(max_abs_diff(y, expected), 1e-5);
  }
}

TEST(Pool, AveragesPairsOfRowsAndDropsAnOddLastRow) {
  const std::vector<float> x = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};  // 5 rows of 2
  std::vector<float> out(4, -1.0f);
  avg_pool_rows(x.data(), 5, 2, 2, 2, 2, out.data(), 2);
  EXPECT_EQ(out, (std::vector<float>{2, 3, 6, 7}));
}

TEST(Embedding, GathersFloat32AndBf16Rows) {
  const std::vector<float> table = {0, 1, 10, 11, 20, 21};
  const std::vector<uint16_t> bits = to_bf16(table);
  const std::vector<int64_t> ids = {2, 0, 2};
  std::vector<float> out(6), out16(6);
  embedding_lookup(table.data(), DType::F32, 2, 2, ids.data(), 3, out.data(), 2);
  embedding_lookup(bits.data(), DType::BF16, 2, 2, ids.data(), 3, out16.data(), 2);
  EXPECT_EQ(out, (std::vector<float>{20, 21, 0, 1, 20, 21}));
  EXPECT_EQ(out16, out);
}

TEST(Reduce, ArgmaxTakesTheFirstMaximum) {
  const std::vector<float> x = {1.0f, 5.0f, -2.0f, 5.0f};
  EXPECT_EQ(argmax(x.data(), 4), 1);
}

TEST(Reduce, LogSumExpIsStableAndExact) {
  // Large values would overflow a naive sum of exponentials.
  const std::vector<float> x = {1000.0f, 1000.0f, -INFINITY};
  EXPECT_NEAR(log_sum_exp(x.data(), 3), 1000.0 + std::log(2.0), 1e-9);
  const std::vector<float> small = {0.5f, -1.25f, 3.0f};
  const double expected = std::log(std::exp(0.5) + std::exp(-1.25) + std::exp(3.0));
  EXPECT_NEAR(log_sum_exp(small.data(), 3), expected, 1e-6);
  const std::vector<float> removed = {-INFINITY, -INFINITY};
  EXPECT_EQ(log_sum_exp(removed.data(), 2), -INFINITY);
  const std::vector<float> nan = {0.0f, NAN};
  EXPECT_TRUE(std::isnan(log_sum_exp(nan.data(), 2)));
}

}  // namespace
}  // namespace qwen2audio::kernels
