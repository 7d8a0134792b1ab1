#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/lane_vector.h"

// Lane-generic float arithmetic for the model kernels (attention, norms, activations): one body
// per kernel, written once against Vec<kLanes>, instantiated for 16 lanes (AVX-512), 8 (AVX2 +
// FMA) and 4 (the x86-64 baseline) and chosen at run time. The bodies are always inlined into an
// entry point compiled for its ISA (gnu::target), so the vector types never cross a call of the
// baseline ABI and `a * b + c` becomes one fused multiply-add where the target has FMA.
//
// The transcendental functions are ours: range reduction to a small interval plus a polynomial,
// with coefficients from Taylor series (exp) or a least-squares fit computed for this file
// (erfc), accurate to a few float ulps over the ranges the kernels use.
namespace qwen2audio::kernels {

#define QWEN2AUDIO_ALWAYS_INLINE [[gnu::always_inline]] inline

template <int kLanes>
struct HalvesOf;
template <>
struct HalvesOf<4> {
  typedef uint16_t type __attribute__((vector_size(8)));
};
template <>
struct HalvesOf<8> {
  typedef uint16_t type __attribute__((vector_size(16)));
};
template <>
struct HalvesOf<16> {
  typedef uint16_t type __attribute__((vector_size(32)));
};

template <int kLanes>
struct Vec {
  using Floats = typename VectorOf<float, kLanes>::type;
  using Ints = typename VectorOf<int32_t, kLanes>::type;
  using Halves = typename HalvesOf<kLanes>::type;
  static constexpr int kWidth = kLanes;

