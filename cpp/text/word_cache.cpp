#include "text/word_cache.h"

#include <algorithm>
#include <cstring>

#include "text/hash.h"

namespace qwen2audio::text {
namespace {

constexpr size_t kInitialSlots = 256;

}  // namespace

uint64_t WordCache::hash(std::string_view word) { return hash_bytes(word); }

const int32_t* WordCache::ids_of(const Slot& slot) const {
  if (slot.id_count <= kInlineIds) return slot.ids;
  // Spilled ids follow the spilled word, if the word spilled too.
  return arena_.data() + slot.spill + (slot.word_length <= kInlineBytes ? 0 : units(slot.word_length));
}

const int32_t* WordCache::find(std::string_view word, uint64_t hash, uint32_t& count) const {
  if (slots_.empty()) return nullptr;
  const size_t mask = slots_.size() - 1;
  for (size_t index = hash & mask;; index = (index + 1) & mask) {
    const Slot& slot = slots_[index];
    if (slot.word_length == 0) return nullptr;
    if (slot.hash == hash && slot.word_length == word.size() &&
        std::memcmp(word_of(slot), word.data(), word.size()) == 0) {
      count = slot.id_count;
      return ids_of(slot);
    }
  }
}

void WordCache::insert(std::string_view word, uint64_t hash, const int32_t* ids, uint32_t count) {
  if (word.empty() || word.size() > UINT16_MAX || count > UINT16_MAX) return;
  if ((size_ + 1) * 2 > slots_.size()) grow();
  const size_t mask = slots_.size() - 1;
  size_t index = hash & mask;
  for (; slots_[index].word_length != 0; index = (index + 1) & mask) {
    const Slot& slot = slots_[index];
    if (slot.hash == hash && slot.word_length == word.size() &&
        std::memcmp(word_of(slot), word.data(), word.size()) == 0)
      return;
  }
  const size_t spill_units = (word.size() > kInlineBytes ? units(word.size()) : 0) + (count > kInlineIds ? count : 0);
  if (arena_.size() + spill_units > UINT32_MAX) return;  // full: stop caching
  Slot& slot = slots_[index];
  slot.hash = hash;
  slot.spill = static_cast<uint32_t>(arena_.size());
  slot.word_length = static_cast<uint16_t>(word.size());
  slot.id_count = static_cast<uint16_t>(count);
  if (word.size() <= kInlineBytes) {
    std::memcpy(slot.word, word.data(), word.size());
  } else {
    arena_.resize(arena_.size() + units(word.size()), 0);
    std::memcpy(arena_.data() + slot.spill, word.data(), word.size());
  }
  if (count <= kInlineIds) {
    std::copy(ids, ids + count, slot.ids);
  } else {
    arena_.insert(arena_.end(), ids, ids + count);
  }
  ++size_;
}

void WordCache::grow() {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(old.empty() ? kInitialSlots : old.size() * 2, Slot{});
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
    insert(std::string_view(other.word_of(slot), slot.word_length), slot.hash, other.ids_of(slot), slot.id_count);
  }
}

}  // namespace qwen2audio::text
