#include "kernels/cpu/gemm.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <tuple>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/elementwise.h"
#include "runtime/buffer.h"
#include "runtime/errors.h"

namespace qwen2audio::kernels {
namespace {

using dt = dnnl::memory::data_type;

// Problems with at most this many rows are matrix-vector products (decode steps): reading each
// weight row once, converted on the fly, beats converting blocks for a matrix multiply.
constexpr int64_t kSmallM = 4;
// The portable BF16 path widens a block of weight rows (as float32) at a time, then runs one
// multi-threaded float32 matmul on it. Every matmul call re-reads and repacks the whole input and
// oneDNN blocks a narrow product less well, so blocks are wide: at least kWidenColumns output
// columns, up to kWidenMaxBytes; at least kWidenBytes in any case. With 16 MiB blocks alone (1024
// columns at k = 4096, 320 at k = 11008) an 800-token bf16 prefill layer took 1.26-1.29x the
// float32 one on a loaded Zen 3 (AVX2; on a quiet one the gap mostly vanished); with blocks of up
// to 64 MiB 1.02-1.08x, and 128 or 256 MiB gained nothing more. The column floor keeps the
// scratch (per calling thread) at 16 MiB where 16 MiB is already wide, e.g. a small model's output
// head. (An early version converted 64 rows per call to a single-threaded sgemm, slower still.)
constexpr int64_t kWidenBytes = int64_t{16} << 20;
constexpr int64_t kWidenMaxBytes = int64_t{64} << 20;
constexpr int64_t kWidenColumns = 4096;

// Per-thread scratch: each OpenMP worker and each calling thread owns its buffers, so concurrent
// calls never share them, and after the first call of a given size nothing is allocated.
thread_local Buffer<float> tls_converted_weights;
thread_local Buffer<float> tls_rounded_inputs;
thread_local Buffer<uint16_t> tls_bf16_inputs;
thread_local Buffer<uint8_t> tls_scratchpad;

inline float round_through_bf16(float value) { return bf16_to_float(float_to_bf16(value)); }

// The portable BF16 path's two loops, for AVX2 (compiled for it whatever the build's -march) and
// plain C++; picked at run time by the kernels' tier.
[[gnu::target("avx2,fma,f16c")]] void bf16_row_to_float_avx2(const uint16_t* source, float* destination,
                                                             int64_t count) {
  int64_t index = 0;
  for (; index + 8 <= count; index += 8) {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(source + index));
    const __m256i widened = _mm256_slli_epi32(_mm256_cvtepu16_epi32(packed), 16);
    _mm256_storeu_ps(destination + index, _mm256_castsi256_ps(widened));
  }
  for (; index < count; ++index) destination[index] = bf16_to_float(source[index]);
}

void bf16_row_to_float_scalar(const uint16_t* source, float* destination, int64_t count) {
  for (int64_t index = 0; index < count; ++index) destination[index] = bf16_to_float(source[index]);
}

[[gnu::target("avx2,fma,f16c")]] inline float horizontal_sum(__m256 value) {
  const __m128 folded = _mm_add_ps(_mm256_castps256_ps128(value), _mm256_extractf128_ps(value, 1));
  const __m128 pairs = _mm_add_ps(folded, _mm_movehl_ps(folded, folded));
  return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_shuffle_ps(pairs, pairs, 1)));
}

// out[i] = dot(x_i, w) for up to kSmallM rows x_i, reading the BF16 row w once.
[[gnu::target("avx2,fma,f16c")]] void bf16_row_dots_avx2(const float* x, int64_t ldx, int64_t rows, const uint16_t* w,
                                                         int64_t k, float* out) {
  int64_t index = 0;
  __m256 sums[kSmallM];
  for (int64_t row = 0; row < rows; ++row) sums[row] = _mm256_setzero_ps();
  for (; index + 8 <= k; index += 8) {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + index));
    const __m256 weights = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(packed), 16));
    for (int64_t row = 0; row < rows; ++row)
      sums[row] = _mm256_fmadd_ps(_mm256_loadu_ps(x + row * ldx + index), weights, sums[row]);
  }
  for (int64_t row = 0; row < rows; ++row) out[row] = horizontal_sum(sums[row]);
  for (; index < k; ++index) {
    const float weight = bf16_to_float(w[index]);
    for (int64_t row = 0; row < rows; ++row) out[row] += x[row * ldx + index] * weight;
  }
}

