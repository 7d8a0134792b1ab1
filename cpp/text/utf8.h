#pragma once

#include <cstddef>
#include <string>
#include <string_view>

// UTF-8 handling shared by the tokenizer's encode and decode paths.
namespace qwen2audio::text {

// Offset of the first byte that is not part of well-formed UTF-8, or npos when all of it is.
size_t find_invalid_utf8(std::string_view bytes);

void append_utf8(std::string& out, char32_t codepoint);

// Appends `bytes` to `out`, replacing each maximal ill-formed subpart with U+FFFD: the rule of
// Unicode §3.9 that Python's errors="replace" and Rust's from_utf8_lossy both follow, so decoded
// text matches theirs byte for byte. With `final` false, a trailing sequence that is well formed
// so far but incomplete is left unconsumed (a later byte may complete it). Returns the number of
// bytes consumed.
size_t append_utf8_lossy(std::string& out, std::string_view bytes, bool final = true);

}  // namespace qwen2audio::text
