#include "text/byte_level.h"

#include <array>

#include "text/utf8.h"

namespace qwen2audio::text {
namespace {

// Printable Latin-1 bytes keep their own code point; the 68 others (controls, space, DEL, NBSP,
// soft hyphen) take 256, 257, ... in byte order, which is GPT-2's bytes_to_unicode.
constexpr bool keeps_own_codepoint(int byte) {
  return (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE && byte <= 0xFF);
}

constexpr std::array<char32_t, 256> make_byte_table() {
  std::array<char32_t, 256> table{};
  char32_t next = 256;
  for (int byte = 0; byte < 256; ++byte) table[byte] = keeps_own_codepoint(byte) ? byte : next++;
  return table;
}

constexpr std::array<char32_t, 256> kByteToCodepoint = make_byte_table();

// Every code point of the alphabet is below 324, so the inverse is a small array.
constexpr char32_t kAlphabetLimit = 324;

constexpr std::array<int16_t, kAlphabetLimit> make_inverse_table() {
  std::array<int16_t, kAlphabetLimit> table{};
  for (auto& entry : table) entry = -1;
  for (int byte = 0; byte < 256; ++byte) table[kByteToCodepoint[byte]] = static_cast<int16_t>(byte);
  return table;
}

constexpr std::array<int16_t, kAlphabetLimit> kCodepointToByte = make_inverse_table();

// Decodes one code point of well-formed UTF-8; returns false on a malformed sequence.
bool next_codepoint(std::string_view text, size_t& pos, char32_t& codepoint) {
  const auto lead = static_cast<uint8_t>(text[pos]);
  int length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
  if (pos + length > text.size()) return false;
  codepoint = length == 1 ? lead : length == 2 ? (lead & 0x1F) : length == 3 ? (lead & 0x0F) : (lead & 0x07);
  for (int index = 1; index < length; ++index) {
    const auto byte = static_cast<uint8_t>(text[pos + index]);
    if ((byte & 0xC0) != 0x80) return false;
    codepoint = (codepoint << 6) | (byte & 0x3F);
  }
  pos += length;
  return true;
}

}  // namespace

char32_t byte_to_codepoint(uint8_t byte) { return kByteToCodepoint[byte]; }

int codepoint_to_byte(char32_t codepoint) { return codepoint < kAlphabetLimit ? kCodepointToByte[codepoint] : -1; }

std::string bytes_to_token_text(std::string_view bytes) {
  std::string text;
  text.reserve(bytes.size() * 2);
  for (const char byte : bytes) append_utf8(text, kByteToCodepoint[static_cast<uint8_t>(byte)]);
  return text;
}

std::string token_text_to_bytes(std::string_view token) {
  std::string bytes;
  bytes.reserve(token.size());
  size_t pos = 0;
  while (pos < token.size()) {
    char32_t codepoint = 0;
    if (!next_codepoint(token, pos, codepoint)) return std::string(token);
    const int byte = codepoint_to_byte(codepoint);
    if (byte < 0) return std::string(token);
    bytes.push_back(static_cast<char>(byte));
  }
  return bytes;
}

}  // namespace qwen2audio::text