void bf16_row_dots_scalar(const float* x, int64_t ldx, int64_t rows, const uint16_t* w, int64_t k, float* out) {
  for (int64_t row = 0; row < rows; ++row) out[row] = 0.0f;
  for (int64_t index = 0; index < k; ++index) {
    const float weight = bf16_to_float(w[index]);
    for (int64_t row = 0; row < rows; ++row) out[row] += x[row * ldx + index] * weight;
  }
}

void bf16_row_to_float(const uint16_t* source, float* destination, int64_t count) {
  (best_isa() >= Isa::Avx2 ? bf16_row_to_float_avx2 : bf16_row_to_float_scalar)(source, destination, count);
}

void bf16_row_dots(const float* x, int64_t ldx, int64_t rows, const uint16_t* w, int64_t k, float* out) {
  (best_isa() >= Isa::Avx2 ? bf16_row_dots_avx2 : bf16_row_dots_scalar)(x, ldx, rows, w, k, out);
}

void check_args(const GemmArgs& args) {
  if (args.m < 0 || args.n < 0 || args.k < 0) throw InvalidArgument("gemm: negative dimension");
  if (args.ldx < args.k || args.ldw < args.k || args.ldy < args.n)
    throw InvalidArgument("gemm: leading dimension too small");
  if (args.w_dtype != DType::F32 && args.w_dtype != DType::BF16)
    throw InvalidArgument("gemm: weights must be F32 or BF16, got " + std::string(dtype_name(args.w_dtype)));
  if (args.accumulate && args.activation != Activation::None)
    throw InvalidArgument("gemm: an activation applies to a fresh product, not to y += x W^T");
}

void add_bias(const GemmArgs& args, int64_t column_begin, int64_t column_end) {
  if (args.bias == nullptr) return;
  for (int64_t row = 0; row < args.m; ++row) {
    float* y = args.y + row * args.ldy;
    for (int64_t column = column_begin; column < column_end; ++column) y[column] += args.bias[column];
  }
}

struct PrimitiveKey {
  int64_t m, n, k, ldx, ldw, ldy;
  bool bf16, bias, accumulate;
  Activation activation;
  int threads;
  auto tie() const { return std::tie(m, n, k, ldx, ldw, ldy, bf16, bias, accumulate, activation, threads); }
  bool operator<(const PrimitiveKey& other) const { return tie() < other.tie(); }
};

struct CachedPrimitive {
  dnnl::matmul primitive;
  dnnl::memory::desc src, weights, bias, dst, scratchpad;
};

}  // namespace

struct Gemm::Impl {
  GemmOptions options;
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  bool native_bf16 = false;
  std::mutex mutex;
  std::map<PrimitiveKey, CachedPrimitive> cache;

  // A prompt of a new length asks for new shapes; the bound keeps a long-lived server's cache from
  // growing without limit.
  static constexpr size_t kMaxCachedPrimitives = 512;

