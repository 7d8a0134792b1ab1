#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

// Words already run through BPE, with their ids. Each slot is one 64-byte cache line holding the
// hash, the word and its ids inline when they fit (24 bytes, 6 ids: nearly every word), so a hit
// costs one cache miss; longer entries spill to an arena. Not synchronized: the tokenizer guards
// the shared instance.
namespace qwen2audio::text {

class WordCache {
 public:
  static uint64_t hash(std::string_view word);

  // The ids of `word` (`count` receives how many), or nullptr when absent.
  const int32_t* find(std::string_view word, uint64_t hash, uint32_t& count) const;
  // Adds `word` (1..65535 bytes, at most 65535 ids) unless present.
  void insert(std::string_view word, uint64_t hash, const int32_t* ids, uint32_t count);
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  // Adds the entries of `other` not present here, while this holds fewer than `capacity`.
  void absorb(const WordCache& other, size_t capacity);

 private:
  static constexpr size_t kInlineBytes = 24;
  static constexpr size_t kInlineIds = 6;
  struct alignas(64) Slot {
    uint64_t hash;
    uint32_t spill;        // arena_ offset (in ids) of what does not fit inline
    uint16_t word_length;  // 0: empty slot
    uint16_t id_count;
    char word[kInlineBytes];
    int32_t ids[kInlineIds];
  };
  static_assert(sizeof(Slot) == 64);

  static size_t units(size_t bytes) { return (bytes + 3) / 4; }
  const char* word_of(const Slot& slot) const {
    return slot.word_length <= kInlineBytes ? slot.word : reinterpret_cast<const char*>(arena_.data() + slot.spill);
  }
  const int32_t* ids_of(const Slot& slot) const;
  void grow();

  std::vector<Slot> slots_;
  std::vector<int32_t> arena_;
  size_t size_ = 0;
};

}  // namespace qwen2audio::text
