// The CUDA kernels against the CPU kernels (kernels/cpu) or plain double-precision loops, and the
// GPU log-mel against the reference goldens. Inputs that the GPU reads as BF16 are rounded to BF16
// first, so both sides see the same numbers; what remains is the GPU's BF16 output rounding
// (round to nearest: at most 2^-9 relative, 2^-8 allowed) and float32 summation-order noise.
// Every test skips without a CUDA device.

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "audio/log_mel.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/conv1d.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/kernels.h"
#include "kernels/cuda/log_mel.h"
#include "npy.h"
#include "runtime/dtype.h"

namespace qwen2audio {
namespace {

namespace fs = std::filesystem;
namespace gpu = kernels::cuda;
using gpu::bf16;

// The shared reference; QWEN2AUDIO_SHARED_REFERENCE points elsewhere when the tests run on a GPU
// machine that holds a copy of it rather than the build tree's neighbour.
const fs::path kReference = [] {
  const char* override_path = std::getenv("QWEN2AUDIO_SHARED_REFERENCE");
  return fs::path(override_path && *override_path ? override_path : QWEN2AUDIO_SHARED_REFERENCE_DIR);
}();
constexpr double kBf16Relative = 1.0 / 256.0;  // 2^-8: twice BF16's round-to-nearest error

bool have_device() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

#define REQUIRE_DEVICE() \
  if (!have_device()) GTEST_SKIP() << "no CUDA device"

void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

// A device array of T, filled from / read back to host vectors of the same element size.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(size_t count) : count_(count) {
    check(cudaMalloc(&data_, std::max<size_t>(count, 1) * sizeof(T)), "cudaMalloc");
  }
  template <typename U>
  explicit DeviceArray(const std::vector<U>& host) : DeviceArray(host.size()) {
    upload(host);
  }
  ~DeviceArray() { cudaFree(data_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;

  template <typename U>
  void upload(const std::vector<U>& host) {
    static_assert(sizeof(U) == sizeof(T));
    if (host.size() != count_) throw std::runtime_error("upload size mismatch");
    check(cudaMemcpy(data_, host.data(), count_ * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  template <typename U = T>
  std::vector<U> download() const {
    static_assert(sizeof(U) == sizeof(T));
    std::vector<U> host(count_);
    check(cudaDeviceSynchronize(), "kernel execution");
    check(cudaMemcpy(host.data(), data_, count_ * sizeof(T), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    return host;
  }
  T* get() const { return data_; }

 private:
  T* data_ = nullptr;
  size_t count_;
};

// BF16 bits on the host (runtime/dtype.h's conversions, round to nearest even as the GPU).
using Bf16Bits = uint16_t;
bf16* as_bf16(const DeviceArray<Bf16Bits>& array) { return reinterpret_cast<bf16*>(array.get()); }

std::vector<float> random_floats(size_t count, uint32_t seed, float mean = 0.0f, float deviation = 1.0f) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(mean, deviation);
  std::vector<float> values(count);
  for (float& value : values) value = normal(generator);
  return values;
}

// Rounds to BF16 in place and returns the bits.
std::vector<Bf16Bits> round_to_bf16(std::vector<float>& values) {
  std::vector<Bf16Bits> bits(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    bits[i] = float_to_bf16(values[i]);
    values[i] = bf16_to_float(bits[i]);
  }
  return bits;
}

std::vector<float> widen(const std::vector<Bf16Bits>& bits) {
  std::vector<float> values(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) values[i] = bf16_to_float(bits[i]);
  return values;
}

// Passes when |got - expected| <= absolute + relative * |expected| at every index (NaN fails);
// on failure reports the worst index (by how far past its tolerance it is) and the max error.
void expect_close(const std::vector<float>& got, const std::vector<double>& expected, double absolute, double relative,
                  const std::string& what) {
  ASSERT_EQ(got.size(), expected.size()) << what;
  double worst_excess = 0.0, max_error = 0.0;
  size_t worst = 0, failures = 0;
  bool any_nan = false;
  for (size_t i = 0; i < got.size(); ++i) {
    const double error = std::abs(static_cast<double>(got[i]) - expected[i]);
    const double tolerance = absolute + relative * std::abs(expected[i]);
    if (!(error <= tolerance)) {
      ++failures;
      const double excess = std::isnan(error) ? std::numeric_limits<double>::infinity() : error / tolerance;
      if (std::isnan(error) && !any_nan) {
        any_nan = true;
        worst = i;
        worst_excess = excess;
      } else if (!any_nan && excess > worst_excess) {
        worst_excess = excess;
        worst = i;
      }
    }
    if (error > max_error) max_error = error;
  }
  EXPECT_EQ(failures, 0u) << what << ": " << failures << " of " << got.size() << " out of tolerance; max error "
                          << max_error << "; worst index " << worst << " got " << got[worst] << " expected "
                          << expected[worst] << " (tolerance " << absolute + relative * std::abs(expected[worst])
                          << ")";
}

std::vector<double> to_double(const std::vector<float>& values) { return {values.begin(), values.end()}; }

// ---- normalisation ---------------------------------------------------------------------------------

TEST(CudaKernels, NormsMatchCpu) {
  REQUIRE_DEVICE();
  const int64_t rows = 5, n = 1280, ld_x = n + 7, ld_out = n + 3;
  const float eps = 1e-5f;
  const std::vector<float> x = random_floats(rows * ld_x, 1, 0.5f, 2.0f);
  const std::vector<float> weight = random_floats(n, 2, 1.0f, 0.3f), bias = random_floats(n, 3);
  DeviceArray<float> x_d(x), weight_d(weight), bias_d(bias), out_f32_d(rows * ld_out);
  DeviceArray<Bf16Bits> out_bf16_d(rows * ld_out);

  std::vector<float> expected(rows * ld_out);
  // Rows [0, rows) x columns [0, n) of a device result against `expected`.
  const auto compare_rows = [&](const std::vector<float>& got, double absolute, double relative,
                                const std::string& what) {
    std::vector<float> got_rows;
    std::vector<double> expected_rows;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < n; ++c) {
        got_rows.push_back(got[r * ld_out + c]);
        expected_rows.push_back(expected[r * ld_out + c]);
      }
    expect_close(got_rows, expected_rows, absolute, relative, what);
  };
  // BF16 output rounding dominates; float32 statistics differ from the CPU's double by ~1e-7.
  const auto compare_bf16 = [&](const std::string& what) {
    compare_rows(widen(out_bf16_d.download()), 1e-6, kBf16Relative, what);
  };
  // Float32 out: both sides compute statistics in double and the affine step in float (a few ulps).
  const auto compare_f32 = [&](const std::string& what) { compare_rows(out_f32_d.download(), 1e-5, 1e-5, what); };

  kernels::rms_norm(x.data(), rows, n, ld_x, weight.data(), eps, expected.data(), ld_out);
  gpu::rms_norm(x_d.get(), ld_x, rows, n, weight_d.get(), eps, as_bf16(out_bf16_d), ld_out, nullptr);
  compare_bf16("rms_norm");

  gpu::rms_norm(x_d.get(), ld_x, rows, n, weight_d.get(), eps, out_f32_d.get(), ld_out, nullptr);
  compare_f32("rms_norm (f32 out)");

  kernels::layer_norm(x.data(), rows, n, ld_x, weight.data(), bias.data(), eps, expected.data(), ld_out);
  gpu::layer_norm(x_d.get(), ld_x, rows, n, weight_d.get(), bias_d.get(), eps, as_bf16(out_bf16_d), ld_out, nullptr);
  compare_bf16("layer_norm (bf16 out)");

  gpu::layer_norm(x_d.get(), ld_x, rows, n, weight_d.get(), bias_d.get(), eps, out_f32_d.get(), ld_out, nullptr);
  compare_f32("layer_norm (f32 out)");
}

// ---- elementwise -----------------------------------------------------------------------------------

double gelu_reference(double x) { return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0))); }

TEST(CudaKernels, ElementwiseMatchReference) {
  REQUIRE_DEVICE();
  const int64_t rows = 7, n = 300, ld_x = n + 4, ld_out = n + 2;
  const std::vector<float> x = random_floats(rows * ld_x, 11, 0.0f, 3.0f);
  const std::vector<float> bias = random_floats(n, 12), addend = random_floats(rows * n, 13);
  DeviceArray<float> x_d(x), bias_d(bias), addend_d(addend);

  {  // to_bf16 over strided rows: bit-exact round to nearest even; padding columns untouched
    const Bf16Bits sentinel = 0x7fc0;
    DeviceArray<Bf16Bits> out_d(std::vector<Bf16Bits>(rows * ld_out, sentinel));
    gpu::to_bf16(x_d.get(), ld_x, rows, n, as_bf16(out_d), ld_out, nullptr);
    const std::vector<Bf16Bits> got = out_d.download();
    size_t mismatches = 0, first = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < ld_out; ++c) {
        const Bf16Bits expected = c < n ? float_to_bf16(x[r * ld_x + c]) : sentinel;
        if (got[r * ld_out + c] != expected && mismatches++ == 0) first = r * ld_out + c;
      }
    EXPECT_EQ(mismatches, 0u) << "to_bf16 first mismatch at " << first;
  }
  {  // add_rows: one float addition per element, exact
    const std::vector<float> y = random_floats(rows * ld_out, 16);
    DeviceArray<float> y_d(y);
    gpu::add_rows(y_d.get(), ld_out, x_d.get(), ld_x, rows, n, nullptr);
    std::vector<double> expected(y.begin(), y.end());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < n; ++c) expected[r * ld_out + c] = y[r * ld_out + c] + x[r * ld_x + c];
    expect_close(y_d.download(), expected, 0.0, 0.0, "add_rows");
  }
  {  // add_bias: one float addition, exact; the padding columns untouched
    DeviceArray<float> y_d(x);
    gpu::add_bias(y_d.get(), ld_x, rows, n, bias_d.get(), nullptr);
    const std::vector<float> got = y_d.download();
    std::vector<double> expected(x.begin(), x.end());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < n; ++c) expected[r * ld_x + c] = x[r * ld_x + c] + bias[c];
    expect_close(got, expected, 0.0, 0.0, "add_bias");
  }
  {  // bias_gelu, BF16 out, with and without bias
    for (const bool with_bias : {true, false}) {
      DeviceArray<Bf16Bits> out_d(rows * ld_out);
      gpu::bias_gelu(x_d.get(), ld_x, rows, n, with_bias ? bias_d.get() : nullptr, as_bf16(out_d), ld_out, nullptr);
      const std::vector<float> all = widen(out_d.download());
      std::vector<float> got;
      std::vector<double> expected;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < n; ++c) {
          got.push_back(all[r * ld_out + c]);
          expected.push_back(gelu_reference(x[r * ld_x + c] + (with_bias ? bias[c] : 0.0f)));
        }
      expect_close(got, expected, 1e-6, kBf16Relative, with_bias ? "bias_gelu bf16" : "gelu bf16 (no bias)");
    }
  }
  {  // bias_gelu, float32 out, plus the addend: erff is within 2 ulps, so a few float ulps overall
    DeviceArray<float> out_d(rows * ld_out);
    gpu::bias_gelu(x_d.get(), ld_x, rows, n, bias_d.get(), addend_d.get(), out_d.get(), ld_out, nullptr);
    const std::vector<float> all = out_d.download();
    std::vector<float> got;
    std::vector<double> expected;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < n; ++c) {
        got.push_back(all[r * ld_out + c]);
        expected.push_back(gelu_reference(x[r * ld_x + c] + bias[c]) + addend[r * n + c]);
      }
    expect_close(got, expected, 2e-6, 2e-6, "bias_gelu f32 + addend");
  }
  {  // silu_mul with gate and up anywhere: [gate | up] rows (Qwen2's MLP) and [up | gate] (Ultravox's
     // projector), BF16 and float32 out
    const int64_t inter = 150, ld = 2 * inter + 4;
    const std::vector<float> halves = random_floats(rows * ld, 14, 0.0f, 4.0f);
    DeviceArray<float> halves_d(halves);
    for (const bool gate_first : {true, false}) {
      const int64_t gate_at = gate_first ? 0 : inter, up_at = gate_first ? inter : 0;
      std::vector<double> expected;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < inter; ++c) {
          const double gate = halves[r * ld + gate_at + c], up = halves[r * ld + up_at + c];
          expected.push_back(gate / (1.0 + std::exp(-gate)) * up);
        }
      DeviceArray<Bf16Bits> out_bf16_d(rows * inter);
      gpu::silu_mul(halves_d.get() + gate_at, ld, halves_d.get() + up_at, ld, rows, inter, as_bf16(out_bf16_d), inter,
                    nullptr);
      expect_close(widen(out_bf16_d.download()), expected, 1e-6, kBf16Relative, "silu_mul bf16");
      DeviceArray<float> out_f32_d(rows * inter);
      gpu::silu_mul(halves_d.get() + gate_at, ld, halves_d.get() + up_at, ld, rows, inter, out_f32_d.get(), inter,
                    nullptr);
      expect_close(out_f32_d.download(), expected, 1e-6, 1e-6, "silu_mul f32");
    }
  }
  {  // avg_pool_pairs with an odd row count (the last row dropped): exact
    const int64_t pool_rows = 7, channels = 33;
    const std::vector<float> input = random_floats(pool_rows * channels, 15);
    DeviceArray<float> input_d(input), out_d(pool_rows / 2 * channels);
    gpu::avg_pool_pairs(input_d.get(), pool_rows, channels, out_d.get(), nullptr);
    std::vector<double> expected;
    for (int64_t r = 0; r < pool_rows / 2; ++r)
      for (int64_t c = 0; c < channels; ++c)
        expected.push_back((input[2 * r * channels + c] + input[(2 * r + 1) * channels + c]) * 0.5f);
    expect_close(out_d.download(), expected, 0.0, 0.0, "avg_pool_pairs");
  }
}

