#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "text/added_tokens.h"
#include "text/bpe_model.h"
#include "text/pre_tokenizer.h"

// Qwen2's tokenizer: added tokens split out first, NFC, the pre-tokenizer regex, byte-level BPE;
// decoding maps tokens back to bytes and replaces ill-formed UTF-8 with U+FFFD. It reads the files
// a Hugging Face checkpoint folder ships and gives the ids HF tokenizers (Rust) gives.
namespace qwen2audio::text {

// Tokenizer files of a checkpoint; an empty path means the file is absent.
struct TokenizerFiles {
  std::filesystem::path tokenizer_json;
  std::filesystem::path vocab_json;
  std::filesystem::path merges_txt;
  std::filesystem::path tokenizer_config_json;
  std::filesystem::path added_tokens_json;

  // The files present in `directory`. Throws ConfigError when it holds neither tokenizer.json nor
  // both vocab.json and merges.txt.
  static TokenizerFiles in_directory(const std::filesystem::path& directory);
};

class Tokenizer {
 public:
  // Prefers tokenizer.json when given (it carries the whole pipeline); otherwise builds Qwen2's
  // pipeline around vocab.json + merges.txt. Added tokens come from tokenizer.json's added_tokens,
  // tokenizer_config.json's added_tokens_decoder and added_tokens.json, first mention of an id
  // winning. Throws ConfigError naming the file for anything malformed or unsupported.
  static std::shared_ptr<const Tokenizer> load(const TokenizerFiles& files);
  static std::shared_ptr<const Tokenizer> from_directory(const std::filesystem::path& directory);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Thread-safe. Throws InvalidArgument when `text` is not well-formed UTF-8 (or over 2 GiB).
  // With `split_special_tokens`, special added tokens in the text are encoded as ordinary text.
  // `known_valid_utf8` skips the UTF-8 check for callers that guarantee it (a Python str's UTF-8).
  std::vector<int32_t> encode(std::string_view text, bool split_special_tokens = false,
                              bool known_valid_utf8 = false) const;
  void encode_into(std::string_view text, std::vector<int32_t>& ids, bool split_special_tokens = false,
                   bool known_valid_utf8 = false) const;

  // The words BPE sees (raw bytes, after added-token splitting and normalization); an added token
  // appears as its own content. For tests and for timing BPE alone.
  std::vector<std::string> pre_tokenize(std::string_view text, bool split_special_tokens = false) const;

  // Throws InvalidArgument naming the first id that is not in the vocabulary.
  std::string decode(std::span<const int64_t> ids, bool skip_special_tokens = false) const;

  void check_id(int64_t id) const;
  bool has_id(int64_t id) const {
    return id >= 0 && id < static_cast<int64_t>(entries_.size()) && entries_[static_cast<size_t>(id)].valid;
  }
  bool is_special(int32_t id) const { return has_id(id) && entries_[id].special; }
  // The bytes a token stands for when decoded (before UTF-8 repair). The id must be valid.
  std::string_view token_bytes(int32_t id) const {
    return std::string_view(byte_arena_.data() + entries_[id].offset, entries_[id].length);
  }

  // Added tokens first, then the BPE vocabulary; -1 / nullopt when absent.
  int32_t token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int64_t id) const;

  const BpeModel& model() const { return *model_; }
  // Sorted by id.
  const std::vector<AddedToken>& added_tokens() const { return added_; }
  // Distinct strings in the vocabulary and the added tokens: HF's len(tokenizer).
  size_t size_with_added() const { return size_with_added_; }
  // One past the highest id in use.
  int32_t id_limit() const { return static_cast<int32_t>(entries_.size()); }
  bool normalizes_nfc() const { return nfc_; }
  const std::string& pattern() const { return pre_tokenizer_->pattern(); }
  // Which files the BPE model came from: "tokenizer.json" or "vocab.json+merges.txt".
  const std::string& model_source() const { return model_source_; }
  // The words cached so far (bounded); for tests of the cache.
  size_t cached_words() const;

 private:
  struct Parts;
  struct CallState;
  explicit Tokenizer(Parts parts);
  void encode_segment(std::string_view text, bool split_special_tokens, CallState& state) const;
  void encode_words(std::string_view text, CallState& state) const;

  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  bool nfc_ = true;
  std::string model_source_;
  std::vector<AddedToken> added_;
  // Raw-text and normalized-text matchers, each with and without the special tokens.
  AddedTokenMatcher raw_all_, raw_plain_, normalized_all_, normalized_plain_;
  StringIdMap added_ids_;
  size_t size_with_added_ = 0;

  // Per id, in one 8-byte record so decoding a token touches one cache line for its metadata.
  struct TokenEntry {
    uint32_t offset;  // of its bytes in byte_arena_
    uint16_t length;
    uint8_t valid;
    uint8_t special;
  };
  std::vector<TokenEntry> entries_;
  std::string byte_arena_;

  // Words already encoded, shared by all calls on this tokenizer (never across tokenizers). Calls
  // read it under a shared lock and add their new words at the end only if the lock is free at
  // once, so encoding never waits on another thread's bookkeeping.
  struct SharedWordCache;
  std::unique_ptr<SharedWordCache> cache_;
};

}  // namespace qwen2audio::text
