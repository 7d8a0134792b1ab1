#include "kernels/cpu/linear.h"

#include <algorithm>

#include "kernels/cpu/quantized_gemm.h"
#include "runtime/buffer.h"
#include "runtime/errors.h"

namespace qwen2audio::kernels {
namespace {

// Rows of a quantized matrix widened per Gemm call: at least 4 MiB of float32, and at least
// kWidenRows rows up to 64 MiB. Each Gemm call re-reads and repacks the whole input and narrow
// products block less well, so few wide calls beat many narrow ones (gemm.cpp's kWidenBytes has
// the measurements of the same trade-off).
constexpr int64_t kWidenBytes = int64_t{4} << 20;
constexpr int64_t kWidenMaxBytes = int64_t{64} << 20;
constexpr int64_t kWidenRows = 4096;
// Rows widened per OpenMP task.
constexpr int64_t kWidenRowsPerTask = 16;

thread_local Buffer<float> tls_widened_f32;
thread_local Buffer<uint16_t> tls_widened_bf16;

DType plain_dtype(WeightFormat format) {
  if (format == WeightFormat::F32) return DType::F32;
  if (format == WeightFormat::BF16) return DType::BF16;
  throw InvalidArgument(std::string("the Gemm takes float32 or bfloat16 weights, not ") + weight_format_name(format));
}

// The Gemm on quantized weights: widen a block of weight rows, multiply, move on; the block is sized
// so the widened copy stays in scratch and the multiply amortises it.
void widened_gemm(Gemm& gemm, const Linear& layer, const float* x, int64_t rows, int64_t ldx, float* y, int64_t ldy,
                  bool accumulate, Activation activation) {
  const int64_t n = layer.out_features, k = layer.in_features;
  // BF16 only where the model computes in BF16 and the Gemm has it natively (AMX, AVX512-BF16);
  // elsewhere float32 is both exact and faster than the Gemm's emulated BF16.
  const bool bf16 = layer.widen_to_bf16 && gemm.native_bf16();
  const auto rows_in = [&](int64_t bytes) {
    return std::max<int64_t>(64, bytes / (k * 4) / kWidenRowsPerTask * kWidenRowsPerTask);
  };
  const int64_t block = std::max(rows_in(kWidenBytes), std::min({n, rows_in(kWidenMaxBytes), kWidenRows}));
  float* widened_f32 = bf16 ? nullptr : tls_widened_f32.reserve(static_cast<size_t>(std::min(block, n) * k));
  uint16_t* widened_bf16 = bf16 ? tls_widened_bf16.reserve(static_cast<size_t>(std::min(block, n) * k)) : nullptr;
  for (int64_t begin = 0; begin < n; begin += block) {
    const int64_t width = std::min(block, n - begin);
    const int64_t tasks = (width + kWidenRowsPerTask - 1) / kWidenRowsPerTask;
#pragma omp parallel for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t first = begin + task * kWidenRowsPerTask;
      const int64_t last = std::min(begin + width, first + kWidenRowsPerTask);
      if (bf16)
        dequantize_rows_bf16(layer.weight, k, first, last, widened_bf16 + (first - begin) * k, k);
      else
        dequantize_rows(layer.weight, k, first, last, widened_f32 + (first - begin) * k, k);
    }
    gemm({rows, width, k, x, ldx, bf16 ? static_cast<const void*>(widened_bf16) : widened_f32,
          bf16 ? DType::BF16 : DType::F32, k, layer.bias ? layer.bias + begin : nullptr, y + begin, ldy, accumulate,
          activation});
  }
}

}  // namespace

bool integer_kernels(const Gemm& gemm) { return gemm.options().integer_kernels && panels_supported(best_isa()); }

void linear(Gemm& gemm, const Linear& layer, const float* x, int64_t rows, int64_t ldx, float* y, int64_t ldy,
            bool accumulate, Activation activation) {
  const int64_t n = layer.out_features, k = layer.in_features;
  if (accumulate && activation != Activation::None)
    throw InvalidArgument("linear: an activation applies to a fresh product, not to y += x W^T");
  if (rows <= kGemvMaxRows) {
    GemvOptions options;
    options.round_bf16_inputs = gemm.options().round_bf16_inputs;
    gemv({rows, n, k, x, ldx, layer.weight, layer.bias, y, ldy, accumulate}, options);
    apply_activation(activation, y, rows, n, ldy);
  } else if (!layer.quantized()) {
    gemm({rows, n, k, x, ldx, layer.weight.data, plain_dtype(layer.weight.format), layer.weight.ld, layer.bias, y, ldy,
          accumulate, activation});
  } else if (layer.weight.layout == WeightLayout::Panels) {
    quantized_gemm({rows, n, k, x, ldx, layer.weight, layer.bias, y, ldy, accumulate});
    apply_activation(activation, y, rows, n, ldy);
  } else {
    widened_gemm(gemm, layer, x, rows, ldx, y, ldy, accumulate, activation);
  }
}

}  // namespace qwen2audio::kernels