// ---- rotary embedding ------------------------------------------------------------------------------

TEST(CudaKernels, RopeMatchesCpuTables) {
  REQUIRE_DEVICE();
  const std::vector<int64_t> positions{0, 1, 2, 517, 999, 4095, 8191, 12345};
  const int64_t rows = static_cast<int64_t>(positions.size());
  for (const int64_t head_dim : {16, 64, 128}) {
    for (const float theta : {10000.0f, 500000.0f, 1000000.0f}) {
      const int64_t half = head_dim / 2;
      std::vector<float> frequencies(half);
      kernels::rope_inverse_frequencies(head_dim, theta, frequencies.data());
      // Scaled variants (Llama 3) hand over rewritten frequencies: slow the lower half down.
      if (theta == 500000.0f)
        for (int64_t i = half / 2; i < half; ++i) frequencies[i] /= 8.0f;
      const int64_t heads = 3, ld = heads * head_dim + 16;  // 16 trailing columns must stay untouched
      const std::vector<float> x = random_floats(rows * ld, 21);
      std::vector<float> expected = x;
      std::vector<float> cos_table(rows * half), sin_table(rows * half);
      kernels::rope_tables(positions.data(), rows, head_dim, frequencies.data(), cos_table.data(), sin_table.data());
      kernels::apply_rope(expected.data(), rows, heads, head_dim, ld, cos_table.data(), sin_table.data());
      DeviceArray<float> x_d(x), frequencies_d(frequencies), cos_d(rows * half), sin_d(rows * half);
      DeviceArray<int64_t> positions_d(positions);
      gpu::rope_tables(positions_d.get(), rows, frequencies_d.get(), half, cos_d.get(), sin_d.get(), nullptr);
      gpu::apply_rope(x_d.get(), ld, rows, heads, head_dim, cos_d.get(), sin_d.get(), nullptr);
      // The angles are the CPU's float32 angles; cos/sin may still differ by an ulp (glibc's cosf
      // is not always correctly rounded), i.e. ~1.2e-7 per |x| of the pair.
      const std::string what = "rope head_dim " + std::to_string(head_dim) + " theta " + std::to_string(theta);
      expect_close(cos_d.download(), to_double(cos_table), 2.4e-7, 0.0, what + " cos");
      expect_close(x_d.download(), to_double(expected), 1e-6, 1e-6, what);
    }
  }
}

