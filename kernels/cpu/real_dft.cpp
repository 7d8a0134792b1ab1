#include "kernels/cpu/real_dft.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>
#include <stdexcept>
#include <string>

namespace qwen2audio::kernels {
namespace {

// A table entry: cos(angle), -sin(angle), i.e. the complex number exp(-i angle).
void put_root(double* entry, double angle) {
  entry[0] = std::cos(angle);
  entry[1] = -std::sin(angle);
}

// The split minimising the multiply-adds of both (folded) stages and the twiddles.
int choose_n1(int length) {
  const int bins = length / 2 + 1;
  int best = length;
  double best_cost = 1e300;
  for (int n1 = 1; n1 <= length; ++n1) {
    if (length % n1 != 0) continue;
    const int n2 = length / n1;
    const double stage1 = static_cast<double>(n2) * (n1 / 2 + 1) * (2 * ((n1 - 1) / 2) + 1 - n1 % 2);
    const double stage2 = n2 == 1 ? 0.0 : bins * (4.0 * ((n2 - 1) / 2) + 2.0 * (1 - n2 % 2)) + 4.0 * n1 * n2;
    if (stage1 + stage2 < best_cost) {
      best_cost = stage1 + stage2;
      best = n1;
    }
  }
  return best;
}

// The body, compiled once per ISA and precision. T: the arithmetic type; kLanes: frames per
// vector; kBlock: output columns accumulated in registers at once (two accumulators each), sized
// to the ISA's register file.
template <typename T, int kLanes, int kBlock>
struct Kernel {
  using Floats = typename VectorOf<T, kLanes>::type;  // T lanes
  using Power = typename VectorOf<float, kLanes>::type;
  using Plan = RealDftPlan<T>;

  struct L {
    [[gnu::always_inline]] static Floats load(const T* aligned) { return *reinterpret_cast<const Floats*>(aligned); }
    [[gnu::always_inline]] static void store(T* aligned, const Floats& value) {
      *reinterpret_cast<Floats*>(aligned) = value;
    }
  };

  [[gnu::always_inline]] static void store_power(float* row, const Floats& value) {
    const Power narrowed = __builtin_convertvector(value, Power);
    std::memcpy(row, &narrowed, sizeof(narrowed));
  }

  // Workspace layout, in rows of kLanes floats: frames [length], stage-1 output [n2][half1][re, im],
  // rotated column [n2][re, im].
  [[gnu::always_inline]] static void run(const Plan& plan, const float* first, std::ptrdiff_t frame_stride,
                                         float* power, void* workspace) {
    T* frames = static_cast<T*>(workspace);
    T* stage1_out = frames + static_cast<size_t>(plan.length) * kLanes;
    T* rotated = stage1_out + static_cast<size_t>(plan.n2) * plan.half1 * 2 * kLanes;

    gather(plan, first, frame_stride, frames);
    for (int residue = 0; residue < plan.n2; ++residue)
      for (int k1 = 0; k1 < plan.half1; k1 += kBlock)
        dispatch_stage1(std::min(kBlock, plan.half1 - k1), plan, frames, residue, k1, stage1_out);
    if (plan.n2 == 1) {  // a single direct DFT: the stage-1 outputs are the bins
      for (int k = 0; k < plan.half1; ++k) {
        const Floats re = L::load(stage1_out + static_cast<size_t>(k) * 2 * kLanes);
        const Floats im = L::load(stage1_out + static_cast<size_t>(k) * 2 * kLanes + kLanes);
        store_power(power + static_cast<size_t>(k) * kLanes, re * re + im * im);
      }
      return;
    }
    const int last_bin = plan.length / 2;
    for (int k1 = 0; k1 < plan.n1 && k1 <= last_bin; ++k1) {
      // Real input: stage-1 column n1 - k1 is the conjugate of column k1.
      const bool mirrored = k1 >= plan.half1;
      const int column = mirrored ? plan.n1 - k1 : k1;
      const T conjugate = mirrored ? -1 : 1;
      for (int i2 = 0; i2 < plan.n2; ++i2) {
        const T* y = stage1_out + (static_cast<size_t>(i2) * plan.half1 + column) * 2 * kLanes;
        const Floats yr = L::load(y);
        const Floats yi = L::load(y + kLanes) * conjugate;
        const T* t = plan.twiddle + (static_cast<size_t>(k1) * plan.n2 + i2) * 2;
        T* z = rotated + static_cast<size_t>(i2) * 2 * kLanes;
        L::store(z, yr * t[0] - yi * t[1]);
        L::store(z + kLanes, yr * t[1] + yi * t[0]);
      }
      const int k2_total = (last_bin - k1) / plan.n1 + 1;
      for (int k2 = 0; k2 < k2_total; k2 += kBlock)
        dispatch_stage2(std::min(kBlock, k2_total - k2), plan, rotated, k1, k2, power);
    }
  }

