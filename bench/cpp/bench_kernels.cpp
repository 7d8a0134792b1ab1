// Kernel micro-benchmarks at the real Qwen2-Audio-7B shapes, each beside its baseline in the same
// run: attention against the straightforward kernel it replaced (one query at a time, scalar exp),
// the engine's GEMM against oneDNN's own matmul on the same problem (weights in oneDNN's preferred
// layout, reordered outside the timing), and the vectorised elementwise ops against plain loops
// over the C library's erf/exp. Build with -DQWEN2AUDIO_BUILD_BENCH=ON; run
//   build/<dir>/bench/cpp/bench_kernels --benchmark_counters_tabular=true
// Counters: GFLOP/s for products (2 flops per multiply-add, attention counts QK^T and PV over the
// keys each query sees), GB/s of data touched for the memory-bound ops.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <oneapi/dnnl/dnnl.hpp>
#include <random>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "bench/cpp/simd.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemv.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/quantized_gemm.h"
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

// ---------------------------------------------------------------- attention

// The kernel this project shipped before the tiled one (same loops, same helpers): per query, a
// dot product per key, scalar exp, weighted sum of values. Kept here as the baseline.
void previous_attention(const AttentionArgs& args) {
  const int64_t group = args.num_heads / args.num_kv_heads;
  const int64_t offset = args.kv_len - args.q_len;
  const int64_t dim = args.head_dim;
  const auto* keys_base = static_cast<const float*>(args.k);
  const auto* values_base = static_cast<const float*>(args.v);
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(args.kv_len));
#pragma omp for collapse(3) schedule(static)
    for (int64_t b = 0; b < args.batch; ++b) {
      for (int64_t h = 0; h < args.num_heads; ++h) {
        for (int64_t t = 0; t < args.q_len; ++t) {
          const float* q = args.q + b * args.q_batch_stride + t * args.q_row_stride + h * dim;
          float* out = args.out + b * args.out_batch_stride + t * args.out_row_stride + h * dim;
          const int64_t g = h / group;
          const float* keys = keys_base + b * args.kv_batch_stride + g * args.kv_head_stride;
          const float* values = values_base + b * args.kv_batch_stride + g * args.kv_head_stride;
          const uint8_t* mask = args.key_mask ? args.key_mask + b * args.key_mask_stride : nullptr;
          const int64_t visible = args.causal ? offset + t + 1 : args.kv_len;
          float max_score = -std::numeric_limits<float>::infinity();
          for (int64_t s = 0; s < visible; ++s) {
            if (mask && !mask[s]) {
              scores[s] = -std::numeric_limits<float>::infinity();
              continue;
            }
            scores[s] = simd::dot(q, keys + s * args.kv_row_stride, dim) * args.scale;
            max_score = std::max(max_score, scores[s]);
          }
          std::fill_n(out, dim, 0.0f);
          float total = 0.0f;
          for (int64_t s = 0; s < visible; ++s) {
            if (mask && !mask[s]) continue;
            const float weight = std::exp(scores[s] - max_score);
            total += weight;
            simd::axpy(weight, values + s * args.kv_row_stride, out, dim);
          }
          for (int64_t d = 0; d < dim; ++d) out[d] /= total;
        }
      }
    }
  }
}

struct AttentionProblem {
  std::vector<float> q, k, v, out;
  std::vector<uint16_t> k_bits, v_bits;
  std::vector<uint8_t> mask;
  AttentionArgs args;
  double flops = 0;

  // layout "encoder": q/k/v rows of all heads [s, heads * dim]; "cache": [kv_heads, s, dim].
  AttentionProblem(int64_t q_len, int64_t kv_len, int64_t heads, int64_t dim, bool causal, bool encoder_layout,
                   int64_t attended, DType kv_dtype) {
    q = random_values(q_len * heads * dim, 1);
    k = random_values(kv_len * heads * dim, 2);
    v = random_values(kv_len * heads * dim, 3);
    out.assign(q.size(), 0.0f);
    mask.assign(kv_len, 0);
    std::fill_n(mask.begin(), attended, 1);
    for (float value : k) k_bits.push_back(float_to_bf16(value));
    for (float value : v) v_bits.push_back(float_to_bf16(value));
    args.batch = 1;
    args.q_len = q_len;
    args.kv_len = kv_len;
    args.num_heads = args.num_kv_heads = heads;
    args.head_dim = dim;
    args.q = q.data();
    args.q_row_stride = heads * dim;
    args.q_batch_stride = q_len * heads * dim;
    args.kv_dtype = kv_dtype;
    args.k = kv_dtype == DType::BF16 ? static_cast<const void*>(k_bits.data()) : k.data();
    args.v = kv_dtype == DType::BF16 ? static_cast<const void*>(v_bits.data()) : v.data();
    args.kv_batch_stride = kv_len * heads * dim;
    args.kv_head_stride = encoder_layout ? dim : kv_len * dim;
    args.kv_row_stride = encoder_layout ? heads * dim : dim;
    args.out = out.data();
    args.out_row_stride = heads * dim;
    args.out_batch_stride = q_len * heads * dim;
    args.scale = 1.0f / std::sqrt(static_cast<float>(dim));
    args.causal = causal;
    args.key_mask = mask.data();
    args.key_mask_stride = kv_len;
    for (int64_t t = 0; t < q_len; ++t) {
      const int64_t seen = causal ? std::min(kv_len - q_len + t + 1, attended) : attended;
      flops += 4.0 * static_cast<double>(seen) * dim * heads;
    }
  }
};