// ---- KV cache --------------------------------------------------------------------------------------

TEST(CudaKernels, StoreKvWritesBf16AtItsSlots) {
  REQUIRE_DEVICE();
  const int64_t batch = 2, steps = 3, kv_heads = 2, head_dim = 16, capacity = 8, start = 4;
  const int64_t q_cols = 4 * head_dim, kv_cols = kv_heads * head_dim, ld = q_cols + 2 * kv_cols;
  const std::vector<float> qkv = random_floats(batch * steps * ld, 31);
  const int64_t head_stride = capacity * head_dim, batch_stride = kv_heads * head_stride;
  const Bf16Bits sentinel = 0x7fc0;  // NaN: what the kernel must not touch stays NaN
  std::vector<Bf16Bits> initial(batch * batch_stride, sentinel);
  DeviceArray<float> qkv_d(qkv);
  DeviceArray<Bf16Bits> k_cache_d(initial), v_cache_d(initial);
  gpu::store_kv(qkv_d.get() + q_cols, qkv_d.get() + q_cols + kv_cols, ld, batch, steps, kv_heads, head_dim,
                as_bf16(k_cache_d), as_bf16(v_cache_d), batch_stride, head_stride, start, nullptr);
  std::vector<Bf16Bits> k_expected = initial, v_expected = initial;
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < steps; ++t)
      for (int64_t g = 0; g < kv_heads; ++g)
        for (int64_t d = 0; d < head_dim; ++d) {
          const int64_t target = b * batch_stride + g * head_stride + (start + t) * head_dim + d;
          const int64_t source = (b * steps + t) * ld + g * head_dim + d;
          k_expected[target] = float_to_bf16(qkv[source + q_cols]);
          v_expected[target] = float_to_bf16(qkv[source + q_cols + kv_cols]);
        }
  const std::vector<Bf16Bits> k_got = k_cache_d.download(), v_got = v_cache_d.download();
  for (size_t i = 0; i < k_got.size(); ++i) {
    ASSERT_EQ(k_got[i], k_expected[i]) << "key cache element " << i;
    ASSERT_EQ(v_got[i], v_expected[i]) << "value cache element " << i;
  }
}

