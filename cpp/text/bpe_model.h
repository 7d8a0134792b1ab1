#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "text/string_table.h"

// Byte-level BPE: a vocabulary of byte-level spellings (see byte_level.h) and a ranked list of
// merges. A word's bytes start as one symbol each and the adjacent pair with the lowest merge
// rank is merged until none is left, leftmost first among equal ranks, as HF tokenizers' BPE
// model does (dropout off, no unknown token, no subword prefixes).
namespace qwen2audio::text {

struct TransparentStringHash {
  using is_transparent = void;
  size_t operator()(std::string_view text) const noexcept { return std::hash<std::string_view>{}(text); }
};

using StringIdMap = std::unordered_map<std::string, int32_t, TransparentStringHash, std::equal_to<>>;

// Working memory for encoding words, reused across the words of one call.
struct BpeScratch {
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
  };
  struct Candidate {
    uint64_t order;  // rank << 32 | left symbol index: lowest rank first, then leftmost
    int32_t left_id;
    int32_t right_id;
    int32_t merged_id;
    int32_t left() const { return static_cast<int32_t>(order & 0xFFFFFFFFu); }
  };
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
};

class BpeModel {
 public:
  // `vocab`: (spelling, id) entries. `merges`: pairs of spellings in rank order. Throws ConfigError
  // naming `origin` when a merge names a token (or makes one) that the vocabulary lacks, when two
  // spellings share an id or one spelling has two, or when a byte of the alphabet has no token.
  BpeModel(std::vector<std::pair<std::string, int32_t>> vocab,
           const std::vector<std::pair<std::string, std::string>>& merges, const std::string& origin,
           bool ignore_merges = false);

  // Appends the ids of one word (raw bytes, before the byte-level mapping) to `out`.
  void encode_word(std::string_view bytes, std::vector<int32_t>& out, BpeScratch& scratch) const;

  // -1 when absent.
  int32_t token_to_id(std::string_view spelling) const;
  // Empty for ids that name no token (gaps in the id space).
  const std::string& id_to_token(int32_t id) const;
  bool has_id(int32_t id) const { return id >= 0 && id < static_cast<int32_t>(tokens_.size()) && has_token_[id]; }

  size_t size() const { return size_; }
  // One past the highest id.
  int32_t id_limit() const { return static_cast<int32_t>(tokens_.size()); }
  // Merges in rank order, as (left, right) ids.
  const std::vector<std::pair<int32_t, int32_t>>& merges() const { return merge_list_; }
  bool ignore_merges() const { return ignore_merges_; }

 private:
  struct MergeResult {
    int32_t rank;
    int32_t id;
  };
  struct MergeSlot {
    uint64_t key;
    MergeResult result;
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }
  const MergeResult* find_merge(int32_t left, int32_t right) const;
  static constexpr size_t kShortWordBytes = 32;
  void encode_short_word(std::string_view bytes, std::vector<int32_t>& out) const;

  // Spelling -> id through the same flat table the word cache uses (one id per "word").
  StringTable ids_by_spelling_;
  size_t size_ = 0;
  std::vector<std::string> tokens_;
  std::vector<uint8_t> has_token_;
  std::array<int32_t, 256> byte_ids_{};
  // Open addressing, linear probing, key and value side by side: BPE's inner loop is this lookup,
  // and most of its cost is the one cache miss per probe.
  std::vector<MergeSlot> merge_slots_;
  // Merges of two single-byte tokens, indexed by byte pair (rank -1: none).
  std::vector<MergeResult> byte_pair_merges_;
  uint64_t merge_mask_ = 0;
  std::vector<std::pair<int32_t, int32_t>> merge_list_;
  bool ignore_merges_ = false;
};

}  // namespace qwen2audio::text
