#include "text/added_tokens.h"

#include <algorithm>
#include <cstring>

namespace qwen2audio::text {
namespace {

// Unicode White_Space, which Rust's regex \s (used by HF for lstrip/rstrip) matches.
bool is_white_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// ASCII word characters plus every non-ASCII letter or digit byte sequence: HF's single_word
// test uses Unicode \w; for the rare single_word token, treating any non-ASCII character as a
// word character errs on the side of not splitting.
bool is_word_byte(unsigned char byte) {
  return byte >= 0x80 || (byte >= '0' && byte <= '9') || (byte >= 'a' && byte <= 'z') || (byte >= 'A' && byte <= 'Z') ||
         byte == '_';
}

// Decodes the code point ending just before `end` (well-formed UTF-8); returns its start.
size_t previous_codepoint(std::string_view text, size_t end, char32_t& codepoint) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  const auto lead = static_cast<unsigned char>(text[start]);
  const size_t length = end - start;
  codepoint = length == 1 ? lead : length == 2 ? (lead & 0x1F) : length == 3 ? (lead & 0x0F) : (lead & 0x07);
  for (size_t index = start + 1; index < end; ++index)
    codepoint = (codepoint << 6) | (static_cast<unsigned char>(text[index]) & 0x3F);
  return start;
}

size_t next_codepoint(std::string_view text, size_t start, char32_t& codepoint) {
  const auto lead = static_cast<unsigned char>(text[start]);
  const size_t length = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
  const size_t end = std::min(text.size(), start + length);
  codepoint = length == 1 ? lead : length == 2 ? (lead & 0x1F) : length == 3 ? (lead & 0x0F) : (lead & 0x07);
  for (size_t index = start + 1; index < end; ++index)
    codepoint = (codepoint << 6) | (static_cast<unsigned char>(text[index]) & 0x3F);
  return end;
}

}  // namespace

void AddedTokenMatcher::insert(std::string_view content, size_t token_index) {
  int32_t node = 0;
  for (const char c : content) {
    const auto byte = static_cast<uint8_t>(c);
    auto& children = nodes_[node].children;
    auto found = std::lower_bound(children.begin(), children.end(), byte,
                                  [](const auto& child, uint8_t value) { return child.first < value; });
    if (found != children.end() && found->first == byte) {
      node = found->second;
      continue;
    }
    const auto next = static_cast<int32_t>(nodes_.size());
    children.insert(found, {byte, next});
    nodes_.emplace_back();  // invalidates `children`; not used again
    node = next;
  }
  const auto first = static_cast<uint8_t>(content[0]);
  first_byte_[first] = true;
  single_first_byte_ = nodes_[0].children.size() == 1 ? first : -1;
  // The same content twice: the later entry wins, as a map keyed by content would have it.
  nodes_[node].token = static_cast<int32_t>(token_index);
}

int32_t AddedTokenMatcher::longest_match(std::string_view text, size_t pos, size_t& length) const {
  int32_t node = 0;
  int32_t best = -1;
  for (size_t index = pos; index < text.size(); ++index) {
    const auto byte = static_cast<uint8_t>(text[index]);
    const auto& children = nodes_[node].children;
    auto found = std::lower_bound(children.begin(), children.end(), byte,
                                  [](const auto& child, uint8_t value) { return child.first < value; });
    if (found == children.end() || found->first != byte) break;
    node = found->second;
    if (nodes_[node].token >= 0) {
      best = nodes_[node].token;
      length = index + 1 - pos;
    }
  }
  return best;
}

void AddedTokenMatcher::split(std::string_view text, std::vector<TextSpan>& spans) const {
  const size_t size = text.size();
  size_t covered = 0;  // end of the last span emitted
  size_t pos = 0;
  while (pos < size) {
    if (single_first_byte_ >= 0) {
      // All tokens start with the same byte (Qwen2's '<'): memchr finds candidates fastest.
      const void* found = std::memchr(text.data() + pos, single_first_byte_, size - pos);
      if (found == nullptr) break;
      pos = static_cast<const char*>(found) - text.data();
    } else if (!first_byte_[static_cast<uint8_t>(text[pos])]) {
      ++pos;
      continue;
    }
    size_t length = 0;
    const int32_t index = longest_match(text, pos, length);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[index];
    size_t start = pos;
    size_t stop = pos + length;
    // HF takes the non-overlapping leftmost-longest matches first and only then drops those that
    // fail the single_word test, so a dropped match does not let a shorter one take its place.
    if (token.single_word) {
      const bool word_before = start > 0 && is_word_byte(static_cast<unsigned char>(text[start - 1]));
      const bool word_after = stop < size && is_word_byte(static_cast<unsigned char>(text[stop]));
      if (word_before || word_after) {
        pos = stop;
        continue;
      }
    }
    if (token.lstrip) {
      while (start > covered) {
        char32_t codepoint = 0;
        const size_t previous = previous_codepoint(text, start, codepoint);
        if (!is_white_space(codepoint)) break;
        start = previous;
      }
    }
    if (token.rstrip) {
      while (stop < size) {
        char32_t codepoint = 0;
        const size_t next = next_codepoint(text, stop, codepoint);
        if (!is_white_space(codepoint)) break;
        stop = next;
      }
    }
    if (start > covered) spans.push_back({static_cast<uint32_t>(covered), static_cast<uint32_t>(start - covered), -1});
    spans.push_back({static_cast<uint32_t>(start), static_cast<uint32_t>(stop - start), token.id});
    covered = pos = stop;
  }
  if (covered < size) spans.push_back({static_cast<uint32_t>(covered), static_cast<uint32_t>(size - covered), -1});
}

}  // namespace qwen2audio::text