// ---- convolution stem and GEMM ---------------------------------------------------------------------

// y = x w^T (+ y0) (+ bias) in double; `magnitude` gets sum |terms| per output for the tolerance.
std::vector<double> gemm_reference(int64_t m, int64_t n, int64_t k, const std::vector<float>& x, int64_t ldx,
                                   const std::vector<float>& w, int64_t ldw, const std::vector<float>* y0, int64_t ldy,
                                   const std::vector<float>* bias, std::vector<double>* magnitude) {
  std::vector<double> y(m * ldy, 0.0);
  magnitude->assign(m * ldy, 0.0);
  for (int64_t i = 0; i < m * ldy; ++i)
    if (y0 != nullptr) y[i] = (*y0)[i];
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < n; ++c) {
      double sum = 0.0, size = 0.0;
      for (int64_t j = 0; j < k; ++j) {
        const double term = static_cast<double>(x[r * ldx + j]) * w[c * ldw + j];
        sum += term;
        size += std::abs(term);
      }
      if (y0 != nullptr) size += std::abs((*y0)[r * ldy + c]);
      if (bias != nullptr) {
        sum += (*bias)[c];
        size += std::abs((*bias)[c]);
      }
      y[r * ldy + c] += sum;
      (*magnitude)[r * ldy + c] = size;
    }
  return y;
}