enum class AttentionShape { kEncoder, kEncoderShortClip, kPrefill, kDecode, kDecodeBf16 };

AttentionProblem make_attention(AttentionShape shape) {
  switch (shape) {
    case AttentionShape::kEncoder:  // 30 s of audio: 1500 frames, 20 heads of 64
      return AttentionProblem(1500, 1500, 20, 64, false, true, 1500, DType::F32);
    case AttentionShape::kEncoderShortClip:  // a 5 s clip padded to 30 s: 250 frames attended
      return AttentionProblem(1500, 1500, 20, 64, false, true, 250, DType::F32);
    case AttentionShape::kPrefill:  // 800 prompt tokens, 32 heads of 128, causal
      return AttentionProblem(800, 800, 32, 128, true, false, 800, DType::F32);
    case AttentionShape::kDecode:  // one token over a 1k cache
      return AttentionProblem(1, 1024, 32, 128, true, false, 1024, DType::F32);
    case AttentionShape::kDecodeBf16:
      return AttentionProblem(1, 1024, 32, 128, true, false, 1024, DType::BF16);
  }
  return AttentionProblem(1, 1, 1, 1, false, false, 1, DType::F32);
}

const char* kAttentionNames[] = {"encoder_1500", "encoder_5s_clip", "prefill_800", "decode_1k", "decode_1k_bf16kv"};

