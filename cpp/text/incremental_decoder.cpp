#include "text/incremental_decoder.h"

#include "text/utf8.h"

namespace qwen2audio::text {

IncrementalDecoder::IncrementalDecoder(std::shared_ptr<const Tokenizer> tokenizer, bool skip_special_tokens)
    : tokenizer_(std::move(tokenizer)), skip_special_tokens_(skip_special_tokens) {}

std::string IncrementalDecoder::add(int64_t id) {
  tokenizer_->check_id(id);
  const auto token = static_cast<int32_t>(id);
  std::string text;
  if (skip_special_tokens_ && tokenizer_->is_special(token)) return text;
  pending_ += tokenizer_->token_bytes(token);
  // The ill-formed-subpart rule decides every byte the same way whether or not more bytes follow,
  // except a well-formed but unfinished tail: only that is kept back.
  const size_t consumed = append_utf8_lossy(text, pending_, /*final=*/false);
  pending_.erase(0, consumed);
  return text;
}

std::string IncrementalDecoder::flush() {
  std::string text;
  append_utf8_lossy(text, pending_, /*final=*/true);
  pending_.clear();
  return text;
}

}  // namespace qwen2audio::text