  CachedPrimitive create(const PrimitiveKey& key) {
    const dt input_type = key.bf16 ? dt::bf16 : dt::f32;
    CachedPrimitive made;
    made.src = dnnl::memory::desc({key.m, key.k}, input_type, {key.ldx, 1});
    made.weights = dnnl::memory::desc({key.k, key.n}, input_type, {1, key.ldw});
    made.dst = dnnl::memory::desc({key.m, key.n}, dt::f32, {key.ldy, 1});
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    dnnl::post_ops post_ops;
    if (key.accumulate) post_ops.append_sum(1.0f);
    if (key.activation == Activation::GeluErf)
      post_ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_gelu_erf, 0.0f, 0.0f);
    if (post_ops.len() > 0) attr.set_post_ops(post_ops);
    dnnl::matmul::primitive_desc descriptor;
    if (key.bias) {
      made.bias = dnnl::memory::desc({1, key.n}, dt::f32, {key.n, 1});
      descriptor =
          dnnl::matmul::primitive_desc(dnnl::matmul::desc(made.src, made.weights, made.bias, made.dst), attr, engine);
    } else {
      descriptor = dnnl::matmul::primitive_desc(dnnl::matmul::desc(made.src, made.weights, made.dst), attr, engine);
    }
    made.scratchpad = descriptor.scratchpad_desc();
    made.primitive = dnnl::matmul(descriptor);
    return made;
  }

  CachedPrimitive get(const PrimitiveKey& key) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      auto found = cache.find(key);
      if (found != cache.end()) return found->second;
    }
    // Created outside the lock: creation can take milliseconds and other shapes need not wait.
    CachedPrimitive made = create(key);
    std::lock_guard<std::mutex> lock(mutex);
    if (cache.size() >= kMaxCachedPrimitives) cache.clear();
    return cache.emplace(key, std::move(made)).first->second;
  }

  // False when oneDNN has no implementation for this BF16 problem (the caller then takes the
  // portable path); nothing has been written to y in that case.
  bool run_onednn(const GemmArgs& args, const void* x, int64_t ldx, bool bf16) {
    const PrimitiveKey key{args.m,
                           args.n,
                           args.k,
                           ldx,
                           args.ldw,
                           args.ldy,
                           bf16,
                           args.bias != nullptr,
                           args.accumulate,
                           args.activation,
                           omp_get_max_threads()};
    CachedPrimitive cached;
    try {
      cached = get(key);
    } catch (const dnnl::error&) {
      if (!bf16) throw;
      return false;
    }
    dnnl::memory src(cached.src, engine, const_cast<void*>(x));
    dnnl::memory weights(cached.weights, engine, const_cast<void*>(args.w));
    dnnl::memory dst(cached.dst, engine, args.y);
    uint8_t* scratch = tls_scratchpad.reserve(std::max<size_t>(cached.scratchpad.get_size(), 1));
    dnnl::memory scratchpad(cached.scratchpad, engine, scratch);
    std::unordered_map<int, dnnl::memory> arguments{
        {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratchpad}};
    if (args.bias != nullptr)
      arguments.emplace(DNNL_ARG_BIAS, dnnl::memory(cached.bias, engine, const_cast<float*>(args.bias)));
    dnnl::stream stream(engine);
    cached.primitive.execute(stream, arguments);
    stream.wait();
    return true;
  }

  void run_portable_bf16(const GemmArgs& args) {
    const float* x = args.x;
    int64_t ldx = args.ldx;
    if (options.round_bf16_inputs) {
      float* rounded = tls_rounded_inputs.reserve(static_cast<size_t>(args.m * args.k));
#pragma omp parallel for if (args.m * args.k > (1 << 16))
      for (int64_t row = 0; row < args.m; ++row)
        for (int64_t index = 0; index < args.k; ++index)
          rounded[row * args.k + index] = round_through_bf16(args.x[row * args.ldx + index]);
      x = rounded;
      ldx = args.k;
    }
    const auto* w = static_cast<const uint16_t*>(args.w);
    if (args.m <= kSmallM) {
#pragma omp parallel for schedule(static)
      for (int64_t column = 0; column < args.n; ++column) {
        float dots[kSmallM];
        bf16_row_dots(x, ldx, args.m, w + column * args.ldw, args.k, dots);
        for (int64_t row = 0; row < args.m; ++row) {
          float* y = args.y + row * args.ldy + column;
          const float value = dots[row] + (args.bias ? args.bias[column] : 0.0f);
          *y = args.accumulate ? *y + value : value;
        }
      }
      apply_activation(args.activation, args.y, args.m, args.n, args.ldy);
      return;
    }
    // Widened weights are exact, and the inputs were rounded above: the float32 product computes the
    // very numbers BF16 hardware would (up to the order of the float32 sums).
    const auto columns_in = [&](int64_t bytes) { return std::max<int64_t>(64, bytes / (4 * args.k) / 64 * 64); };
    const int64_t chunk = std::min(
        args.n, std::max(columns_in(kWidenBytes), std::min({args.n, columns_in(kWidenMaxBytes), kWidenColumns})));
    float* widened = tls_converted_weights.reserve(static_cast<size_t>(chunk * args.k));
    for (int64_t begin = 0; begin < args.n; begin += chunk) {
      const int64_t width = std::min(chunk, args.n - begin);
#pragma omp parallel for schedule(static)
      for (int64_t row = 0; row < width; ++row)
        bf16_row_to_float(w + (begin + row) * args.ldw, widened + row * args.k, args.k);
      GemmArgs part{args.m,
                    width,
                    args.k,
                    x,
                    ldx,
                    widened,
                    DType::F32,
                    args.k,
                    args.bias ? args.bias + begin : nullptr,
                    args.y + begin,
                    args.ldy,
                    args.accumulate,
                    args.activation};
      run_onednn(part, x, ldx, false);
    }
  }
};