void BM_Attention(benchmark::State& state) {
  const auto shape = static_cast<AttentionShape>(state.range(0));
  const bool previous = state.range(1) != 0;
  const auto isa = static_cast<Isa>(state.range(2));
  if (!isa_supported(isa)) {
    state.SkipWithError("ISA not available on this CPU");
    return;
  }
  AttentionProblem problem = make_attention(shape);
  if (previous && problem.args.kv_dtype != DType::F32) {
    state.SkipWithError("the previous kernel had no BF16 cache");
    return;
  }
  AttentionScratch scratch;
  for (auto _ : state) {
    if (previous)
      previous_attention(problem.args);
    else
      attention(problem.args, scratch, isa);
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(problem.flops * 1e-9 * state.iterations(), benchmark::Counter::kIsRate);
  state.SetLabel(kAttentionNames[state.range(0)]);
}

void attention_arguments(benchmark::internal::Benchmark* bench) {
  bench->ArgNames({"shape", "previous", "isa"});
  for (int shape = 0; shape < 5; ++shape) {
    for (int isa : {static_cast<int>(Isa::Avx512), static_cast<int>(Isa::Avx2), static_cast<int>(Isa::Scalar)})
      bench->Args({shape, 0, isa});
    bench->Args({shape, 1, static_cast<int>(Isa::Scalar)});
  }
}
BENCHMARK(BM_Attention)->Apply(attention_arguments)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---------------------------------------------------------------- GEMM

struct GemmShape {
  const char* name;
  int64_t m, n, k;
};
const GemmShape kGemmShapes[] = {
    {"enc_qkvo_1500x1280x1280", 1500, 1280, 1280}, {"enc_fc1_1500x5120x1280", 1500, 5120, 1280},
    {"enc_fc2_1500x1280x5120", 1500, 1280, 5120},  {"pre_qkvo_800x4096x4096", 800, 4096, 4096},
    {"pre_up_800x11008x4096", 800, 11008, 4096},   {"pre_down_800x4096x11008", 800, 4096, 11008},
};

// 0: the engine's Gemm, F32 weights; 1: the engine's Gemm, BF16 weights (inputs rounded to BF16);
// 2: oneDNN f32 matmul, weights reordered to its preferred layout; 3: oneDNN bf16 matmul (bf16
// source and weights, f32 output), skipped where oneDNN has no implementation for this CPU.
void BM_Gemm(benchmark::State& state) {
  const GemmShape& shape = kGemmShapes[state.range(0)];
  const int variant = static_cast<int>(state.range(1));
  std::vector<float> x = random_values(shape.m * shape.k, 1);
  std::vector<float> w = random_values(shape.n * shape.k, 2, 0.05f);
  std::vector<float> bias = random_values(shape.n, 3);
  std::vector<float> y(shape.m * shape.n);
  if (variant < 2) {
    std::vector<uint16_t> w_bits;
    if (variant == 1)
      for (float value : w) w_bits.push_back(float_to_bf16(value));
    Gemm gemm;
    GemmArgs args{shape.m,
                  shape.n,
                  shape.k,
                  x.data(),
                  shape.k,
                  variant == 1 ? static_cast<const void*>(w_bits.data()) : w.data(),
                  variant == 1 ? DType::BF16 : DType::F32,
                  shape.k,
                  bias.data(),
                  y.data(),
                  shape.n,
                  false};
    gemm(args);  // primitive creation outside the timing
    for (auto _ : state) {
      gemm(args);
      benchmark::ClobberMemory();
    }
  } else {
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    const bool bf16 = variant == 3;
    const dt input_type = bf16 ? dt::bf16 : dt::f32;
    std::vector<uint16_t> x_bits, w_bits;
    if (bf16) {
      for (float value : x) x_bits.push_back(float_to_bf16(value));
      for (float value : w) w_bits.push_back(float_to_bf16(value));
    }
    dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    dnnl::stream stream(engine);
    const dnnl::memory::desc src({shape.m, shape.k}, input_type, tag::ab);
    const dnnl::memory::desc weights_any({shape.k, shape.n}, input_type, tag::any);
    const dnnl::memory::desc weights_plain({shape.k, shape.n}, input_type, tag::ba);
    const dnnl::memory::desc bias_desc({1, shape.n}, dt::f32, tag::ab);
    const dnnl::memory::desc dst({shape.m, shape.n}, dt::f32, tag::ab);
    dnnl::matmul::primitive_desc descriptor;
    try {
      descriptor = dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights_any, bias_desc, dst), engine);
    } catch (const dnnl::error&) {
      state.SkipWithError("oneDNN has no matmul for these types on this CPU");
      return;
    }
    if (bf16 && std::string(descriptor.impl_info_str()).find("ref") != std::string::npos) {
      state.SkipWithError("oneDNN offers only its reference bf16 matmul on this CPU");
      return;
    }
    dnnl::memory plain(weights_plain, engine, bf16 ? static_cast<void*>(w_bits.data()) : w.data());
    dnnl::memory blocked(descriptor.weights_desc(), engine);
    dnnl::reorder(plain, blocked).execute(stream, plain, blocked);
    dnnl::matmul matmul(descriptor);
    dnnl::memory src_memory(src, engine, bf16 ? static_cast<void*>(x_bits.data()) : x.data()),
        bias_memory(bias_desc, engine, bias.data()), dst_memory(dst, engine, y.data());
    std::unordered_map<int, dnnl::memory> arguments{{DNNL_ARG_SRC, src_memory},
                                                    {DNNL_ARG_WEIGHTS, blocked},
                                                    {DNNL_ARG_BIAS, bias_memory},
                                                    {DNNL_ARG_DST, dst_memory}};
    matmul.execute(stream, arguments);
    stream.wait();
    for (auto _ : state) {
      matmul.execute(stream, arguments);
      stream.wait();
    }
    state.SetLabel(descriptor.impl_info_str());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * shape.m * shape.n * shape.k * 1e-9 * state.iterations(), benchmark::Counter::kIsRate);
}

void gemm_arguments(benchmark::internal::Benchmark* bench) {
  bench->ArgNames({"shape", "variant"});
  for (int shape = 0; shape < 6; ++shape)
    for (int variant : {2, 3, 0, 1}) bench->Args({shape, variant});
}
BENCHMARK(BM_Gemm)->Apply(gemm_arguments)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---------------------------------------------------------------- whole layers

