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
struct Later {
  bool operator()(const BpeScratch::Candidate& a, const BpeScratch::Candidate& b) const { return a.order > b.order; }
};

uint64_t candidate_order(int32_t rank, int32_t left) {
  return (static_cast<uint64_t>(rank) << 32) | static_cast<uint32_t>(left);
}

// The byte a one-character token of the byte-level alphabet stands for, or -1.
int byte_of_token(std::string_view token) {
  char32_t codepoint = 0;
  const auto lead = static_cast<uint8_t>(token[0]);
  if (token.size() == 1 && lead < 0x80) {
    codepoint = lead;
  } else if (token.size() == 2 && (lead & 0xE0) == 0xC0) {
    codepoint = ((lead & 0x1F) << 6) | (static_cast<uint8_t>(token[1]) & 0x3F);
  } else {
    return -1;
  }
  return codepoint_to_byte(codepoint);
}

}  // namespace

BpeModel::BpeModel(std::vector<std::pair<std::string, int32_t>> vocab,
                   const std::vector<std::pair<std::string, std::string>>& merges, const std::string& origin,
                   bool ignore_merges)
    : ignore_merges_(ignore_merges) {
  int64_t max_id = -1;
  for (const auto& [spelling, id] : vocab) {
    if (id < 0 || id > kMaxTokenId)
      throw ConfigError(origin + ": token '" + spelling + "' has id " + std::to_string(id) + ", outside [0, " +
                        std::to_string(kMaxTokenId) + "]");
    if (spelling.empty() || spelling.size() > UINT16_MAX)
      throw ConfigError(origin + ": token " + std::to_string(id) + " is empty or longer than 64 KiB");
    max_id = std::max<int64_t>(max_id, id);
  }
  tokens_.resize(static_cast<size_t>(max_id + 1));
  has_token_.assign(tokens_.size(), 0);
  for (auto& [spelling, id] : vocab) {
    if (has_token_[id])
      throw ConfigError(origin + ": tokens '" + tokens_[id] + "' and '" + spelling + "' share id " +
                        std::to_string(id));
    const uint64_t hash = StringTable::hash(spelling);
    uint32_t count = 0;
    if (const int32_t* other = ids_by_spelling_.find(spelling, hash, count))
      throw ConfigError(origin + ": token '" + spelling + "' has two ids, " + std::to_string(*other) + " and " +
                        std::to_string(id));
    ids_by_spelling_.insert(spelling, hash, &id, 1);
    has_token_[id] = 1;
    tokens_[id] = std::move(spelling);
  }
  size_ = vocab.size();
  for (int byte = 0; byte < 256; ++byte) {
    std::string spelling;
    append_utf8(spelling, byte_to_codepoint(static_cast<uint8_t>(byte)));
    const int32_t id = token_to_id(spelling);
    if (id < 0)
      throw ConfigError(origin + ": the vocabulary has no token for byte " + std::to_string(byte) + " ('" + spelling +
                        "'), so byte-level BPE cannot spell every text");
    byte_ids_[byte] = id;
  }

  byte_pair_merges_.assign(256 * 256, MergeResult{-1, -1});
  size_t capacity = 16;
  while (capacity < merges.size() + merges.size() / 2) capacity <<= 1;
  merge_slots_.assign(capacity, MergeSlot{kEmptyKey, {0, 0}});
  merge_mask_ = capacity - 1;
  merge_list_.reserve(merges.size());
  std::string joined;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const int32_t left_id = token_to_id(left);
    const int32_t right_id = token_to_id(right);
    joined.assign(left).append(right);
    const int32_t merged_id = token_to_id(joined);
    if (left_id < 0 || right_id < 0 || merged_id < 0) {
      const std::string where = origin + ": merge " + std::to_string(rank + 1) + " ('" + left + " " + right + "')";
      const std::string& missing = left_id < 0 ? left : right_id < 0 ? right : joined;
      throw ConfigError(where + (merged_id < 0 && left_id >= 0 && right_id >= 0 ? " makes '" : " names '") + missing +
                        "', which is not in the vocabulary");
    }
    merge_list_.emplace_back(left_id, right_id);
    const uint64_t key = pair_key(left_id, right_id);
    uint64_t slot = mix(key) & merge_mask_;
    while (merge_slots_[slot].key != kEmptyKey && merge_slots_[slot].key != key) slot = (slot + 1) & merge_mask_;
    // A repeated pair keeps its last rank, as HF's merge map (built by collecting into a map) does.
    merge_slots_[slot] = MergeSlot{key, {static_cast<int32_t>(rank), merged_id}};
    if (left.size() <= 2 && right.size() <= 2) {
      const int left_byte = byte_of_token(left);
      const int right_byte = byte_of_token(right);
      if (left_byte >= 0 && right_byte >= 0 && byte_ids_[left_byte] == left_id && byte_ids_[right_byte] == right_id)
        byte_pair_merges_[left_byte * 256 + right_byte] = MergeResult{static_cast<int32_t>(rank), merged_id};
    }
  }
}

