#pragma once

#include <cstdint>
#include <string>
#include <string_view>

// GPT-2's byte-level alphabet, which Qwen2's BPE vocabulary is written in: each of the 256 byte
// values stands for one printable code point, so every token is a visible string and no byte
// sequence is out of vocabulary.
namespace qwen2audio::text {

char32_t byte_to_codepoint(uint8_t byte);

// The byte a code point of the alphabet stands for, or -1 for code points outside it.
int codepoint_to_byte(char32_t codepoint);

// Bytes -> vocabulary spelling (UTF-8 of the mapped code points).
std::string bytes_to_token_text(std::string_view bytes);

// Vocabulary spelling -> bytes, as HF tokenizers' ByteLevel decoder does it: when every character
// belongs to the alphabet it maps back to its byte; otherwise (an added token such as "<|im_end|>"
// written with other characters) the token contributes its own UTF-8 unchanged.
std::string token_text_to_bytes(std::string_view token);

}  // namespace qwen2audio::text