// One layer's products as oneDNN f32 matmuls with weights in its preferred layout (reordered once,
// outside the timing): the throughput our layers are measured against.
class OnednnProducts {
 public:
  // Each (m, n, k): y[m, n] = x[m, k] w^T + bias, in float32; with `type` bf16 the inputs and
  // weights are BF16 (f32 out), with s8 the inputs are u8 and the weights s8 (s32 out, no bias): the
  // precisions of the engine's BF16 and integer products. Inputs are given in the type, so only
  // the product is timed.
  explicit OnednnProducts(const std::vector<std::array<int64_t, 3>>& shapes,
                          dnnl::memory::data_type type = dnnl::memory::data_type::f32)
      : engine_(dnnl::engine::kind::cpu, 0) {
    using dt = dnnl::memory::data_type;
    using tag = dnnl::memory::format_tag;
    dnnl::stream stream(engine_);
    const bool integer = type == dt::s8;
    const dt src_type = integer ? dt::u8 : type, dst_type = integer ? dt::s32 : dt::f32;
    const size_t element = type == dt::f32 ? 4 : type == dt::bf16 ? 2 : 1;
    for (const auto& [m, n, k] : shapes) {
      Product product;
      product.x.assign(static_cast<size_t>(m * k) * element, 0x3c);  // valid in every type (bf16 0.0115)
      product.w = random_values(n * k, 2, 0.05f);
      product.w_typed.resize(static_cast<size_t>(n * k) * element);
      for (int64_t i = 0; i < n * k; ++i) {
        if (type == dt::f32) std::memcpy(&product.w_typed[4 * i], &product.w[i], 4);
        if (type == dt::bf16) {
          const uint16_t bits = float_to_bf16(product.w[i]);
          std::memcpy(&product.w_typed[2 * i], &bits, 2);
        }
        if (integer)
          product.w_typed[i] = static_cast<uint8_t>(static_cast<int8_t>(std::lround(product.w[i] * 1000) % 127));
      }
      product.bias = random_values(n, 3);
      product.y.assign(static_cast<size_t>(m * n), 0.0f);
      const dnnl::memory::desc src({m, k}, src_type, tag::ab), bias({1, n}, dt::f32, tag::ab),
          dst({m, n}, dst_type, tag::ab);
      const dnnl::memory::desc weights({k, n}, type, tag::any);
      dnnl::matmul::primitive_desc descriptor =
          integer ? dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, dst), engine_)
                  : dnnl::matmul::primitive_desc(dnnl::matmul::desc(src, weights, bias, dst), engine_);
      dnnl::memory plain(dnnl::memory::desc({k, n}, type, tag::ba), engine_, product.w_typed.data());
      dnnl::memory blocked(descriptor.weights_desc(), engine_);
      dnnl::reorder(plain, blocked).execute(stream, plain, blocked);
      product.matmul = dnnl::matmul(descriptor);
      product.implementation = descriptor.impl_info_str();
      product.arguments = {{DNNL_ARG_SRC, dnnl::memory(src, engine_, product.x.data())},
                           {DNNL_ARG_WEIGHTS, blocked},
                           {DNNL_ARG_DST, dnnl::memory(dst, engine_, product.y.data())}};
      if (!integer) product.arguments.emplace(DNNL_ARG_BIAS, dnnl::memory(bias, engine_, product.bias.data()));
      flops_ += 2.0 * m * n * k;
      products_.push_back(std::move(product));
    }
    stream.wait();
  }
  // oneDNN's implementation of the first product (e.g. "brg:avx512_core_bf16"): reference ones are slow.
  const std::string& implementation() const { return products_.front().implementation; }
  void run() {
    dnnl::stream stream(engine_);
    for (Product& product : products_) product.matmul.execute(stream, product.arguments);
    stream.wait();
  }
  double flops() const { return flops_; }

 private:
  struct Product {
    std::vector<uint8_t> x, w_typed;
    std::vector<float> w, bias, y;
    std::string implementation;
    dnnl::matmul matmul;
    std::unordered_map<int, dnnl::memory> arguments;
  };
  dnnl::engine engine_;
  std::vector<Product> products_;
  double flops_ = 0;
};

// The layer benchmarks' variant 2: only the layer's products, as oneDNN matmuls.
void time_onednn_products(benchmark::State& state, const std::vector<std::array<int64_t, 3>>& shapes) {
  OnednnProducts products(shapes);
  products.run();
  for (auto _ : state) products.run();
  state.counters["GFLOP/s"] =
      benchmark::Counter(products.flops() * 1e-9 * state.iterations(), benchmark::Counter::kIsRate);
  state.SetLabel("oneDNN products only");
}

// The products of one layer, as the engine runs them (kernels::linear: BF16 weights through the Gemm,
// int8/int4 weights in the integer kernels' panels) and as oneDNN's own matmuls in the same
// precision (BF16, or u8 x s8 for the integer products), weights in its preferred layout. Shape sets:
// 0 the encoder layer for a 5 s clip (250 positions), 1 for 30 s (1500), 2 a decoder layer's prefill
// of a 10 s clip's prompt (290 tokens), 3 the same for four 30 s clips' prompts batched (3120 tokens). Variants: 0
// oneDNN f32, 1 oneDNN bf16, 2 oneDNN u8 x s8, 3 engine bf16, 4 engine int8, 5 engine int4.
std::vector<std::array<int64_t, 3>> product_shapes(int set) {
  if (set >= 2) {
    const int64_t t = set == 2 ? 290 : 3120, h = 4096, inter = 11008;
    return {{t, h, h}, {t, h, h}, {t, h, h}, {t, h, h}, {t, inter, h}, {t, inter, h}, {t, h, inter}};
  }
  const int64_t rows = set == 0 ? 250 : 1500, d = 1280, ffn = 5120;
  return {{rows, d, d}, {rows, d, d}, {rows, d, d}, {rows, d, d}, {rows, ffn, d}, {rows, d, ffn}};
}

