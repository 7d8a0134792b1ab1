#include "text/word_cache.h"

#include <algorithm>
#include <cstring>
#include <functional>

namespace qwen2audio::text {
namespace {

constexpr size_t kInitialSlots = 256;

}  // namespace

uint64_t WordCache::hash(std::string_view word) { return std::hash<std::string_view>{}(word); }

bool WordCache::matches(const Slot& slot, std::string_view word, uint64_t hash) const {
  return slot.hash == hash && slot.word_length == word.size() &&
         std::memcmp(word_bytes(slot), word.data(), word.size()) == 0;
}

const int32_t* WordCache::find(std::string_view word, uint64_t hash, uint32_t& count) const {
  if (slots_.empty()) return nullptr;
  const size_t mask = slots_.size() - 1;
  for (size_t index = hash & mask;; index = (index + 1) & mask) {
    const Slot& slot = slots_[index];
    if (slot.word_length == 0) return nullptr;
    if (matches(slot, word, hash)) {
      count = slot.id_count;
      return word_ids(slot);
    }
  }
}

void WordCache::insert(std::string_view word, uint64_t hash, const int32_t* ids, uint32_t count) {
  if (word.empty() || word.size() > UINT16_MAX || count > UINT16_MAX) return;
  if ((size_ + 1) * 2 > slots_.size()) grow();
  const size_t mask = slots_.size() - 1;
  size_t index = hash & mask;
  for (; slots_[index].word_length != 0; index = (index + 1) & mask)
    if (matches(slots_[index], word, hash)) return;
  const size_t offset = arena_.size();
  if (offset + units(word.size()) + count > UINT32_MAX) return;  // full: stop caching
  arena_.resize(offset + units(word.size()) + count, 0);
  std::memcpy(arena_.data() + offset, word.data(), word.size());
  std::copy(ids, ids + count, arena_.data() + offset + units(word.size()));
  slots_[index] =
      Slot{hash, static_cast<uint32_t>(offset), static_cast<uint16_t>(word.size()), static_cast<uint16_t>(count)};
  ++size_;
}

void WordCache::grow() {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(old.empty() ? kInitialSlots : old.size() * 2, Slot{0, 0, 0, 0});
  const size_t mask = slots_.size() - 1;
  for (const Slot& slot : old) {
    if (slot.word_length == 0) continue;
    size_t index = slot.hash & mask;
    while (slots_[index].word_length != 0) index = (index + 1) & mask;
    slots_[index] = slot;
  }
}

void WordCache::absorb(const WordCache& other, size_t capacity) {
  for (const Slot& slot : other.slots_) {
    if (size_ >= capacity) return;
    if (slot.word_length == 0) continue;
    insert(std::string_view(other.word_bytes(slot), slot.word_length), slot.hash, other.word_ids(slot), slot.id_count);
  }
}

}  // namespace qwen2audio::text