  // Transposes kLanes (overlapping) frames into lanes, applying the window.
  [[gnu::always_inline]] static void gather(const Plan& plan, const float* first, std::ptrdiff_t frame_stride,
                                            T* frames) {
    for (int lane = 0; lane < kLanes; ++lane) {
      const float* source = first + lane * frame_stride;
      if (plan.window != nullptr) {
        for (int i = 0; i < plan.length; ++i) frames[i * kLanes + lane] = static_cast<T>(source[i]) * plan.window[i];
      } else {
        for (int i = 0; i < plan.length; ++i) frames[i * kLanes + lane] = static_cast<T>(source[i]);
      }
    }
  }

  // Stage 1 for one residue, outputs k1_begin .. k1_begin + kCount - 1. The input is real, so inputs i
  // and n1 - i meet the same cosine and opposite sines: folding them first (their sum feeds the real
  // part, their difference the imaginary part) halves the multiply-adds.
  template <int kCount>
  [[gnu::always_inline]] static void stage1(const Plan& plan, const T* frames, int residue, int k1_begin, T* out) {
    const auto input = [&](int i1) { return L::load(frames + static_cast<size_t>(i1 * plan.n2 + residue) * kLanes); };
    Floats re[kCount], im[kCount];
    const Floats first = input(0);
#pragma GCC unroll 16
    for (int b = 0; b < kCount; ++b) {
      re[b] = first;
      im[b] = Floats{};
    }
    const int pairs = (plan.n1 - 1) / 2;
    for (int i1 = 1; i1 <= pairs; ++i1) {
      const Floats a = input(i1), b_ = input(plan.n1 - i1);
      const Floats sum = a + b_, difference = a - b_;
      const T* coefficient = plan.stage1 + (static_cast<size_t>(i1) * plan.half1 + k1_begin) * 2;
#pragma GCC unroll 16
      for (int b = 0; b < kCount; ++b) {
        re[b] += sum * coefficient[2 * b];
        im[b] += difference * coefficient[2 * b + 1];
      }
    }
    if (plan.n1 % 2 == 0 && plan.n1 > 1) {  // the middle input is its own mirror: cos = (-1)^k, sin = 0
      const int middle = plan.n1 / 2;
      const Floats x = input(middle);
      const T* coefficient = plan.stage1 + (static_cast<size_t>(middle) * plan.half1 + k1_begin) * 2;
#pragma GCC unroll 16
      for (int b = 0; b < kCount; ++b) re[b] += x * coefficient[2 * b];
    }
#pragma GCC unroll 16
    for (int b = 0; b < kCount; ++b) {
      T* row = out + (static_cast<size_t>(residue) * plan.half1 + k1_begin + b) * 2 * kLanes;
      L::store(row, re[b]);
      L::store(row + kLanes, im[b]);
    }
  }