// Float32 accumulation of k exact BF16 products: a random walk of k roundings (~sqrt(k) 2^-24 of
// sum |terms|, ~1e-6 here); tensor cores may align addends by truncation, so 2e-5 leaves room.
void expect_gemm_close(const std::vector<float>& got, const std::vector<double>& expected,
                       const std::vector<double>& magnitude, const std::string& what) {
  ASSERT_EQ(got.size(), expected.size());
  double worst_ratio = 0.0, max_error = 0.0;
  size_t worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double error = std::abs(got[i] - expected[i]);
    const double ratio = error / (2e-5 * magnitude[i] + 1e-6);
    if (!(ratio <= worst_ratio)) {
      worst_ratio = std::isnan(ratio) ? std::numeric_limits<double>::infinity() : ratio;
      worst = i;
    }
    max_error = std::max(max_error, error);
  }
  EXPECT_LE(worst_ratio, 1.0) << what << ": max error " << max_error << "; worst index " << worst << " got "
                              << got[worst] << " expected " << expected[worst] << " (sum |terms| " << magnitude[worst]
                              << ")";
}

TEST(CudaKernels, GemmAccumulatesAndAddsBias) {
  REQUIRE_DEVICE();
  const int64_t m = 37, n = 70, k = 96, ldx = k + 8, ldw = k + 16, ldy = n + 5;
  std::vector<float> x = random_floats(m * ldx, 41), w = random_floats(n * ldw, 42);
  const std::vector<Bf16Bits> x_bits = round_to_bf16(x), w_bits = round_to_bf16(w);
  const std::vector<float> y0 = random_floats(m * ldy, 43), bias = random_floats(n, 44);
  DeviceArray<Bf16Bits> x_d(x_bits), w_d(w_bits);
  DeviceArray<float> y_d(y0), bias_d(bias);
  gpu::Gemm gemm;
  std::vector<double> magnitude;

  gemm(m, n, k, as_bf16(x_d), ldx, as_bf16(w_d), ldw, y_d.get(), ldy, true, bias_d.get(), nullptr);
  std::vector<double> expected = gemm_reference(m, n, k, x, ldx, w, ldw, &y0, ldy, &bias, &magnitude);
  std::vector<float> got = y_d.download();
  // The padding columns of y keep y0 (magnitude 0 there, so they must match exactly).
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = n; c < ldy; ++c) expected[r * ldy + c] = y0[r * ldy + c];
  expect_gemm_close(got, expected, magnitude, "Gemm accumulate + bias");

  y_d.upload(y0);
  gemm(m, n, k, as_bf16(x_d), ldx, as_bf16(w_d), ldw, y_d.get(), ldy, false, nullptr, nullptr);
  expected = gemm_reference(m, n, k, x, ldx, w, ldw, nullptr, ldy, nullptr, &magnitude);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = n; c < ldy; ++c) expected[r * ldy + c] = y0[r * ldy + c];
  expect_gemm_close(y_d.download(), expected, magnitude, "Gemm overwrite, no bias");
}

TEST(CudaKernels, Im2colAndGemmMatchDirectConvolution) {
  REQUIRE_DEVICE();
  const int64_t channels = 80, frames = 37, out_channels = 48;
  std::vector<float> weight = random_floats(out_channels * channels * 3, 51, 0.0f, 0.1f);
  const std::vector<Bf16Bits> weight_bits = round_to_bf16(weight);
  const std::vector<float> bias = random_floats(out_channels, 52);
  DeviceArray<Bf16Bits> weight_d(weight_bits);
  DeviceArray<float> bias_d(bias);
  gpu::Gemm gemm;
  // Channel-major input (the mel features) with stride 1, time-major (the first conv's output) with
  // stride 2, as the encoder's two convolutions read them.
  for (const bool channel_major : {true, false}) {
    const int64_t stride = channel_major ? 1 : 2;
    const int64_t channel_stride = channel_major ? frames : 1, frame_stride = channel_major ? 1 : channels;
    std::vector<float> input = random_floats(channels * frames, 53);
    round_to_bf16(input);  // so im2col's BF16 rounding is exact and the reference sees the same values
    const int64_t out_frames = (frames - 1) / stride + 1, width = channels * 3;
    DeviceArray<float> input_d(input), y_d(out_frames * out_channels);
    DeviceArray<Bf16Bits> cols_d(out_frames * width);
    gpu::im2col_k3(input_d.get(), channels, frames, channel_stride, frame_stride, stride, as_bf16(cols_d), nullptr);

    std::vector<float> cols_expected(out_frames * width);
    kernels::im2col_1d(input.data(), channels, frames, channel_stride, frame_stride, 3, stride, 1,
                       cols_expected.data());
    const std::vector<float> cols_got = widen(cols_d.download());
    ASSERT_EQ(kernels::conv1d_output_length(frames, 3, stride, 1), out_frames);
    expect_close(cols_got, to_double(cols_expected), 0.0, 0.0, "im2col_k3 stride " + std::to_string(stride));

    gemm(out_frames, out_channels, width, as_bf16(cols_d), width, as_bf16(weight_d), width, y_d.get(), out_channels,
         false, bias_d.get(), nullptr);
    std::vector<double> expected(out_frames * out_channels), magnitude(out_frames * out_channels);
    for (int64_t t = 0; t < out_frames; ++t)
      for (int64_t o = 0; o < out_channels; ++o) {
        double sum = bias[o], size = std::abs(bias[o]);
        for (int64_t c = 0; c < channels; ++c)
          for (int64_t j = 0; j < 3; ++j) {
            const int64_t source = t * stride + j - 1;
            if (source < 0 || source >= frames) continue;
            const double term = static_cast<double>(weight[(o * channels + c) * 3 + j]) *
                                input[c * channel_stride + source * frame_stride];
            sum += term;
            size += std::abs(term);
          }
        expected[t * out_channels + o] = sum;
        magnitude[t * out_channels + o] = size;
      }
    expect_gemm_close(y_d.download(), expected, magnitude, "conv via im2col + Gemm, stride " + std::to_string(stride));
  }
}

