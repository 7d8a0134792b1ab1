#include "kernels/cpu/elementwise.h"

#include <algorithm>

#include "kernels/cpu/vector_math.h"

namespace qwen2audio::kernels {
namespace {

// Elements per parallel work item: enough to amortise the hand-off, few enough to balance.
constexpr int64_t kChunk = 1 << 14;

struct ElementArgs {
  const float* a;
  const float* b;
  float* out;
  int64_t count;
};

// Applies op to [begin, end): whole vectors, then the tail through a padded vector.
template <int L, typename Op>
QWEN2AUDIO_ALWAYS_INLINE void apply_binary(const ElementArgs& args, int64_t begin, int64_t end, Op op) {
  using V = Vec<L>;
  int64_t i = begin;
  for (; i + L <= end; i += L) V::store(args.out + i, op(V::load(args.a + i), V::load(args.b + i)));
  if (i < end) {
    float a[L] = {}, b[L] = {}, out[L];
    std::copy(args.a + i, args.a + end, a);
    std::copy(args.b + i, args.b + end, b);
    V::store(out, op(V::load(a), V::load(b)));
    std::copy(out, out + (end - i), args.out + i);
  }
}

template <int L>
QWEN2AUDIO_ALWAYS_INLINE void gelu_range(const ElementArgs& args, int64_t begin, int64_t end) {
  apply_binary<L>(args, begin, end, [](auto x, auto) [[gnu::always_inline]] { return Vec<L>::gelu_erf(x); });
}
QWEN2AUDIO_LANE_VARIANTS(gelu_range, ElementArgs)

template <int L>
QWEN2AUDIO_ALWAYS_INLINE void silu_mul_range(const ElementArgs& args, int64_t begin, int64_t end) {
  apply_binary<L>(args, begin, end,
                  [](auto gate, auto up) [[gnu::always_inline]] { return Vec<L>::silu_mul(gate, up); });
}
QWEN2AUDIO_LANE_VARIANTS(silu_mul_range, ElementArgs)

using RangeWorker = void (*)(const ElementArgs&, int64_t, int64_t);

void run_chunks(RangeWorker worker, const ElementArgs& args) {
  const int64_t chunks = (args.count + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (chunks > 1)
  for (int64_t chunk = 0; chunk < chunks; ++chunk)
    worker(args, chunk * kChunk, std::min(args.count, (chunk + 1) * kChunk));
}

}  // namespace

void gelu_erf(float* x, int64_t count, Isa isa) {
  run_chunks(pick_variant(isa, gelu_range_avx512, gelu_range_avx2, gelu_range_baseline), {x, x, x, count});
}
void gelu_erf(float* x, int64_t count) { gelu_erf(x, count, best_isa()); }

void silu_mul(const float* gate, const float* up, float* out, int64_t count, Isa isa) {
  run_chunks(pick_variant(isa, silu_mul_range_avx512, silu_mul_range_avx2, silu_mul_range_baseline),
             {gate, up, out, count});
}
void silu_mul(const float* gate, const float* up, float* out, int64_t count) {
  silu_mul(gate, up, out, count, best_isa());
}

void add_rows(float* y, int64_t ldy, const float* x, int64_t ldx, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 15))
  for (int64_t row = 0; row < rows; ++row)
    for (int64_t col = 0; col < cols; ++col) y[row * ldy + col] += x[row * ldx + col];
}

}  // namespace qwen2audio::kernels
