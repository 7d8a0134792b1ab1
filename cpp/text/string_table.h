#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

// A compact flat map from strings to short id lists (the vocabulary: spelling -> id): open
// addressing over 16-byte slots, keys and ids together in one arena.
namespace qwen2audio::text {

class StringTable {
 public:
  static uint64_t hash(std::string_view word);

  // The ids of `word` (`count` receives how many), or nullptr when absent.
  const int32_t* find(std::string_view word, uint64_t hash, uint32_t& count) const;
  // Adds `word` (1..65535 bytes, at most 65535 ids) unless present.
  void insert(std::string_view word, uint64_t hash, const int32_t* ids, uint32_t count);
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  struct Slot {
    uint64_t hash;
    uint32_t offset;       // into arena_, in ids: the word's bytes (padded to whole ids), then its ids
    uint16_t word_length;  // 0: empty slot
    uint16_t id_count;
  };
  bool matches(const Slot& slot, std::string_view word, uint64_t hash) const;
  const char* word_bytes(const Slot& slot) const { return reinterpret_cast<const char*>(arena_.data() + slot.offset); }
  const int32_t* word_ids(const Slot& slot) const { return arena_.data() + slot.offset + units(slot.word_length); }
  static size_t units(size_t bytes) { return (bytes + 3) / 4; }
  void grow();

  std::vector<Slot> slots_;
  std::vector<int32_t> arena_;
  size_t size_ = 0;
};

}  // namespace qwen2audio::text