// ---- attention -------------------------------------------------------------------------------------

struct AttentionCase {
  std::string name;
  int64_t batch, q_len, kv_len, heads, kv_heads, head_dim;
  bool causal;
  bool cache_layout;  // keys/values [b, g, capacity, D] (the KV cache); else [b, s, g * D] (the encoder)
  int64_t capacity;   // cache layout: rows per head (>= kv_len; the rows past kv_len hold NaN)
  std::vector<int64_t> first_visible;  // per batch row: keys before it are hidden (left padding)
  std::vector<int64_t> end_visible;    // per batch row: keys from it on are hidden (a padded tail)
  bool workspace;                      // decode: pass the split workspace
  int64_t misalign = 0;                // keys/values start this many BF16 past a 16-byte boundary
};

// Runs the case on the GPU and through kernels::attention (BF16 keys/values, the same numbers) and
// compares. Hidden keys and cache rows past kv_len hold NaN, so any read of them shows. Returns the
// GPU output (float of the BF16 values) for extra checks.
std::vector<float> run_attention_case(const AttentionCase& c) {
  const int64_t D = c.head_dim, rows = c.cache_layout ? c.capacity : c.kv_len;
  std::vector<float> q = random_floats(c.batch * c.q_len * c.heads * D, 61);
  round_to_bf16(q);  // the model feeds BF16-representable queries only by chance; this keeps both sides equal
  std::vector<float> k = random_floats(c.batch * c.kv_heads * rows * D, 62);
  std::vector<float> v = random_floats(c.batch * c.kv_heads * rows * D, 63);
  std::vector<Bf16Bits> k_bits = round_to_bf16(k), v_bits = round_to_bf16(v);

  int64_t kv_batch_stride, kv_head_stride, kv_row_stride;
  if (c.cache_layout) {
    kv_row_stride = D;
    kv_head_stride = c.capacity * D;
    kv_batch_stride = c.kv_heads * kv_head_stride;
  } else {
    kv_row_stride = c.kv_heads * D;
    kv_head_stride = D;
    kv_batch_stride = c.kv_len * kv_row_stride;
  }
  std::vector<uint8_t> mask(c.batch * c.kv_len, 1);
  bool any_hidden = false;
  const Bf16Bits nan_bits = 0x7fc0;
  for (int64_t b = 0; b < c.batch; ++b)
    for (int64_t s = 0; s < rows; ++s) {
      const bool hidden = s >= c.kv_len || s < c.first_visible[b] || s >= c.end_visible[b];
      if (!hidden) continue;
      if (s < c.kv_len) {
        mask[b * c.kv_len + s] = 0;
        any_hidden = true;
      }
      for (int64_t g = 0; g < c.kv_heads; ++g)
        for (int64_t d = 0; d < D; ++d) {
          const int64_t index = b * kv_batch_stride + g * kv_head_stride + s * kv_row_stride + d;
          k_bits[index] = v_bits[index] = nan_bits;
        }
    }

  const int64_t q_row_stride = c.heads * D, q_batch_stride = c.q_len * q_row_stride;
  std::vector<float> expected(c.batch * c.q_len * c.heads * D, -1.0f);
  kernels::AttentionArgs cpu;
  cpu.batch = c.batch;
  cpu.q_len = c.q_len;
  cpu.kv_len = c.kv_len;
  cpu.num_heads = c.heads;
  cpu.num_kv_heads = c.kv_heads;
  cpu.head_dim = D;
  cpu.q = q.data();
  cpu.q_batch_stride = q_batch_stride;
  cpu.q_row_stride = q_row_stride;
  cpu.k = k_bits.data();
  cpu.v = v_bits.data();
  cpu.kv_dtype = DType::BF16;
  cpu.kv_batch_stride = kv_batch_stride;
  cpu.kv_head_stride = kv_head_stride;
  cpu.kv_row_stride = kv_row_stride;
  cpu.out = expected.data();
  cpu.out_batch_stride = q_batch_stride;
  cpu.out_row_stride = q_row_stride;
  cpu.scale = 1.0f / std::sqrt(static_cast<float>(D));
  cpu.causal = c.causal;
  cpu.key_mask = any_hidden ? mask.data() : nullptr;
  cpu.key_mask_stride = c.kv_len;
  kernels::attention(cpu);

  DeviceArray<float> q_d(q);
  // A misaligned start sends the kernels down their element-wise (not 16-byte) load path.
  std::vector<Bf16Bits> k_shifted(c.misalign, 0), v_shifted(c.misalign, 0);
  k_shifted.insert(k_shifted.end(), k_bits.begin(), k_bits.end());
  v_shifted.insert(v_shifted.end(), v_bits.begin(), v_bits.end());
  DeviceArray<Bf16Bits> k_d(k_shifted), v_d(v_shifted), out_d(expected.size());
  DeviceArray<uint8_t> mask_d(mask);
  const int64_t workspace_floats = gpu::attention_workspace_floats(c.batch, c.q_len, c.heads, D);
  DeviceArray<float> workspace_d(static_cast<size_t>(std::max<int64_t>(workspace_floats, 1)));
  gpu::AttentionArgs args;
  args.batch = c.batch;
  args.q_len = c.q_len;
  args.kv_len = c.kv_len;
  args.num_heads = c.heads;
  args.num_kv_heads = c.kv_heads;
  args.head_dim = D;
  args.q = q_d.get();
  args.q_batch_stride = q_batch_stride;
  args.q_row_stride = q_row_stride;
  args.k = as_bf16(k_d) + c.misalign;
  args.v = as_bf16(v_d) + c.misalign;
  args.kv_batch_stride = kv_batch_stride;
  args.kv_head_stride = kv_head_stride;
  args.kv_row_stride = kv_row_stride;
  args.out = as_bf16(out_d);
  args.out_batch_stride = q_batch_stride;
  args.out_row_stride = q_row_stride;
  args.scale = cpu.scale;
  args.causal = c.causal;
  args.key_mask = any_hidden ? mask_d.get() : nullptr;
  args.key_mask_stride = c.kv_len;
  if (c.workspace) {
    args.workspace = workspace_d.get();
    args.workspace_floats = workspace_floats;
  }
  gpu::attention(args, nullptr);
  const std::vector<float> got = widen(out_d.download());
  // BF16 output rounding (2^-9 relative) plus float32 softmax/accumulation-order noise, ~1e-6 of
  // max |v| (values are N(0, 1), so 1e-4 absolute is ample).
  expect_close(got, to_double(expected), 1e-4, kBf16Relative, c.name);
  return got;
}