  QWEN2AUDIO_ALWAYS_INLINE static Floats load(const float* pointer) {
    Floats value;
    std::memcpy(&value, pointer, sizeof(value));
    return value;
  }
  QWEN2AUDIO_ALWAYS_INLINE static void store(float* pointer, const Floats& value) {
    std::memcpy(pointer, &value, sizeof(value));
  }
  // kLanes BF16 values widened to float (exact). On AVX targets one vpmovzxwd from memory: GCC 12
  // lowers the vector conversion to two half-width ones and an insert (five instructions for AVX2,
  // four for AVX-512), which left decode attention's passes over the cache bound by those shuffles
  // rather than by memory. (The asm only ever expands inside functions compiled for AVX2 or above.)
  QWEN2AUDIO_ALWAYS_INLINE static Floats load_bf16(const uint16_t* pointer) {
    Ints wide;
    if constexpr (kLanes >= 8) {
      asm("vpmovzxwd %1, %0" : "=v"(wide) : "m"(*reinterpret_cast<const Halves*>(pointer)));
    } else {
      Halves halves;
      std::memcpy(&halves, pointer, sizeof(halves));
      wide = __builtin_convertvector(halves, Ints);
    }
    const Ints bits = wide << 16;
    Floats value;
    std::memcpy(&value, &bits, sizeof(value));
    return value;
  }
  // A broadcast (a lane-by-lane fill compiles to a chain of inserts).
  QWEN2AUDIO_ALWAYS_INLINE static Floats splat(float value) {
    Floats first{};
    first[0] = value;
    if constexpr (kLanes == 16)
      return __builtin_shufflevector(first, first, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    else if constexpr (kLanes == 8)
      return __builtin_shufflevector(first, first, 0, 0, 0, 0, 0, 0, 0, 0);
    else
      return __builtin_shufflevector(first, first, 0, 0, 0, 0);
  }
  // *pointer in every lane. On AVX targets one vbroadcastss from memory: GCC builds a splat as a
  // scalar load plus a register broadcast, two uops where the second competes with the FMA pipes
  // in the micro-kernels. (The asm only ever expands inside functions compiled for AVX.)
  QWEN2AUDIO_ALWAYS_INLINE static Floats broadcast(const float* pointer) {
    if constexpr (kLanes >= 8) {
      Floats result;
      asm("vbroadcastss %1, %0" : "=x"(result) : "m"(*pointer));
      return result;
    } else {
      return splat(*pointer);
    }
  }
  QWEN2AUDIO_ALWAYS_INLINE static Floats max(const Floats& a, const Floats& b) { return a > b ? a : b; }
  QWEN2AUDIO_ALWAYS_INLINE static Floats min(const Floats& a, const Floats& b) { return a < b ? a : b; }
  // Horizontal sum and maximum by halving (log2 kLanes shuffles).
  QWEN2AUDIO_ALWAYS_INLINE static float sum(const Floats& value) {
    if constexpr (kLanes == 16) {
      return Vec<8>::sum(__builtin_shufflevector(value, value, 0, 1, 2, 3, 4, 5, 6, 7) +
                         __builtin_shufflevector(value, value, 8, 9, 10, 11, 12, 13, 14, 15));
    } else if constexpr (kLanes == 8) {
      return Vec<4>::sum(__builtin_shufflevector(value, value, 0, 1, 2, 3) +
                         __builtin_shufflevector(value, value, 4, 5, 6, 7));
    } else {
      const Floats pairs = value + __builtin_shufflevector(value, value, 2, 3, 0, 1);
      return (pairs + __builtin_shufflevector(pairs, pairs, 1, 0, 3, 2))[0];
    }
  }
  QWEN2AUDIO_ALWAYS_INLINE static float max(const Floats& value) {
    if constexpr (kLanes == 16) {
      return Vec<8>::max(Vec<8>::max(__builtin_shufflevector(value, value, 0, 1, 2, 3, 4, 5, 6, 7),
                                     __builtin_shufflevector(value, value, 8, 9, 10, 11, 12, 13, 14, 15)));
    } else if constexpr (kLanes == 8) {
      return Vec<4>::max(Vec<4>::max(__builtin_shufflevector(value, value, 0, 1, 2, 3),
                                     __builtin_shufflevector(value, value, 4, 5, 6, 7)));
    } else {
      const Floats pairs = max(value, __builtin_shufflevector(value, value, 2, 3, 0, 1));
      return max(pairs, __builtin_shufflevector(pairs, pairs, 1, 0, 3, 2))[0];
    }
  }
  QWEN2AUDIO_ALWAYS_INLINE static Floats bits_to_floats(const Ints& bits) {
    Floats value;
    std::memcpy(&value, &bits, sizeof(value));
    return value;
  }

  // Nearest integer (ties to even) of |x| < 2^22, as a float: adding 1.5 * 2^23 leaves no
  // fraction bits. The compiler may not fold (x + c) - c without -ffast-math.
  QWEN2AUDIO_ALWAYS_INLINE static Floats round(const Floats& x) {
    constexpr float kShifter = 12582912.0f;
    return (x + kShifter) - kShifter;
  }

  // e^r for |r| <= ln(2)/2: Taylor series to r^7, whose first dropped term is below 5e-9
  // relative, under half a float ulp.
  QWEN2AUDIO_ALWAYS_INLINE static Floats exp_reduced(const Floats& r) {
    Floats p = splat(1.0f / 5040.0f);
    p = p * r + (1.0f / 720.0f);
    p = p * r + (1.0f / 120.0f);
    p = p * r + (1.0f / 24.0f);
    p = p * r + (1.0f / 6.0f);
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    return p * r + 1.0f;
  }
  // p * 2^n for integral n in [-126, 127] (p within [0.7, 1.5]), by adding n to the exponent.
  QWEN2AUDIO_ALWAYS_INLINE static Floats scale_by_power_of_2(const Floats& p, const Floats& n) {
    Ints bits;
    std::memcpy(&bits, &p, sizeof(bits));
    bits += __builtin_convertvector(n, Ints) << 23;
    return bits_to_floats(bits);
  }

  // 2^y. Inputs below -126 give 2^-126 (not zero: callers that need exact zeros for -infinity
  // select them); inputs above 127 give about 2^127.
  QWEN2AUDIO_ALWAYS_INLINE static Floats exp2(Floats y) {
    y = min(max(y, splat(-126.0f)), splat(127.0f));
    const Floats n = round(y);
    return scale_by_power_of_2(exp_reduced((y - n) * 0.693147180559945309f), n);
  }

  // 2^y for y <= 0 (softmax weights after subtracting the maximum), a little cheaper than exp2:
  // 2^f on [-1/2, 1/2] by its Taylor series in f (coefficients ln2^k / k!) to f^6, within 1.2e-7
  // relative (2 ulps). Inputs below -126 give 2^-126.
  QWEN2AUDIO_ALWAYS_INLINE static Floats exp2_nonpositive(Floats y) {
    y = max(y, splat(-126.0f));
    const Floats n = round(y);
    const Floats f = y - n;
    Floats p = splat(1.5403530393381609e-4f);
    p = p * f + 1.3333558146428443e-3f;
    p = p * f + 9.6181291076284772e-3f;
    p = p * f + 5.5504108664821580e-2f;
    p = p * f + 0.24022650695910071f;
    p = p * f + 0.69314718055994531f;
    p = p * f + 1.0f;
    return scale_by_power_of_2(p, n);
  }

  // e^x with Cody-Waite reduction x = n ln2 + r (ln2 split in a part exact in float and the
  // rest), so that large |x| keep full relative accuracy. Results below float's normal range
  // flush to 0 (x < -87.33) and overflow gives +inf (x > 88.72), as float arithmetic would
  // (exp(88.3..88.72) returns exp(88.3)).
  QWEN2AUDIO_ALWAYS_INLINE static Floats exp(const Floats& x) {
    const Floats clamped = min(max(x, splat(-87.33f)), splat(88.3f));
    const Floats n = round(clamped * 1.44269504088896341f);
    const Floats r = (clamped - n * 0.693359375f) - n * -2.12194440e-4f;
    Floats result = scale_by_power_of_2(exp_reduced(r), n);
    result = x < -87.33f ? splat(0.0f) : result;
    return x > 88.7228f ? splat(__builtin_inff()) : result;
  }

  // erfc(z) for z >= 0 as g(t) e^(-z^2), t = 1 / (1 + z / 2), where g(t) = erfc(z) e^(z^2) is a
  // smooth function of t in (0, 1]. The degree-9 polynomial was fitted for this file by weighted
  // least squares (float64, 4000 Chebyshev nodes of t for z in [0, 10]) to 3.2e-8 relative; float
  // evaluation leaves about 3e-7 relative. z above 10 gives 0 (erfc(10) = 2e-45).
  // `square` is z^2, which callers may have with one rounding less than z * z.
  QWEN2AUDIO_ALWAYS_INLINE static Floats erfc_nonnegative(Floats z, Floats square) {
    z = min(z, splat(10.0f));
    square = min(square, splat(100.0f));
    const Floats t = 1.0f / (1.0f + 0.5f * z);
    Floats g = splat(-5.505177056e-02f);
    g = g * t + 2.639055290e-01f;
    g = g * t + -4.414829850e-01f;
    g = g * t + 2.211975368e-01f;
    g = g * t + 1.707269224e-02f;
    g = g * t + 1.812522789e-01f;
    g = g * t + 2.497927676e-01f;
    g = g * t + 2.810985667e-01f;
    g = g * t + 2.822213627e-01f;
    g = g * t + -6.010694163e-06f;
    return g * exp(-square);
  }

  // x * Phi(x) = x (1 + erf(x / sqrt 2)) / 2. 1 + erf(z) is taken as 2 - erfc(z) for z >= 0 and
  // erfc(-z) below, so negative inputs keep relative accuracy instead of cancelling. z^2 = x^2 / 2
  // is rounded once: exp(-z^2) turns its rounding into relative error times z^2.
  QWEN2AUDIO_ALWAYS_INLINE static Floats gelu_erf(const Floats& x) {
    const Floats z = x * 0.70710678118654752f;
    const Floats tail = erfc_nonnegative(z < 0.0f ? -z : z, (0.5f * x) * x);
    const Floats one_plus_erf = z < 0.0f ? tail : 2.0f - tail;
    return 0.5f * x * one_plus_erf;
  }

  // silu(g) * u = g u / (1 + e^-g).
  QWEN2AUDIO_ALWAYS_INLINE static Floats silu_mul(const Floats& gate, const Floats& up) {
    return gate * up / (1.0f + exp(-gate));
  }
};

// Entry points per ISA. OpenMP outlines parallel regions before inlining, under the target of the
// function holding the pragma, so parallel loops stay in plain functions and call per-ISA
// workers made by this macro: `body` is a template on the lane count taking (const Args&,
// int64_t begin, int64_t end); the macro defines body_avx512, body_avx2 and body_baseline.
#define QWEN2AUDIO_LANE_VARIANTS(body, Args)                                                             \
  [[gnu::target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma,f16c,bmi2")]] void body##_avx512(           \
      const Args& args, int64_t begin, int64_t end) {                                                    \
    body<16>(args, begin, end);                                                                          \
  }                                                                                                      \
  [[gnu::target("avx2,fma,f16c,bmi2")]] void body##_avx2(const Args& args, int64_t begin, int64_t end) { \
    body<8>(args, begin, end);                                                                           \
  }                                                                                                      \
  void body##_baseline(const Args& args, int64_t begin, int64_t end) { body<4>(args, begin, end); }

template <typename Fn>
Fn pick_variant(Isa isa, Fn avx512, Fn avx2, Fn baseline) {
  return isa >= Isa::Avx512 ? avx512 : isa >= Isa::Avx2 ? avx2 : baseline;
}

}  // namespace qwen2audio::kernels
