#include "kernels/cpu/norm.h"

#include <cmath>

#include "kernels/cpu/vector_math.h"

namespace qwen2audio::kernels {
namespace {

struct NormArgs {
  const float* x;
  int64_t dim, ldx;
  const float* weight;
  const float* bias;
  float eps;
  float* out;
  int64_t ldout;
};

// Sum over the row of f(x[i]) in double: each float vector is widened to two double vectors.
template <int L, typename F>
QWEN2AUDIO_ALWAYS_INLINE double row_sum(const float* in, int64_t dim, F f) {
  using V = Vec<L>;
  using Halves = typename VectorOf<float, L / 2>::type;
  using Doubles = typename VectorOf<double, L / 2>::type;
  Doubles low{}, high{};
  int64_t i = 0;
  for (; i + L <= dim; i += L) {
    const typename V::Floats value = V::load(in + i);
    Halves first, second;
    __builtin_memcpy(&first, &value, sizeof(first));
    __builtin_memcpy(&second, reinterpret_cast<const char*>(&value) + sizeof(first), sizeof(second));
    low += f(__builtin_convertvector(first, Doubles));
    high += f(__builtin_convertvector(second, Doubles));
  }
  const Doubles both = low + high;
  double total = 0.0;
  for (int lane = 0; lane < L / 2; ++lane) total += both[lane];
  for (; i < dim; ++i) {
    Doubles single{};
    single[0] = in[i];
    total += f(single)[0];
  }
  return total;
}

template <int L>
QWEN2AUDIO_ALWAYS_INLINE void rms_rows(const NormArgs& args, int64_t begin, int64_t end) {
  using V = Vec<L>;
  for (int64_t row = begin; row < end; ++row) {
    const float* in = args.x + row * args.ldx;
    float* result = args.out + row * args.ldout;
    const double squares = row_sum<L>(in, args.dim, [](auto v) [[gnu::always_inline]] { return v * v; });
    const float variance = static_cast<float>(squares / static_cast<double>(args.dim));
    const float inverse = 1.0f / std::sqrt(variance + args.eps);
    const typename V::Floats scale = V::splat(inverse);
    int64_t i = 0;
    for (; i + L <= args.dim; i += L) V::store(result + i, V::load(args.weight + i) * (V::load(in + i) * scale));
    for (; i < args.dim; ++i) result[i] = args.weight[i] * (in[i] * inverse);
  }
}
QWEN2AUDIO_LANE_VARIANTS(rms_rows, NormArgs)

template <int L>
QWEN2AUDIO_ALWAYS_INLINE void layer_rows(const NormArgs& args, int64_t begin, int64_t end) {
  using V = Vec<L>;
  for (int64_t row = begin; row < end; ++row) {
    const float* in = args.x + row * args.ldx;
    float* result = args.out + row * args.ldout;
    const double mean =
        row_sum<L>(in, args.dim, [](auto v) [[gnu::always_inline]] { return v; }) / static_cast<double>(args.dim);
    const double squares =
        row_sum<L>(in, args.dim, [mean](auto v) [[gnu::always_inline]] { return (v - mean) * (v - mean); });
    const float variance = static_cast<float>(squares / static_cast<double>(args.dim));
    const float inverse = 1.0f / std::sqrt(variance + args.eps);
    const float mean_f = static_cast<float>(mean);
    const typename V::Floats shift = V::splat(mean_f), scale = V::splat(inverse);
    int64_t i = 0;
    for (; i + L <= args.dim; i += L)
      V::store(result + i, (V::load(in + i) - shift) * scale * V::load(args.weight + i) + V::load(args.bias + i));
    for (; i < args.dim; ++i) result[i] = (in[i] - mean_f) * inverse * args.weight[i] + args.bias[i];
  }
}
QWEN2AUDIO_LANE_VARIANTS(layer_rows, NormArgs)

using RowWorker = void (*)(const NormArgs&, int64_t, int64_t);

void run_rows(RowWorker worker, const NormArgs& args, int64_t rows) {
#pragma omp parallel for schedule(static) if (rows * args.dim > (1 << 15))
  for (int64_t row = 0; row < rows; ++row) worker(args, row, row + 1);
}

}  // namespace

void rms_norm(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight, float eps, float* out,
              int64_t ldout, Isa isa) {
  run_rows(pick_variant(isa, rms_rows_avx512, rms_rows_avx2, rms_rows_baseline),
           {x, dim, ldx, weight, nullptr, eps, out, ldout}, rows);
}
void rms_norm(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight, float eps, float* out,
              int64_t ldout) {
  rms_norm(x, rows, dim, ldx, weight, eps, out, ldout, best_isa());
}

void layer_norm(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight, const float* bias,
                float eps, float* out, int64_t ldout, Isa isa) {
  run_rows(pick_variant(isa, layer_rows_avx512, layer_rows_avx2, layer_rows_baseline),
           {x, dim, ldx, weight, bias, eps, out, ldout}, rows);
}
void layer_norm(const float* x, int64_t rows, int64_t dim, int64_t ldx, const float* weight, const float* bias,
                float eps, float* out, int64_t ldout) {
  layer_norm(x, rows, dim, ldx, weight, bias, eps, out, ldout, best_isa());
}

}  // namespace qwen2audio::kernels