// A query's output rows [b, t, :, :] are all exactly zero.
void expect_zero_query(const std::vector<float>& out, const AttentionCase& c, int64_t b, int64_t t) {
  const int64_t width = c.heads * c.head_dim;
  const float* row = out.data() + (b * c.q_len + t) * width;
  for (int64_t i = 0; i < width; ++i)
    ASSERT_EQ(row[i], 0.0f) << c.name << ": query (" << b << ", " << t << ") sees no key but element " << i << " is "
                            << row[i];
}

TEST(CudaAttention, EncoderBidirectionalWithPaddedTail) {
  REQUIRE_DEVICE();
  for (const int64_t head_dim : {16, 64}) {
    const AttentionCase c{"encoder head_dim " + std::to_string(head_dim),
                          2,
                          1500,
                          1500,
                          4,
                          4,
                          head_dim,
                          false,
                          false,
                          0,
                          {0, 0},
                          {1500, 1100},
                          false};
    run_attention_case(c);
  }
}

TEST(CudaAttention, CausalPrefillGqaLeftPadding) {
  REQUIRE_DEVICE();
  // Row 0 is left-padded by 37 tokens: its first 37 queries see no key and must give zeros.
  const AttentionCase c{
      "causal prefill GQA, left padding", 2, 300, 300, 4, 2, 128, true, true, 320, {37, 0}, {300, 300}, false};
  const std::vector<float> out = run_attention_case(c);
  for (int64_t t = 0; t < 37; ++t) expect_zero_query(out, c, 0, t);
}

TEST(CudaAttention, CausalChunkAfterCachedPrefix) {
  REQUIRE_DEVICE();
  // 100 new queries after 200 cached keys (query t at key index 200 + t), odd head_dim 40 and 24
  // (lanes owning dims past the head), one padded row.
  for (const int64_t head_dim : {40, 24}) {
    const AttentionCase c{"causal chunk head_dim " + std::to_string(head_dim),
                          2,
                          100,
                          300,
                          6,
                          2,
                          head_dim,
                          true,
                          true,
                          300,
                          {0, 5},
                          {300, 300},
                          false};
    run_attention_case(c);
  }
  AttentionCase misaligned{
      "causal chunk, misaligned keys/values", 2, 100, 300, 6, 2, 40, true, true, 300, {0, 5}, {300, 300}, false};
  misaligned.misalign = 4;
  run_attention_case(misaligned);
  // head_dim 256: eight dims per lane and over 48 KiB of shared memory.
  run_attention_case({"causal prefill head_dim 256", 1, 70, 70, 2, 1, 256, true, true, 80, {0}, {70}, false});
}

