#include "generate/decode_batch.h"

#include <algorithm>
#include <string>

#include "runtime/errors.h"

namespace qwen2audio {

DecodeBatch::DecodeBatch(std::shared_ptr<const AudioLanguageModel> model, int64_t slots, int64_t capacity)
    : model_(std::move(model)),
      slots_(static_cast<size_t>(std::max<int64_t>(slots, 0))),
      cache_(model_->make_cache(std::max<int64_t>(slots, 1))) {
  if (slots < 1) throw InvalidArgument("a decode batch needs at least 1 slot, got " + std::to_string(slots));
  const int64_t limit = model_->text_config().max_position_embeddings;
  if (capacity < 1 || capacity > limit)
    throw InvalidArgument("the slot capacity must be within 1.." + std::to_string(limit) + " tokens, got " +
                          std::to_string(capacity));
  if (cache_.storage() != nullptr)
    throw InvalidArgument("batched serving runs on the CPU model; load it with device=\"cpu\"");
  cache_.reserve(capacity);
  const int64_t hidden = model_->text_config().hidden_size, vocab = model_->text_config().vocab_size;
  hidden_.reserve(static_cast<size_t>(slots * hidden));
  logits_.reserve(static_cast<size_t>(slots * vocab));
  for (auto* scratch : {&rows_, &lengths_, &positions_, &pending_}) scratch->reserve(static_cast<size_t>(slots));
  for (Slot& slot : slots_) slot.sampler = std::make_unique<Sampler>(vocab);
}

int64_t DecodeBatch::taken() const {
  return std::count_if(slots_.begin(), slots_.end(), [](const Slot& slot) { return slot.taken; });
}

int64_t DecodeBatch::stepping() const {
  return std::count_if(slots_.begin(), slots_.end(), [](const Slot& slot) { return slot.stepping; });
}

int64_t DecodeBatch::free_slot() const {
  for (size_t index = 0; index < slots_.size(); ++index)
    if (!slots_[index].taken) return static_cast<int64_t>(index);
  return -1;
}

DecodeBatch::Slot& DecodeBatch::taken_slot(int64_t slot) {
  return const_cast<Slot&>(static_cast<const DecodeBatch&>(*this).taken_slot(slot));
}

const DecodeBatch::Slot& DecodeBatch::taken_slot(int64_t slot) const {
  if (slot < 0 || slot >= slots() || !slots_[static_cast<size_t>(slot)].taken)
    throw InvalidArgument("slot " + std::to_string(slot) + " is not in use");
  return slots_[static_cast<size_t>(slot)];
}

int64_t DecodeBatch::admit(const Session& session, const SlotOptions& options) {
  const int64_t vocab = model_->text_config().vocab_size;
  check_sampling_options(options.sampling);
  if (options.max_new_tokens < 1)
    throw InvalidArgument("max_new_tokens must be at least 1, got " + std::to_string(options.max_new_tokens));
  for (int64_t token : options.eos_token_ids)
    if (token < 0 || token >= vocab)
      throw InvalidArgument("eos_token_id " + std::to_string(token) + " is outside the vocabulary");
  if (&session.model() != model_.get()) throw InvalidArgument("the session belongs to another model");
  const int64_t index = free_slot();
  if (index < 0) throw InvalidArgument("every slot of the decode batch is taken");

  std::lock_guard<std::mutex> lock(session.mutex_);
  if (session.batch_ != 1) throw InvalidArgument("a slot takes a session of batch 1");
  // The first token comes from the prompt's logits, exactly as Session::generate would pick it.
  if (!session.logits_ready_) throw InvalidArgument("admit needs a session whose last call was append()");
  const int64_t length = session.cache_.length();
  if (length + options.max_new_tokens - 1 > capacity())
    throw InvalidArgument("the prompt (" + std::to_string(length) + " tokens) and max_new_tokens (" +
                          std::to_string(options.max_new_tokens) + ") exceed the slot capacity of " +
                          std::to_string(capacity()) + " tokens");
  const uint8_t* mask = session.cache_.key_mask();
  if (std::find(mask, mask + length, uint8_t{0}) != mask + length)
    throw InvalidArgument("a slot takes a session without padding");

  Slot& slot = slots_[static_cast<size_t>(index)];
  cache_.copy_row(index, session.cache_, 0, length);
  slot.history.assign(session.history_[0].begin(), session.history_[0].end());
  slot.history.reserve(static_cast<size_t>(length + options.max_new_tokens));  // step() then never allocates
  slot.options = options;
  slot.length = length;
  slot.sampler->seed(options.seed);
  const int64_t token = slot.sampler->next_token(session.logits_.data(), slot.history, options.sampling);
  slot.history.push_back(token);
  slot.generated = 1;
  slot.taken = true;
  const auto& eos = options.eos_token_ids;
  slot.stepping = options.max_new_tokens > 1 && std::find(eos.begin(), eos.end(), token) == eos.end();
  return index;
}

void DecodeBatch::step(std::vector<SlotToken>& out, const Interrupt& interrupt) {
  out.clear();
  rows_.clear();
  lengths_.clear();
  positions_.clear();
  pending_.clear();
  for (size_t index = 0; index < slots_.size(); ++index) {
    const Slot& slot = slots_[index];
    if (!slot.stepping) continue;
    rows_.push_back(static_cast<int64_t>(index));
    lengths_.push_back(slot.length);
    positions_.push_back(slot.length);  // slots hold no padding: a token's position is its index
    pending_.push_back(slot.history.back());
    cache_.key_mask()[static_cast<int64_t>(index) * cache_.key_mask_stride() + slot.length] = 1;
  }
  const auto count = static_cast<int64_t>(rows_.size());
  if (count == 0) return;
  const int64_t vocab = model_->text_config().vocab_size;
  model_->embed_tokens(pending_.data(), count, hidden_.data());
  model_->decode_rows(cache_, hidden_.data(), {rows_.data(), lengths_.data(), count}, positions_.data(), workspace_,
                      logits_.data(), interrupt);
  for (int64_t i = 0; i < count; ++i) {
    Slot& slot = slots_[static_cast<size_t>(rows_[i])];
    const int64_t token = slot.sampler->next_token(logits_.data() + i * vocab, slot.history, slot.options.sampling);
    slot.history.push_back(token);
    ++slot.length;
    ++slot.generated;
    const auto& eos = slot.options.eos_token_ids;
    if (slot.generated >= slot.options.max_new_tokens || std::find(eos.begin(), eos.end(), token) != eos.end())
      slot.stepping = false;
    out.push_back({rows_[i], token, !slot.stepping});
  }
}

void DecodeBatch::finish(int64_t slot) { taken_slot(slot).stepping = false; }

void DecodeBatch::release(int64_t index, Session* into) {
  Slot& slot = taken_slot(index);
  if (into != nullptr) {
    if (&into->model() != model_.get()) throw InvalidArgument("the session belongs to another model");
    std::lock_guard<std::mutex> lock(into->mutex_);
    if (into->batch_ != 1) throw InvalidArgument("a slot's conversation goes to a session of batch 1");
    into->cache_.truncate(0);
    into->cache_.reserve(slot.length + 1);
    into->cache_.copy_row(0, cache_, index, slot.length);
    into->cache_.advance(slot.length);
    into->history_[0] = slot.history;
    into->pending_[0] = slot.history.back();
    into->valid_tokens_[0] = slot.length;
    into->logits_ready_ = false;
  }
  slot.taken = false;
  slot.stepping = false;
  std::fill_n(cache_.key_mask() + index * cache_.key_mask_stride(), cache_.capacity(), uint8_t{0});
}

const std::vector<int64_t>& DecodeBatch::tokens(int64_t slot) const { return taken_slot(slot).history; }

int64_t DecodeBatch::generated(int64_t slot) const { return taken_slot(slot).generated; }

}  // namespace qwen2audio
