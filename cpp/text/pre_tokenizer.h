#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

// Splits normalized text into the words that BPE encodes separately, with a regular expression
// run by PCRE2 (UTF and Unicode properties, JIT-compiled). Matches and the gaps between them both
// become pieces, as HF tokenizers' Split pre-tokenizer with behavior "Isolated" makes them.
namespace qwen2audio::text {

// Qwen2's pre-tokenizer pattern, as written in its tokenizer.json.
inline constexpr std::string_view kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// HF tokenizers runs these patterns with Oniguruma, whose \s is exactly Unicode White_Space;
// PCRE2's \s with UCP also takes U+180E. This rewrites \s and \S (outside and inside classes)
// as explicit White_Space sets so both engines split identically.
std::string translate_whitespace_escapes(std::string_view pattern);

struct Piece {
  uint32_t offset;
  uint32_t length;
};

class PreTokenizer {
 public:
  // Throws ConfigError (naming `origin`) when the pattern does not compile. For Qwen2's pattern,
  // `ascii_shortcut` lets the matches that ASCII alone decides skip PCRE2 (see pre_tokenizer.cpp);
  // PCRE2 still decides every other match.
  explicit PreTokenizer(std::string pattern, const std::string& origin = "pre-tokenizer pattern",
                        bool ascii_shortcut = true);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Appends the pieces of `text` (well-formed UTF-8, at most 4 GiB) to `pieces`, offsets relative
  // to `text`; together they cover it exactly. Safe to call from several threads at once.
  void split(std::string_view text, std::vector<Piece>& pieces) const;

  const std::string& pattern() const { return pattern_; }
  bool uses_ascii_shortcut() const { return ascii_shortcut_; }

 private:
  struct Compiled;
  std::string pattern_;
  std::unique_ptr<Compiled> compiled_;
  bool ascii_shortcut_ = false;
};

}  // namespace qwen2audio::text
