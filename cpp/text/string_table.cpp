#include "text/string_table.h"

#include <algorithm>
#include <cstring>

#include "text/hash.h"

namespace qwen2audio::text {
namespace {

constexpr size_t kInitialSlots = 256;

}  // namespace

uint64_t StringTable::hash(std::string_view word) { return hash_bytes(word); }

bool StringTable::matches(const Slot& slot, std::string_view word, uint64_t hash) const {
  return slot.hash == hash && slot.word_length == word.size() &&
         std::memcmp(word_bytes(slot), word.data(), word.size()) == 0;
}

const int32_t* StringTable::find(std::string_view word, uint64_t hash, uint32_t& count) const {
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

void StringTable::insert(std::string_view word, uint64_t hash, const int32_t* ids, uint32_t count) {
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

void StringTable::grow() {
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

}  // namespace qwen2audio::text