void BpeModel::encode_short_word(std::string_view bytes, std::vector<int32_t>& out) const {
  // Few symbols: plain arrays and a linear search for the lowest rank beat a heap. The leftmost of
  // equal ranks wins, as in the heap order.
  int32_t ids[kShortWordBytes];
  MergeResult pairs[kShortWordBytes];  // pairs[i]: the merge of ids[i] and ids[i + 1]
  size_t count = bytes.size();
  for (size_t index = 0; index < count; ++index) ids[index] = byte_ids_[static_cast<uint8_t>(bytes[index])];
  for (size_t index = 0; index + 1 < count; ++index)
    pairs[index] = byte_pair_merges_[static_cast<uint8_t>(bytes[index]) * 256 + static_cast<uint8_t>(bytes[index + 1])];
  const auto lookup = [&](size_t left) {
    const MergeResult* merge = find_merge(ids[left], ids[left + 1]);
    pairs[left] = merge != nullptr ? *merge : MergeResult{-1, -1};
  };
  while (count > 1) {
    size_t best = count;
    int32_t best_rank = INT32_MAX;
    for (size_t index = 0; index + 1 < count; ++index)
      if (pairs[index].rank >= 0 && pairs[index].rank < best_rank) {
        best_rank = pairs[index].rank;
        best = index;
      }
    if (best == count) break;
    ids[best] = pairs[best].id;
    for (size_t index = best + 1; index + 1 < count; ++index) {
      ids[index] = ids[index + 1];
      pairs[index] = pairs[index + 1];
    }
    --count;
    if (best > 0) lookup(best - 1);
    if (best + 1 < count) lookup(best);
  }
  out.insert(out.end(), ids, ids + count);
}

const BpeModel::MergeResult* BpeModel::find_merge(int32_t left, int32_t right) const {
  const uint64_t key = pair_key(left, right);
  uint64_t slot = mix(key) & merge_mask_;
  while (true) {
    const MergeSlot& entry = merge_slots_[slot];
    if (entry.key == key) return &entry.result;
    if (entry.key == kEmptyKey) return nullptr;
    slot = (slot + 1) & merge_mask_;
  }
}

int32_t BpeModel::token_to_id(std::string_view spelling) const {
  uint32_t count = 0;
  const int32_t* id = ids_by_spelling_.find(spelling, StringTable::hash(spelling), count);
  return id == nullptr ? -1 : *id;
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
  if (count <= kShortWordBytes) {
    encode_short_word(bytes, out);
    return;
  }
  auto& symbols = scratch.symbols;
  auto& heap = scratch.heap;
  symbols.resize(count);
  heap.clear();
  for (size_t index = 0; index < count; ++index) {
    symbols[index] = {byte_ids_[static_cast<uint8_t>(bytes[index])], static_cast<int32_t>(index) - 1,
                      index + 1 < count ? static_cast<int32_t>(index + 1) : -1};
  }
  // Every first pair is a pair of bytes: a dense table answers those without hashing.
  for (size_t index = 0; index + 1 < count; ++index) {
    const MergeResult& merge =
        byte_pair_merges_[static_cast<uint8_t>(bytes[index]) * 256 + static_cast<uint8_t>(bytes[index + 1])];
    if (merge.rank >= 0)
      heap.push_back({candidate_order(merge.rank, static_cast<int32_t>(index)), symbols[index].id,
                      symbols[index + 1].id, merge.id});
  }
  std::make_heap(heap.begin(), heap.end(), Later{});
  const auto push_candidate = [&](int32_t left, const MergeResult* merge) {
    if (merge == nullptr) return;
    heap.push_back({candidate_order(merge->rank, left), symbols[left].id, symbols[symbols[left].next].id, merge->id});
    std::push_heap(heap.begin(), heap.end(), Later{});
  };

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), Later{});
    const BpeScratch::Candidate top = heap.back();
    heap.pop_back();
    const int32_t left_index = top.left();
    BpeScratch::Symbol& left = symbols[left_index];
    // A candidate is stale once either side has merged with something else: both ids must still
    // be the ones it was made from (a merged symbol never keeps the id of its parts).
    if (left.id != top.left_id || left.next < 0) continue;
    BpeScratch::Symbol& right = symbols[left.next];
    if (right.id != top.right_id) continue;
    left.id = top.merged_id;
    right.id = -1;  // merged away
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = left_index;
    // Both lookups are issued before either result is used, so their cache misses overlap.
    const MergeResult* with_previous = left.prev >= 0 ? find_merge(symbols[left.prev].id, left.id) : nullptr;
    const MergeResult* with_next = left.next >= 0 ? find_merge(left.id, symbols[left.next].id) : nullptr;
    if (left.prev >= 0) push_candidate(left.prev, with_previous);
    push_candidate(left_index, with_next);
  }
  for (int32_t index = 0; index >= 0; index = symbols[index].next) out.push_back(symbols[index].id);
}

}  // namespace qwen2audio::text