  // Stage 2 for one twiddled column k1: bins k1 + n1 * k2, k2 = k2_begin .. + kCount - 1, as power.
  // Inputs j and n2 - j meet conjugate roots, so with S = Z[j] + Z[n2-j], D = Z[j] - Z[n2-j] and the
  // root c - i s: X += c S - i s D, four multiply-adds per pair instead of eight.
  template <int kCount>
  [[gnu::always_inline]] static void stage2(const Plan& plan, const T* rotated, int k1, int k2_begin, float* power) {
    const auto real = [&](int i2) { return L::load(rotated + static_cast<size_t>(i2) * 2 * kLanes); };
    const auto imaginary = [&](int i2) { return L::load(rotated + static_cast<size_t>(i2) * 2 * kLanes + kLanes); };
    Floats re[kCount], im[kCount];
    const Floats first_re = real(0), first_im = imaginary(0);
#pragma GCC unroll 16
    for (int b = 0; b < kCount; ++b) {
      re[b] = first_re;
      im[b] = first_im;
    }
    const int pairs = (plan.n2 - 1) / 2;
    for (int j = 1; j <= pairs; ++j) {
      const Floats ar = real(j), ai = imaginary(j), br = real(plan.n2 - j), bi = imaginary(plan.n2 - j);
      const Floats sum_re = ar + br, sum_im = ai + bi, difference_re = ar - br, difference_im = ai - bi;
      const T* coefficient = plan.stage2 + (static_cast<size_t>(j) * plan.k2_count + k2_begin) * 2;
#pragma GCC unroll 16
      for (int b = 0; b < kCount; ++b) {
        const T c = coefficient[2 * b], minus_s = coefficient[2 * b + 1];
        // Separate multiply-adds: written as one expression, GCC emits extra operations.
        re[b] += sum_re * c;
        re[b] -= difference_im * minus_s;
        im[b] += sum_im * c;
        im[b] += difference_re * minus_s;
      }
    }
    if (plan.n2 % 2 == 0) {  // the middle input: root (-1)^k2
      const int middle = plan.n2 / 2;
      const Floats zr = real(middle), zi = imaginary(middle);
      const T* coefficient = plan.stage2 + (static_cast<size_t>(middle) * plan.k2_count + k2_begin) * 2;
#pragma GCC unroll 16
      for (int b = 0; b < kCount; ++b) {
        re[b] += zr * coefficient[2 * b];
        im[b] += zi * coefficient[2 * b];
      }
    }
#pragma GCC unroll 16
    for (int b = 0; b < kCount; ++b) {
      const int bin = k1 + plan.n1 * (k2_begin + b);
      store_power(power + static_cast<size_t>(bin) * kLanes, re[b] * re[b] + im[b] * im[b]);
    }
  }

  // The accumulators must be compile-time arrays to stay in registers, hence one instance per count.
  template <int kCount = kBlock>
  [[gnu::always_inline]] static void dispatch_stage1(int count, const Plan& plan, const T* frames, int residue, int k1,
                                                     T* out) {
    if constexpr (kCount > 1) {
      if (count < kCount) return dispatch_stage1<kCount - 1>(count, plan, frames, residue, k1, out);
    }
    stage1<kCount>(plan, frames, residue, k1, out);
  }

