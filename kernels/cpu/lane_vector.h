#pragma once

#include <cstdint>
#include <cstring>

// Vectors wider than the baseline ISA only ever travel inside always-inlined code compiled for a
// matching target, so the ABI note GCC gives about passing them by value does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

// The spectral kernels put one audio frame in each lane of a SIMD vector, so every arithmetic step
// serves several frames at once with no shuffles. The lane count follows the tier the kernel runs
// on (float_lanes in cpu_features.h); each kernel is compiled once per width from the same
// templated body and picks its version at run time.
namespace qwen2audio::kernels {

// GCC takes no template-dependent vector_size, hence one specialisation per shape.
template <typename T, int kLanes>
struct VectorOf;
#define QWEN2AUDIO_VECTOR_OF(T, lanes)                                \
  template <>                                                         \
  struct VectorOf<T, lanes> {                                         \
    typedef T type __attribute__((vector_size(sizeof(T) * (lanes)))); \
  };
QWEN2AUDIO_VECTOR_OF(float, 2)
QWEN2AUDIO_VECTOR_OF(float, 4)
QWEN2AUDIO_VECTOR_OF(float, 8)
QWEN2AUDIO_VECTOR_OF(float, 16)
QWEN2AUDIO_VECTOR_OF(int32_t, 2)
QWEN2AUDIO_VECTOR_OF(int32_t, 4)
QWEN2AUDIO_VECTOR_OF(int32_t, 8)
QWEN2AUDIO_VECTOR_OF(int32_t, 16)
QWEN2AUDIO_VECTOR_OF(double, 2)
QWEN2AUDIO_VECTOR_OF(double, 4)
QWEN2AUDIO_VECTOR_OF(double, 8)
#undef QWEN2AUDIO_VECTOR_OF

// Float operations on kLanes frames.
template <int kLanes>
struct Lanes {
  using Floats = typename VectorOf<float, kLanes>::type;
  using Ints = typename VectorOf<int32_t, kLanes>::type;

  [[gnu::always_inline]] static Floats load(const float* aligned) { return *reinterpret_cast<const Floats*>(aligned); }
  [[gnu::always_inline]] static void store(float* aligned, const Floats& value) {
    *reinterpret_cast<Floats*>(aligned) = value;
  }
  [[gnu::always_inline]] static Floats load_unaligned(const float* pointer) {
    Floats value;
    std::memcpy(&value, pointer, sizeof(value));
    return value;
  }
  [[gnu::always_inline]] static void store_unaligned(float* pointer, const Floats& value) {
    std::memcpy(pointer, &value, sizeof(value));
  }
  [[gnu::always_inline]] static Floats max(const Floats& a, const Floats& b) { return a > b ? a : b; }
  [[gnu::always_inline]] static float horizontal_max(const Floats& value) {
    float result = value[0];
    for (int lane = 1; lane < kLanes; ++lane) result = value[lane] > result ? value[lane] : result;
    return result;
  }

  // log10 of positive, finite, normal inputs. x = 2^e * m with m in [sqrt(1/2), sqrt(2)); ln(m)
  // from the odd series 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.172, whose first dropped term is
  // below 1e-9: the result is within a few float ulps of log10.
  [[gnu::always_inline]] static Floats log10(const Floats& x) {
    Ints bits;
    std::memcpy(&bits, &x, sizeof(bits));
    Ints exponent = ((bits >> 23) & 0xff) - 127;
    const Ints mantissa_bits = (bits & 0x007fffff) | 0x3f800000;
    Floats mantissa;
    std::memcpy(&mantissa, &mantissa_bits, sizeof(mantissa));
    const Ints above = mantissa > 1.41421356f;  // -1 where true
    mantissa = above ? mantissa * 0.5f : mantissa;
    exponent -= above;
    const Floats s = (mantissa - 1.0f) / (mantissa + 1.0f);
    const Floats s2 = s * s;
    Floats series = s2 * (1.0f / 9.0f) + (1.0f / 7.0f);
    series = series * s2 + (1.0f / 5.0f);
    series = series * s2 + (1.0f / 3.0f);
    series = series * s2 + 1.0f;
    const Floats ln_mantissa = 2.0f * s * series;
    const Floats exponent_float = __builtin_convertvector(exponent, Floats);
    return exponent_float * 0.30102999566398120f + ln_mantissa * 0.43429448190325183f;
  }
};

}  // namespace qwen2audio::kernels