void BM_Products(benchmark::State& state) {
  const auto shapes = product_shapes(static_cast<int>(state.range(0)));
  const int variant = static_cast<int>(state.range(1));
  static const char* kSets[] = {"encoder 5 s", "encoder 30 s", "prefill 290", "prefill 3120"};
  const std::string set = kSets[state.range(0)];
  double flops = 0;
  for (const auto& [m, n, k] : shapes) flops += 2.0 * m * n * k;
  if (variant <= 2) {
    using dt = dnnl::memory::data_type;
    const dt type = variant == 0 ? dt::f32 : variant == 1 ? dt::bf16 : dt::s8;
    try {
      OnednnProducts products(shapes, type);
      products.run();
      for (auto _ : state) products.run();
      state.SetLabel(set + ", oneDNN " +
                     (variant == 0   ? "f32"
                      : variant == 1 ? "bf16"
                                     : "u8 x s8") +
                     " (" + products.implementation() + ")");
    } catch (const dnnl::error&) {
      state.SkipWithError("oneDNN has no such matmul on this CPU");
      return;
    }
  } else {
    struct Layer {
      std::vector<uint16_t> bf16;
      std::vector<uint8_t> codes;
      std::vector<float> scales, bias;
      PackedPanels panels;
      Linear linear;
    };
    std::vector<Layer> layers(shapes.size());
    const WeightFormat format = variant == 3   ? WeightFormat::BF16
                                : variant == 4 ? WeightFormat::Int8
                                               : WeightFormat::Int4;
    if (format != WeightFormat::BF16 && !panels_supported(best_isa())) {
      state.SkipWithError("no integer kernels on this CPU");
      return;
    }
    int64_t largest = 0;
    for (size_t i = 0; i < shapes.size(); ++i) {
      const auto [m, n, k] = shapes[i];
      largest = std::max(largest, std::max(m * k, m * n));
      Layer& layer = layers[i];
      const std::vector<float> w = random_values(n * k, 2, 0.05f);
      layer.bias = random_values(n, 3);
      layer.linear.out_features = n;
      layer.linear.in_features = k;
      layer.linear.bias = layer.bias.data();
      if (format == WeightFormat::BF16) {
        for (float value : w) layer.bf16.push_back(float_to_bf16(value));
        layer.linear.weight = WeightMatrix{format, layer.bf16.data(), k};
      } else {
        layer.codes.resize(static_cast<size_t>(n * weight_row_bytes(format, k)));
        layer.scales.resize(static_cast<size_t>(n * scale_groups(k, 128)));
        quantize_rows(w.data(), DType::F32, k, n, k, format, 128, layer.codes.data(), layer.scales.data());
        layer.panels = pack_panels(
            WeightMatrix{format, layer.codes.data(), k, layer.scales.data(), scale_groups(k, 128), 128}, n, k);
        layer.linear.weight = layer.panels.view;
      }
    }
    const std::vector<float> x = random_values(largest, 4);
    std::vector<float> y(largest);
    Gemm gemm;
    auto run = [&] {
      for (size_t i = 0; i < shapes.size(); ++i)
        linear(gemm, layers[i].linear, x.data(), std::get<0>(shapes[i]), std::get<2>(shapes[i]), y.data(),
               std::get<1>(shapes[i]));
    };
    run();
    for (auto _ : state) run();
    state.SetLabel(set + ", engine " + weight_format_name(format));
  }
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9 * state.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Products)
    ->ArgNames({"set", "variant"})
    ->ArgsProduct({{0, 1, 2, 3}, {0, 1, 2, 3, 4, 5}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// Times one run of `layer` per iteration after an untimed one; `flops` is one run's work.
template <typename Layer>
void time_layer(benchmark::State& state, Layer& layer, double flops, const char* label) {
  layer();
  for (auto _ : state) {
    layer();
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9 * state.iterations(), benchmark::Counter::kIsRate);
  state.SetLabel(label);
}

// Weights of one linear layer in both storages.
struct LinearWeights {
  int64_t n, k;
  std::vector<float> w, bias;
  std::vector<uint16_t> w_bits;
  LinearWeights(int64_t n_, int64_t k_, bool with_bias, uint32_t seed) : n(n_), k(k_) {
    w = random_values(n * k, seed, 0.02f);
    for (float& value : w) value = bf16_to_float(float_to_bf16(value));
    for (float value : w) w_bits.push_back(float_to_bf16(value));
    if (with_bias) bias = random_values(n, seed + 1, 0.02f);
  }
  void apply(Gemm& gemm, bool bf16, const float* x, int64_t m, float* y, int64_t ldy, bool accumulate) const {
    gemm({m, n, k, x, k, bf16 ? static_cast<const void*>(w_bits.data()) : w.data(), bf16 ? DType::BF16 : DType::F32, k,
          bias.empty() ? nullptr : bias.data(), y, ldy, accumulate});
  }
};

// The encoder layer at 30 s of audio (1500 frames, d 1280, 20 heads, ffn 5120), as the engine runs
// it: LayerNorm, q/k/v, attention, out_proj (+ residual), LayerNorm, fc1, GELU, fc2 (+ residual).
// variant 0: F32 weights; 1: BF16 weights; 2: only its six products, as oneDNN matmuls.
void BM_EncoderLayer(benchmark::State& state) {
  constexpr int64_t frames = 1500, d = 1280, heads = 20, ffn = 5120;
  const int variant = static_cast<int>(state.range(0));
  const double attention_flops = 4.0 * frames * frames * d;
  if (variant == 2) {
    time_onednn_products(
        state, {{frames, d, d}, {frames, d, d}, {frames, d, d}, {frames, d, d}, {frames, ffn, d}, {frames, d, ffn}});
    return;
  }
  const bool bf16 = variant == 1;
  const LinearWeights q(d, d, true, 10), k(d, d, false, 20), v(d, d, true, 30), out(d, d, true, 40),
      fc1(ffn, d, true, 50), fc2(d, ffn, true, 60);
  const std::vector<float> ones(d, 1.0f), zeros(d, 0.0f);
  std::vector<float> hidden = random_values(frames * d, 70), normed(frames * d), qs(frames * d), ks(frames * d),
                     vs(frames * d), attended(frames * d), hiddens(frames * ffn);
  std::vector<uint8_t> mask(frames, 1);
  Gemm gemm;
  AttentionScratch scratch;
  AttentionArgs args;
  args.batch = 1;
  args.q_len = args.kv_len = frames;
  args.num_heads = args.num_kv_heads = heads;
  args.head_dim = d / heads;
  args.q = qs.data();
  args.q_batch_stride = frames * d;
  args.q_row_stride = d;
  args.k = ks.data();
  args.v = vs.data();
  args.kv_batch_stride = frames * d;
  args.kv_head_stride = d / heads;
  args.kv_row_stride = d;
  args.out = attended.data();
  args.out_batch_stride = frames * d;
  args.out_row_stride = d;
  args.scale = 0.125f;
  args.key_mask = mask.data();
  args.key_mask_stride = frames;
  auto layer = [&] {
    layer_norm(hidden.data(), frames, d, d, ones.data(), zeros.data(), 1e-5f, normed.data(), d);
    q.apply(gemm, bf16, normed.data(), frames, qs.data(), d, false);
    k.apply(gemm, bf16, normed.data(), frames, ks.data(), d, false);
    v.apply(gemm, bf16, normed.data(), frames, vs.data(), d, false);
    attention(args, scratch);
    out.apply(gemm, bf16, attended.data(), frames, hidden.data(), d, true);
    layer_norm(hidden.data(), frames, d, d, ones.data(), zeros.data(), 1e-5f, normed.data(), d);
    fc1.apply(gemm, bf16, normed.data(), frames, hiddens.data(), ffn, false);
    gelu_erf(hiddens.data(), frames * ffn);
    fc2.apply(gemm, bf16, hiddens.data(), frames, hidden.data(), d, true);
  };
  time_layer(state, layer, 2.0 * frames * d * (4 * d + 2 * ffn) + attention_flops,
             bf16 ? "engine, BF16 weights" : "engine, F32 weights");
}
BENCHMARK(BM_EncoderLayer)->ArgName("variant")->Arg(2)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// A decoder layer's prefill of 800 tokens (hidden 4096, 32 heads of 128, intermediate 11008), as
// the engine runs it, with the keys and values stored in a cache of the layer's dtype. Variants as
// above.
void BM_PrefillLayer(benchmark::State& state) {
  constexpr int64_t tokens = 800, hidden_size = 4096, heads = 32, head_dim = 128, inter = 11008;
  const int variant = static_cast<int>(state.range(0));
  double attention_flops = 0;
  for (int64_t t = 0; t < tokens; ++t) attention_flops += 4.0 * (t + 1) * head_dim * heads;
  if (variant == 2) {
    time_onednn_products(state, {{tokens, hidden_size, hidden_size},
                                 {tokens, hidden_size, hidden_size},
                                 {tokens, hidden_size, hidden_size},
                                 {tokens, hidden_size, hidden_size},
                                 {tokens, inter, hidden_size},
                                 {tokens, inter, hidden_size},
                                 {tokens, hidden_size, inter}});
    return;
  }
  const bool bf16 = variant == 1;
  const LinearWeights q(hidden_size, hidden_size, true, 10), k(hidden_size, hidden_size, true, 20),
      v(hidden_size, hidden_size, true, 30), o(hidden_size, hidden_size, false, 40),
      gate(inter, hidden_size, false, 50), up(inter, hidden_size, false, 60), down(hidden_size, inter, false, 70);
  const std::vector<float> ones(hidden_size, 1.0f);
  std::vector<float> hidden = random_values(tokens * hidden_size, 80), normed(tokens * hidden_size),
                     qs(tokens * hidden_size), ks(tokens * hidden_size), vs(tokens * hidden_size),
                     attended(tokens * hidden_size), gates(tokens * inter), ups(tokens * inter),
                     cos(tokens * head_dim / 2), sin(tokens * head_dim / 2);
  std::vector<int64_t> positions(tokens);
  for (int64_t t = 0; t < tokens; ++t) positions[t] = t;
  rope_tables(positions.data(), tokens, head_dim, 1e6, cos.data(), sin.data());
  // The cache layout [kv_head, slot, head_dim], as model/kv_cache.h keeps it.
  const size_t cache_elements = static_cast<size_t>(heads * tokens * head_dim);
  std::vector<float> keys(cache_elements), values(cache_elements);
  std::vector<uint16_t> key_bits(cache_elements), value_bits(cache_elements);
  std::vector<uint8_t> mask(tokens, 1);
  Gemm gemm;
  AttentionScratch scratch;
  AttentionArgs args;
  args.batch = 1;
  args.q_len = args.kv_len = tokens;
  args.num_heads = args.num_kv_heads = heads;
  args.head_dim = head_dim;
  args.q = qs.data();
  args.q_batch_stride = tokens * hidden_size;
  args.q_row_stride = hidden_size;
  args.kv_dtype = bf16 ? DType::BF16 : DType::F32;
  args.k = bf16 ? static_cast<const void*>(key_bits.data()) : keys.data();
  args.v = bf16 ? static_cast<const void*>(value_bits.data()) : values.data();
  args.kv_batch_stride = heads * tokens * head_dim;
  args.kv_head_stride = tokens * head_dim;
  args.kv_row_stride = head_dim;
  args.out = attended.data();
  args.out_batch_stride = tokens * hidden_size;
  args.out_row_stride = hidden_size;
  args.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  args.causal = true;
  args.key_mask = mask.data();
  args.key_mask_stride = tokens;
  auto layer = [&] {
    rms_norm(hidden.data(), tokens, hidden_size, hidden_size, ones.data(), 1e-6f, normed.data(), hidden_size);
    q.apply(gemm, bf16, normed.data(), tokens, qs.data(), hidden_size, false);
    k.apply(gemm, bf16, normed.data(), tokens, ks.data(), hidden_size, false);
    v.apply(gemm, bf16, normed.data(), tokens, vs.data(), hidden_size, false);
    apply_rope(qs.data(), tokens, heads, head_dim, hidden_size, cos.data(), sin.data());
    apply_rope(ks.data(), tokens, heads, head_dim, hidden_size, cos.data(), sin.data());
#pragma omp parallel for schedule(static)
    for (int64_t g = 0; g < heads; ++g) {
      for (int64_t t = 0; t < tokens; ++t) {
        for (int64_t i = 0; i < head_dim; ++i) {
          const size_t slot = static_cast<size_t>((g * tokens + t) * head_dim + i);
          const size_t source = static_cast<size_t>(t * hidden_size + g * head_dim + i);
          if (bf16) {
            key_bits[slot] = float_to_bf16(ks[source]);
            value_bits[slot] = float_to_bf16(vs[source]);
          } else {
            keys[slot] = ks[source];
            values[slot] = vs[source];
          }
        }
      }
    }
    attention(args, scratch);
    o.apply(gemm, bf16, attended.data(), tokens, hidden.data(), hidden_size, true);
    rms_norm(hidden.data(), tokens, hidden_size, hidden_size, ones.data(), 1e-6f, normed.data(), hidden_size);
    gate.apply(gemm, bf16, normed.data(), tokens, gates.data(), inter, false);
    up.apply(gemm, bf16, normed.data(), tokens, ups.data(), inter, false);
    silu_mul(gates.data(), ups.data(), gates.data(), tokens * inter);
    down.apply(gemm, bf16, gates.data(), tokens, hidden.data(), hidden_size, true);
  };
  time_layer(state, layer, 2.0 * tokens * hidden_size * (4 * hidden_size + 3 * inter) + attention_flops,
             bf16 ? "engine, BF16 weights and cache" : "engine, F32 weights and cache");
}
BENCHMARK(BM_PrefillLayer)->ArgName("variant")->Arg(2)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// ---------------------------------------------------------------- elementwise and norms

// 0: the engine's kernel; 1: a plain loop over the C library function (the previous kernel).
void BM_Gelu(benchmark::State& state) {
  const int64_t count = 1500 * 5120;  // one encoder layer's fc1 output
  std::vector<float> x = random_values(count, 4, 2.0f);
  for (auto _ : state) {
    if (state.range(0) == 0) {
      gelu_erf(x.data(), count);
    } else {
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < count; ++i) x[i] = 0.5f * x[i] * (1.0f + std::erf(x[i] * 0.70710678f));
    }
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(8.0 * count * state.iterations() * 1e-9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Gelu)->ArgName("previous")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_SiluMul(benchmark::State& state) {
  const int64_t count = 800 * 11008;  // one prefill layer's gate/up
  std::vector<float> gate = random_values(count, 5, 2.0f), up = random_values(count, 6);
  std::vector<float> out(count);
  for (auto _ : state) {
    if (state.range(0) == 0) {
      silu_mul(gate.data(), up.data(), out.data(), count);
    } else {
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < count; ++i) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
    }
    benchmark::ClobberMemory();
  }
  state.counters["GB/s"] = benchmark::Counter(12.0 * count * state.iterations() * 1e-9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_SiluMul)->ArgName("previous")->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// The previous kernels' loops: scalar, statistics in double.
void previous_rms_norm(const float* x, int64_t rows, int64_t dim, const float* weight, float eps, float* out) {
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    const float* in = x + row * dim;
    double squares = 0.0;
    for (int64_t i = 0; i < dim; ++i) squares += static_cast<double>(in[i]) * in[i];
    const float inverse = 1.0f / std::sqrt(static_cast<float>(squares / static_cast<double>(dim)) + eps);
    for (int64_t i = 0; i < dim; ++i) out[row * dim + i] = weight[i] * (in[i] * inverse);
  }
}

void previous_layer_norm(const float* x, int64_t rows, int64_t dim, const float* weight, const float* bias, float eps,
                         float* out) {
#pragma omp parallel for schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    const float* in = x + row * dim;
    double sum = 0.0;
    for (int64_t i = 0; i < dim; ++i) sum += in[i];
    const double mean = sum / static_cast<double>(dim);
    double squares = 0.0;
    for (int64_t i = 0; i < dim; ++i) squares += (in[i] - mean) * (in[i] - mean);
    const float inverse = 1.0f / std::sqrt(static_cast<float>(squares / static_cast<double>(dim)) + eps);
    const float mean_f = static_cast<float>(mean);
    for (int64_t i = 0; i < dim; ++i) out[row * dim + i] = (in[i] - mean_f) * inverse * weight[i] + bias[i];
  }
}

// layer 0: RMSNorm over a prefill's 800 x 4096; 1: LayerNorm over the encoder's 1500 x 1280.
void BM_Norms(benchmark::State& state) {
  const bool layer = state.range(0) == 1;
  const bool previous = state.range(1) == 1;
  const int64_t rows = layer ? 1500 : 800, dim = layer ? 1280 : 4096;
  std::vector<float> x = random_values(rows * dim, 7), weight = random_values(dim, 8), bias = random_values(dim, 9);
  std::vector<float> out(rows * dim);
  for (auto _ : state) {
    if (layer && previous)
      previous_layer_norm(x.data(), rows, dim, weight.data(), bias.data(), 1e-5f, out.data());
    else if (layer)
      layer_norm(x.data(), rows, dim, dim, weight.data(), bias.data(), 1e-5f, out.data(), dim);
    else if (previous)
      previous_rms_norm(x.data(), rows, dim, weight.data(), 1e-6f, out.data());
    else
      rms_norm(x.data(), rows, dim, dim, weight.data(), 1e-6f, out.data(), dim);
    benchmark::ClobberMemory();
  }
  state.SetLabel(layer ? "layer_norm 1500x1280" : "rms_norm 800x4096");
  state.counters["GB/s"] =
      benchmark::Counter(8.0 * rows * dim * state.iterations() * 1e-9, benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Norms)
    ->ArgNames({"layer", "previous"})
    ->Args({0, 0})
    ->Args({0, 1})
    ->Args({1, 0})
    ->Args({1, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace qwen2audio::kernels

BENCHMARK_MAIN();
