#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace qwen2audio::text {

// A fast 64-bit hash for the short strings the tokenizer looks up millions of times (words of a
// few bytes): whole 8-byte loads instead of a byte loop, then a full avalanche so the low bits
// can index a power-of-two table. Not for untrusted-input hash flooding defence; tables using it
// probe linearly and stay correct whatever the collisions.
inline uint64_t hash_bytes(std::string_view text) {
  const auto load64 = [](const char* at) {
    uint64_t value;
    std::memcpy(&value, at, 8);
    return value;
  };
  const auto load32 = [](const char* at) {
    uint32_t value;
    std::memcpy(&value, at, 4);
    return static_cast<uint64_t>(value);
  };
  const auto mix = [](uint64_t value) {
    value ^= value >> 30;
    value *= 0xbf58476d1ce4e5b9ull;
    value ^= value >> 27;
    value *= 0x94d049bb133111ebull;
    return value ^ (value >> 31);
  };
  const char* data = text.data();
  const size_t size = text.size();
  uint64_t state = 0x9e3779b97f4a7c15ull * (size + 1);
  if (size >= 8) {
    size_t pos = 0;
    for (; pos + 8 <= size; pos += 8) state = mix(state ^ load64(data + pos));
    if (pos < size) state = mix(state ^ load64(data + size - 8));  // the tail, overlapping
  } else if (size >= 4) {
    state = mix(state ^ ((load32(data) << 32) | load32(data + size - 4)));
  } else if (size > 0) {
    const auto byte = [&](size_t at) { return static_cast<uint64_t>(static_cast<uint8_t>(data[at])); };
    state = mix(state ^ ((byte(0) << 16) | (byte(size / 2) << 8) | byte(size - 1)));
  }
  return mix(state);
}

}  // namespace qwen2audio::text
