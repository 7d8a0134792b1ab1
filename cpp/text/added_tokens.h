#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

// Tokens added on top of the BPE vocabulary (Qwen2's <|im_start|>, <|AUDIO|>, ...). Text is
// split on them before anything else, so they are never broken up, following HF tokenizers'
// AddedVocabulary: leftmost-longest matches, single_word / lstrip / rstrip honoured.
namespace qwen2audio::text {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  // Whether the token is matched in the normalized text rather than the raw input.
  bool normalized = false;
};

struct TextSpan {
  uint32_t offset;
  uint32_t length;
  int32_t token_id;  // -1: ordinary text
};

// A byte trie over a set of added tokens' contents.
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // `include` picks the tokens to match.
  template <class Predicate>
  AddedTokenMatcher(const std::vector<AddedToken>& tokens, Predicate include) {
    nodes_.emplace_back();
    for (const AddedToken& token : tokens)
      if (!token.content.empty() && include(token)) {
        tokens_.push_back(token);
        insert(token.content, tokens_.size() - 1);
      }
  }

  bool empty() const { return nodes_.size() <= 1; }

  // Splits `text` into spans of ordinary text and added tokens; the spans cover it in order.
  void split(std::string_view text, std::vector<TextSpan>& spans) const;

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;  // sorted by byte
    int32_t token = -1;                                 // index into tokens_ when a token ends here
  };
  void insert(std::string_view content, size_t token_index);
  // Longest token starting at `pos`: its index, or -1; `length` receives its byte length.
  int32_t longest_match(std::string_view text, size_t pos, size_t& length) const;

  std::vector<AddedToken> tokens_;
  std::vector<Node> nodes_;
  bool first_byte_[256] = {};
  int single_first_byte_ = -1;  // the first byte of every token when they share one
};

}  // namespace qwen2audio::text