  template <int kCount = kBlock>
  [[gnu::always_inline]] static void dispatch_stage2(int count, const Plan& plan, const T* rotated, int k1, int k2,
                                                     float* power) {
    if constexpr (kCount > 1) {
      if (count < kCount) return dispatch_stage2<kCount - 1>(count, plan, rotated, k1, k2, power);
    }
    stage2<kCount>(plan, rotated, k1, k2, power);
  }
};

// 32 vector registers hold 2 x 12 accumulators and the operands; 16 registers hold 2 x 6.
template <typename T>
[[gnu::target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,bmi2")]] void run_avx512(const RealDftPlan<T>& plan,
                                                                                    const float* first,
                                                                                    std::ptrdiff_t frame_stride,
                                                                                    float* power, void* workspace) {
  Kernel<T, 64 / sizeof(T), 12>::run(plan, first, frame_stride, power, workspace);
}

template <typename T>
[[gnu::target("avx2,fma,bmi2")]] void run_avx2(const RealDftPlan<T>& plan, const float* first,
                                               std::ptrdiff_t frame_stride, float* power, void* workspace) {
  Kernel<T, 32 / sizeof(T), 6>::run(plan, first, frame_stride, power, workspace);
}

template <typename T>
void run_sse(const RealDftPlan<T>& plan, const float* first, std::ptrdiff_t frame_stride, float* power,
             void* workspace) {
  Kernel<T, 16 / sizeof(T), 6>::run(plan, first, frame_stride, power, workspace);
}

template <typename T>
void run(Isa isa, const RealDftPlan<T>& plan, const float* first, std::ptrdiff_t frame_stride, float* power,
         void* workspace) {
  if (isa >= Isa::Avx512) return run_avx512(plan, first, frame_stride, power, workspace);
  if (isa >= Isa::Avx2) return run_avx2(plan, first, frame_stride, power, workspace);
  run_sse(plan, first, frame_stride, power, workspace);
}

}  // namespace

RealDftPower::RealDftPower(int length, const std::vector<float>& window, DftPrecision precision, Isa isa)
    : length_(length), precision_(precision), isa_(isa) {
  if (length < 2) throw std::invalid_argument("RealDftPower: length must be at least 2, got " + std::to_string(length));
  if (!window.empty() && static_cast<int>(window.size()) != length)
    throw std::invalid_argument("RealDftPower: window has " + std::to_string(window.size()) + " values, expected " +
                                std::to_string(length));
  n1_ = choose_n1(length);
  n2_ = length / n1_;
  half1_ = n1_ / 2 + 1;
  k2_count_ = (length / 2) / n1_ + 1;
  const double two_pi = 2.0 * std::numbers::pi;
  // Angles are reduced modulo the period before the (double) sine, so each table entry is the
  // correctly rounded value of the exact root of unity.
  std::vector<double> stage1(static_cast<size_t>(n1_) * half1_ * 2);
  for (int i1 = 0; i1 < n1_; ++i1)
    for (int k1 = 0; k1 < half1_; ++k1)
      put_root(&stage1[(static_cast<size_t>(i1) * half1_ + k1) * 2], two_pi * ((i1 * k1) % n1_) / n1_);
  std::vector<double> twiddle(static_cast<size_t>(n1_) * n2_ * 2);
  for (int k1 = 0; k1 < n1_; ++k1)
    for (int i2 = 0; i2 < n2_; ++i2)
      put_root(&twiddle[(static_cast<size_t>(k1) * n2_ + i2) * 2], two_pi * ((k1 * i2) % length) / length);
  std::vector<double> stage2(static_cast<size_t>(n2_) * k2_count_ * 2);
  for (int i2 = 0; i2 < n2_; ++i2)
    for (int k2 = 0; k2 < k2_count_; ++k2)
      put_root(&stage2[(static_cast<size_t>(i2) * k2_count_ + k2) * 2], two_pi * ((i2 * k2) % n2_) / n2_);
  const std::vector<double> window_values(window.begin(), window.end());
  if (precision_ == DftPrecision::kDouble) {
    tables_double_ = {window_values, std::move(stage1), std::move(twiddle), std::move(stage2)};
  } else {
    const auto narrow = [](const std::vector<double>& values) {
      return std::vector<float>(values.begin(), values.end());
    };
    tables_float_ = {narrow(window_values), narrow(stage1), narrow(twiddle), narrow(stage2)};
  }
}

int RealDftPower::lanes() const {
  return precision_ == DftPrecision::kDouble ? float_lanes(isa_) / 2 : float_lanes(isa_);
}

size_t RealDftPower::workspace_bytes() const {
  const size_t scalar = precision_ == DftPrecision::kDouble ? 8 : 4;
  return (static_cast<size_t>(length_) + static_cast<size_t>(n2_) * half1_ * 2 + static_cast<size_t>(n2_) * 2) *
         lanes() * scalar;
}

template <typename T>
RealDftPlan<T> RealDftPower::plan(const Tables<T>& tables) const {
  return RealDftPlan<T>{length_,
                        n1_,
                        n2_,
                        half1_,
                        k2_count_,
                        tables.window.empty() ? nullptr : tables.window.data(),
                        tables.stage1.data(),
                        tables.twiddle.data(),
                        tables.stage2.data()};
}

void RealDftPower::compute(const float* first, std::ptrdiff_t frame_stride, float* power, void* workspace) const {
  if (precision_ == DftPrecision::kDouble)
    run(isa_, plan(tables_double_), first, frame_stride, power, workspace);
  else
    run(isa_, plan(tables_float_), first, frame_stride, power, workspace);
}

}  // namespace qwen2audio::kernels
