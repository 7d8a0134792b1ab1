#include "text/bpe_model.h"

#include <algorithm>

#include "runtime/errors.h"
#include "text/byte_level.h"
#include "text/utf8.h"

namespace qwen2audio::text {
namespace {

constexpr uint64_t kEmptyKey = ~uint64_t{0};
// Far above any real vocabulary (Qwen2: 151,643), low enough that a corrupt id cannot make the
// id-indexed tables take gigabytes.
constexpr int64_t kMaxTokenId = (1 << 24) - 1;

uint64_t mix(uint64_t key) {
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdull;
  key ^= key >> 33;
  return key;
}

// Min-heap order: lowest rank first, then leftmost.
bool later(const BpeScratch::Candidate& a, const BpeScratch::Candidate& b) {
  return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
}

}  // namespace

BpeModel::BpeModel(StringIdMap vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                   const std::string& origin, bool ignore_merges)
    : vocab_(std::move(vocab)), ignore_merges_(ignore_merges) {
  int64_t max_id = -1;
  for (const auto& [spelling, id] : vocab_) {
    if (id < 0 || id > kMaxTokenId)
      throw ConfigError(origin + ": token '" + spelling + "' has id " + std::to_string(id) + ", outside [0, " +
                        std::to_string(kMaxTokenId) + "]");
    max_id = std::max<int64_t>(max_id, id);
  }
  tokens_.resize(static_cast<size_t>(max_id + 1));
  has_token_.assign(tokens_.size(), 0);
  for (const auto& [spelling, id] : vocab_) {
    if (has_token_[id])
      throw ConfigError(origin + ": tokens '" + tokens_[id] + "' and '" + spelling + "' share id " +
                        std::to_string(id));
    tokens_[id] = spelling;
    has_token_[id] = 1;
  }
  for (int byte = 0; byte < 256; ++byte) {
    std::string spelling;
    append_utf8(spelling, byte_to_codepoint(static_cast<uint8_t>(byte)));
    const int32_t id = token_to_id(spelling);
    if (id < 0)
      throw ConfigError(origin + ": the vocabulary has no token for byte " + std::to_string(byte) + " ('" + spelling +
                        "'), so byte-level BPE cannot spell every text");
    byte_ids_[byte] = id;
  }

  size_t capacity = 16;
  while (capacity < merges.size() * 2) capacity <<= 1;
  merge_keys_.assign(capacity, kEmptyKey);
  merge_values_.assign(capacity, MergeResult{0, 0});
  merge_mask_ = capacity - 1;
  merge_list_.reserve(merges.size());
  std::string joined;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const int32_t left_id = token_to_id(left);
    const int32_t right_id = token_to_id(right);
    joined.assign(left).append(right);
    const int32_t merged_id = token_to_id(joined);
    const std::string where = origin + ": merge " + std::to_string(rank + 1) + " ('" + left + " " + right + "')";
    if (left_id < 0) throw ConfigError(where + " names '" + left + "', which is not in the vocabulary");
    if (right_id < 0) throw ConfigError(where + " names '" + right + "', which is not in the vocabulary");
    if (merged_id < 0) throw ConfigError(where + " makes '" + joined + "', which is not in the vocabulary");
    merge_list_.emplace_back(left_id, right_id);
    const uint64_t key = pair_key(left_id, right_id);
    uint64_t slot = mix(key) & merge_mask_;
    while (merge_keys_[slot] != kEmptyKey && merge_keys_[slot] != key) slot = (slot + 1) & merge_mask_;
    // A repeated pair keeps its last rank, as HF's merge map (built by collecting into a map) does.
    merge_keys_[slot] = key;
    merge_values_[slot] = MergeResult{static_cast<int32_t>(rank), merged_id};
  }
}

const BpeModel::MergeResult* BpeModel::find_merge(int32_t left, int32_t right) const {
  const uint64_t key = pair_key(left, right);
  uint64_t slot = mix(key) & merge_mask_;
  while (true) {
    const uint64_t found = merge_keys_[slot];
    if (found == key) return &merge_values_[slot];
    if (found == kEmptyKey) return nullptr;
    slot = (slot + 1) & merge_mask_;
  }
}

int32_t BpeModel::token_to_id(std::string_view spelling) const {
  const auto found = vocab_.find(spelling);
  return found == vocab_.end() ? -1 : found->second;
}

const std::string& BpeModel::id_to_token(int32_t id) const {
  static const std::string kNone;
  return has_id(id) ? tokens_[id] : kNone;
}

void BpeModel::encode_word(std::string_view bytes, std::vector<int32_t>& out, BpeScratch& scratch) const {
  const size_t count = bytes.size();
  if (count == 0) return;
  if (count == 1) {
    out.push_back(byte_ids_[static_cast<uint8_t>(bytes[0])]);
    return;
  }
  if (ignore_merges_) {
    const int32_t whole = token_to_id(bytes_to_token_text(bytes));
    if (whole >= 0) {
      out.push_back(whole);
      return;
    }
  }
  auto& symbols = scratch.symbols;
  auto& heap = scratch.heap;
  symbols.resize(count);
  heap.clear();
  for (size_t index = 0; index < count; ++index) {
    symbols[index] = {byte_ids_[static_cast<uint8_t>(bytes[index])], static_cast<int32_t>(index) - 1,
                      index + 1 < count ? static_cast<int32_t>(index + 1) : -1};
  }
  const auto push_candidate = [&](int32_t left) {
    const int32_t right = symbols[left].next;
    if (right < 0) return;
    const MergeResult* merge = find_merge(symbols[left].id, symbols[right].id);
    if (merge == nullptr) return;
    heap.push_back({merge->rank, left, symbols[left].id, symbols[right].id});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  for (size_t index = 0; index + 1 < count; ++index) push_candidate(static_cast<int32_t>(index));

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const BpeScratch::Candidate top = heap.back();
    heap.pop_back();
    BpeScratch::Symbol& left = symbols[top.left];
    // A candidate is stale once either side has merged with something else: both ids must still
    // be the ones it was made from (a merged symbol never keeps the id of its parts).
    if (left.id != top.left_id || left.next < 0) continue;
    BpeScratch::Symbol& right = symbols[left.next];
    if (right.id != top.right_id) continue;
    left.id = find_merge(top.left_id, top.right_id)->id;
    right.id = -1;  // merged away
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    if (left.prev >= 0) push_candidate(left.prev);
    push_candidate(top.left);
  }
  for (int32_t index = 0; index >= 0; index = symbols[index].next) out.push_back(symbols[index].id);
}

}  // namespace qwen2audio::text