TEST(CudaAttention, DecodeSplitAndSingleBlock) {
  REQUIRE_DEVICE();
  for (const int64_t kv_len : {1000, 4097}) {
    for (const bool workspace : {true, false}) {
      const AttentionCase c{"decode kv_len " + std::to_string(kv_len) + (workspace ? " split" : " single block"),
                            2,
                            1,
                            kv_len,
                            4,
                            2,
                            128,
                            true,
                            true,
                            kv_len + 7,
                            {0, 5},
                            {kv_len, kv_len},
                            workspace};
      run_attention_case(c);
    }
  }
  // Tiny checkpoint shape (head_dim 16: two lanes per key), a few queries at once (causal inside the
  // decode kernel), and head_dim 256 (a full warp per key).
  run_attention_case({"decode head_dim 16", 1, 1, 37, 4, 2, 16, true, true, 40, {0}, {37}, true});
  run_attention_case({"decode 3 queries", 2, 3, 1000, 4, 2, 128, true, true, 1000, {3, 0}, {1000, 1000}, true});
  run_attention_case({"decode head_dim 256", 1, 1, 700, 2, 1, 256, true, true, 700, {0}, {700}, true});
  AttentionCase misaligned{
      "decode, misaligned keys/values", 2, 1, 1000, 4, 2, 128, true, true, 1000, {0, 5}, {1000, 1000}, true};
  misaligned.misalign = 4;
  run_attention_case(misaligned);
}

TEST(CudaAttention, QueryWithoutVisibleKeysGetsZeros) {
  REQUIRE_DEVICE();
  // Row 1 hides every key: both the decode path and the tiled path must write zeros for it.
  const AttentionCase decode{
      "decode, row without keys", 2, 1, 500, 4, 2, 64, true, true, 500, {0, 500}, {500, 500}, true};
  const std::vector<float> decode_out = run_attention_case(decode);
  expect_zero_query(decode_out, decode, 1, 0);
  const AttentionCase tiled{"encoder, row without keys", 2, 50, 50, 4, 4, 64, false, false, 0, {0, 0}, {50, 0}, false};
  const std::vector<float> tiled_out = run_attention_case(tiled);
  for (int64_t t = 0; t < 50; ++t) expect_zero_query(tiled_out, tiled, 1, t);
}

// ---- log-mel ---------------------------------------------------------------------------------------

TEST(CudaLogMel, MatchesReferenceAndCpu) {
  REQUIRE_DEVICE();
  const WhisperLogMel cpu;
  const int64_t n_samples = cpu.n_samples(), frames = cpu.num_frames(), mels = cpu.num_mel_bins();
  const std::vector<float> filters(cpu.mel_filters().begin(), cpu.mel_filters().end());
  gpu::LogMel log_mel(filters.data(), mels, cpu.options().n_fft, cpu.options().hop_length, n_samples);
  ASSERT_EQ(log_mel.mel_bins(), mels);
  ASSERT_EQ(gpu::LogMel::frames(n_samples, cpu.options().hop_length), frames);
  DeviceArray<float> waveform_d(n_samples), features_d(mels * frames);

  int cases = 0;
  for (const auto& entry : fs::directory_iterator(kReference / "mel")) {
    const std::string file = entry.path().filename().string();
    const std::string suffix = ".audio.npy";
    if (file.size() <= suffix.size() || file.compare(file.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const std::string name = file.substr(0, file.size() - suffix.size());
    std::vector<int64_t> shape;
    std::vector<float> audio = testing::read_npy<float>(entry.path(), &shape);
    const std::vector<float> golden =
        testing::read_npy<float>(kReference / "mel" / (name + ".input_features.npy"), &shape);
    ASSERT_EQ(shape, (std::vector<int64_t>{mels, frames})) << name;

    std::vector<float> from_cpu(mels * frames);
    const AudioSamples clip{audio.data(), audio.size()};
    cpu.compute({&clip, 1}, from_cpu.data(), nullptr);

    audio.resize(n_samples, 0.0f);  // pad or truncate to 30 s, as the processor does
    waveform_d.upload(audio);
    log_mel.compute(waveform_d.get(), n_samples, features_d.get(), nullptr);
    const std::vector<float> got = features_d.download();
    // The CPU test's tolerance against the goldens (tests/cpp/test_log_mel.cpp).
    expect_close(got, to_double(golden), 1e-4, 0.0, name + " vs reference");
    // Both double-precision DFTs, float mel sums: much closer to each other than to torch.
    expect_close(got, to_double(from_cpu), 2e-5, 0.0, name + " vs CPU log-mel");
    ++cases;
  }
  EXPECT_GE(cases, 5) << "reference clips found";
}

}  // namespace
}  // namespace qwen2audio
