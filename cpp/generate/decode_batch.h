#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/kv_cache.h"
#include "generate/sampler.h"
#include "generate/session.h"
#include "model/language_model.h"

namespace qwen2audio {

// What one request of a DecodeBatch generates with.
struct SlotOptions {
  int64_t max_new_tokens = 0;
  SamplingOptions sampling;
  std::vector<int64_t> eos_token_ids;
  uint64_t seed = 0;
};

// A token that step() produced for one slot; `finished` once the slot reached an EOS token or its
// max_new_tokens (the slot then stops stepping but stays taken until release()).
struct SlotToken {
  int64_t slot = 0;
  int64_t token = 0;
  bool finished = false;
};

// Continuous batching: a fixed number of slots, each holding one conversation's KV cache row of
// its own length. A request is prefilled alone in a Session and admitted into a free slot; every
// step() then decodes one token for each active slot in a single pass over the weights (decode
// is memory-bound, so rows ride along almost for free), whatever their lengths and however long
// ago they joined. Finished slots leave with release(), which can hand the conversation back to a
// Session so a later turn reuses its cache.
//
// Each slot is sampled with its own Sampler and seed, so a request's tokens do not depend on its
// neighbours: greedy rows equal what Session::generate gives the same prompt alone.
//
// The slot cache is reserved up front (slots x capacity tokens), and step() allocates nothing.
// Not thread-safe: one scheduler thread owns a batch.
class DecodeBatch {
 public:
  DecodeBatch(std::shared_ptr<const AudioLanguageModel> model, int64_t slots, int64_t capacity);

  int64_t slots() const { return static_cast<int64_t>(slots_.size()); }
  int64_t capacity() const { return cache_.capacity(); }
  // Slots taken (stepping or finished but not released).
  int64_t taken() const;
  // Slots that the next step() decodes.
  int64_t stepping() const;
  int64_t free_slot() const;  // -1 when all are taken

  // Moves `session`'s conversation (batch 1, no padding, ending on a prompt) into a free slot: its
  // cache up to the last token is copied and that token is fed by the next step(). Returns the slot.
  int64_t admit(const Session& session, const SlotOptions& options);

  // Decodes one token for every stepping slot; `out` receives them in slot order (resized, its
  // capacity kept).
  void step(std::vector<SlotToken>& out, const Interrupt& interrupt = {});

  // Ends a slot's generation early (stop strings, a client gone); it stays taken until release().
  void finish(int64_t slot);
  // Frees the slot. With `into`, that session takes the slot's conversation (its tokens, the last
  // one pending, and their cache), so it can continue it.
  void release(int64_t slot, Session* into = nullptr);

  // Every token of a taken slot: prompt and generated.
  const std::vector<int64_t>& tokens(int64_t slot) const;
  int64_t generated(int64_t slot) const;

 private:
  struct Slot {
    bool taken = false;
    bool stepping = false;
    int64_t length = 0;  // tokens in the cache; the pending token is history.back()
    int64_t generated = 0;
    SlotOptions options;
    std::vector<int64_t> history;
    std::unique_ptr<Sampler> sampler;
  };
  Slot& taken_slot(int64_t slot);
  const Slot& taken_slot(int64_t slot) const;

  std::shared_ptr<const AudioLanguageModel> model_;
  std::vector<Slot> slots_;
  KVCache cache_;
  TextDecoder::Workspace workspace_;
  Buffer<float> hidden_, logits_;
  std::vector<int64_t> rows_, lengths_, positions_, pending_;  // per step, sized for every slot
};

}  // namespace qwen2audio
