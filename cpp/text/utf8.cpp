#include "text/utf8.h"

#include <cstdint>

namespace qwen2audio::text {
namespace {

// Bounds of the second byte of a sequence by lead byte (Unicode Table 3-7): this is what excludes
// overlong forms, surrogates and code points past U+10FFFF at the earliest byte.
struct LeadInfo {
  int length;  // 0: not a valid lead byte
  uint8_t second_min;
  uint8_t second_max;
};

constexpr LeadInfo lead_info(uint8_t byte) {
  if (byte < 0x80) return {1, 0, 0};
  if (byte < 0xC2) return {0, 0, 0};
  if (byte < 0xE0) return {2, 0x80, 0xBF};
  if (byte == 0xE0) return {3, 0xA0, 0xBF};
  if (byte == 0xED) return {3, 0x80, 0x9F};
  if (byte < 0xF0) return {3, 0x80, 0xBF};
  if (byte == 0xF0) return {4, 0x90, 0xBF};
  if (byte < 0xF4) return {4, 0x80, 0xBF};
  if (byte == 0xF4) return {4, 0x80, 0x8F};
  return {0, 0, 0};
}

enum class Scan { Complete, Truncated, Invalid };

// Examines the sequence starting at `pos`; `length` receives the bytes of a complete sequence, or
// the bytes of the maximal ill-formed subpart (at least 1) when invalid, or the available bytes
// when truncated.
Scan scan_sequence(const uint8_t* data, size_t size, size_t pos, size_t& length) {
  const LeadInfo info = lead_info(data[pos]);
  if (info.length == 1) {
    length = 1;
    return Scan::Complete;
  }
  if (info.length == 0) {
    length = 1;
    return Scan::Invalid;
  }
  size_t index = 1;
  for (; index < static_cast<size_t>(info.length); ++index) {
    if (pos + index >= size) {
      length = index;
      return Scan::Truncated;
    }
    const uint8_t byte = data[pos + index];
    const bool ok = index == 1 ? (byte >= info.second_min && byte <= info.second_max) : (byte & 0xC0) == 0x80;
    if (!ok) {
      length = index;
      return Scan::Invalid;
    }
  }
  length = index;
  return Scan::Complete;
}

}  // namespace

size_t find_invalid_utf8(std::string_view bytes) {
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t size = bytes.size();
  size_t pos = 0;
  while (pos < size) {
    // ASCII dominates most text: skip eight bytes at a time while the high bits are clear.
    while (pos + 8 <= size) {
      uint64_t word;
      __builtin_memcpy(&word, data + pos, 8);
      if (word & 0x8080808080808080ull) break;
      pos += 8;
    }
    if (pos >= size) break;
    size_t length = 0;
    if (scan_sequence(data, size, pos, length) != Scan::Complete) return pos;
    pos += length;
  }
  return std::string_view::npos;
}

void append_utf8(std::string& out, char32_t codepoint) {
  if (codepoint < 0x80) {
    out.push_back(static_cast<char>(codepoint));
  } else if (codepoint < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (codepoint >> 6)));
    out.push_back(static_cast<char>(0x80 | (codepoint & 0x3F)));
  } else if (codepoint < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (codepoint >> 12)));
    out.push_back(static_cast<char>(0x80 | ((codepoint >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (codepoint & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (codepoint >> 18)));
    out.push_back(static_cast<char>(0x80 | ((codepoint >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((codepoint >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (codepoint & 0x3F)));
  }
}

size_t append_utf8_lossy(std::string& out, std::string_view bytes, bool final) {
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t size = bytes.size();
  size_t pos = 0;
  size_t run_start = 0;  // start of the pending run of valid bytes, copied in one go
  while (pos < size) {
    size_t length = 0;
    const Scan scan = scan_sequence(data, size, pos, length);
    if (scan == Scan::Complete) {
      pos += length;
      continue;
    }
    out.append(bytes.data() + run_start, pos - run_start);
    if (scan == Scan::Truncated && !final) return pos;
    append_utf8(out, U'\uFFFD');
    pos += length;
    run_start = pos;
  }
  out.append(bytes.data() + run_start, pos - run_start);
  return pos;
}

}  // namespace qwen2audio::text
