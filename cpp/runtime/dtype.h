#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace qwen2audio {

// Element types of the safetensors format. The engine computes in F32 and BF16; the others are
// readable so that any valid checkpoint file can be inspected.
enum class DType : uint8_t { Bool, U8, I8, F8_E4M3, F8_E5M2, I16, U16, F16, BF16, I32, U32, F32, I64, U64, F64 };

size_t dtype_size(DType dtype);
std::string_view dtype_name(DType dtype);  // the safetensors spelling, e.g. "BF16"
std::optional<DType> dtype_from_name(std::string_view name);

inline float bf16_to_float(uint16_t bits) {
  uint32_t widened = static_cast<uint32_t>(bits) << 16;
  float value;
  __builtin_memcpy(&value, &widened, sizeof(value));
  return value;
}

// Round to nearest even, as torch does when casting float32 to bfloat16; NaN stays NaN.
inline uint16_t float_to_bf16(float value) {
  uint32_t bits;
  __builtin_memcpy(&bits, &value, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

float f16_to_float(uint16_t bits);

}  // namespace qwen2audio
