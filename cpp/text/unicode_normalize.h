#pragma once

#include <string>
#include <string_view>

// Unicode normalization form C, as Qwen2's fast tokenizer applies it to text before splitting
// it into words. ICU does the work: its quick check lets already-normalized text (nearly all
// real text) through without a copy.
namespace qwen2audio::text {

// `text` must be well-formed UTF-8. Returns `text` itself when it is already in NFC, otherwise
// its NFC form written into `storage`.
std::string_view normalize_nfc(std::string_view text, std::string& storage);

}  // namespace qwen2audio::text