void apply_activation(Activation activation, float* y, int64_t m, int64_t n, int64_t ldy) {
  if (activation == Activation::None || m == 0 || n == 0) return;
  if (ldy == n) {
    gelu_erf(y, m * n);
    return;
  }
  for (int64_t row = 0; row < m; ++row) gelu_erf(y + row * ldy, n);
}

Gemm::Gemm(GemmOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = options;
  // Native hardware rounds activations to BF16 by construction, so keeping them float32 means the
  // portable path.
  if (options.allow_native_bf16 && options.round_bf16_inputs) {
    // Native means a JIT kernel on BF16 hardware (its name says bf16: brg:avx512_core_bf16,
    // brg:avx512_core_amx_bf16). oneDNN's reference fallback would be far slower than our portable
    // path, and so is its BF16 emulation on AVX-512 without BF16 ("gemm:jit"; oneDNN 2.6 capped to
    // AVX512_CORE_VNNI on an AMX Xeon, four 10 s clips: the bf16 encoder 38.2 s against 10.2 on the
    // portable path, bf16 prefill 200 s against 47).
    try {
      dnnl::matmul::primitive_desc descriptor(dnnl::matmul::desc(dnnl::memory::desc({16, 16}, dt::bf16, {16, 1}),
                                                                 dnnl::memory::desc({16, 16}, dt::bf16, {1, 16}),
                                                                 dnnl::memory::desc({1, 16}, dt::f32, {16, 1}),
                                                                 dnnl::memory::desc({16, 16}, dt::f32, {16, 1})),
                                              impl_->engine);
      const std::string implementation = descriptor.impl_info_str();
      impl_->native_bf16 =
          implementation.find("ref") == std::string::npos && implementation.find("bf16") != std::string::npos;
    } catch (const dnnl::error&) {
      impl_->native_bf16 = false;
    }
  }
}

Gemm::~Gemm() = default;

bool Gemm::native_bf16() const { return impl_->native_bf16; }
const GemmOptions& Gemm::options() const { return impl_->options; }

void Gemm::operator()(const GemmArgs& args) {
  check_args(args);
  if (args.m == 0 || args.n == 0) return;
  if (args.k == 0) {
    for (int64_t row = 0; row < args.m; ++row)
      if (!args.accumulate) std::fill_n(args.y + row * args.ldy, args.n, 0.0f);
    add_bias(args, 0, args.n);
    apply_activation(args.activation, args.y, args.m, args.n, args.ldy);
    return;
  }
  if (args.w_dtype == DType::F32) {
    impl_->run_onednn(args, args.x, args.ldx, false);
  } else if (impl_->native_bf16) {
    uint16_t* converted = tls_bf16_inputs.reserve(static_cast<size_t>(args.m * args.k));
#pragma omp parallel for if (args.m * args.k > (1 << 16))
    for (int64_t row = 0; row < args.m; ++row)
      for (int64_t index = 0; index < args.k; ++index)
        converted[row * args.k + index] = float_to_bf16(args.x[row * args.ldx + index]);
    if (!impl_->run_onednn(args, converted, args.k, true)) impl_->run_portable_bf16(args);
  } else {
    impl_->run_portable_bf16(args);
  }
}

}  // namespace qwen2audio::kernels
