#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "text/tokenizer.h"

// Streaming detokenization: token ids arrive one at a time and text leaves as soon as it is
// whole. A character whose UTF-8 bytes are spread over several tokens (CJK, emoji) is held back
// until its last byte arrives, so no piece ever ends in a broken character; the pieces joined
// equal Tokenizer::decode of all the ids.
namespace qwen2audio::text {

class IncrementalDecoder {
 public:
  IncrementalDecoder(std::shared_ptr<const Tokenizer> tokenizer, bool skip_special_tokens);

  // The text completed by this token (possibly empty). Throws InvalidArgument for an id outside
  // the vocabulary, leaving the decoder as it was.
  std::string add(int64_t id);
  // Whatever is held back, with an unfinished character replaced by U+FFFD; the decoder is then
  // empty and can start a new stream.
  std::string flush();

  // Bytes held back waiting for the rest of a character.
  size_t pending_bytes() const { return pending_.size(); }
  bool skip_special_tokens() const { return skip_special_tokens_; }

 private:
  std::shared_ptr<const Tokenizer> tokenizer_;
  bool skip_special_tokens_;
  std::string pending_;
};

}  // namespace qwen2audio::text
