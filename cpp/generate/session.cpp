#include "generate/session.h"

#include <algorithm>
#include <cstring>
#include <random>
#include <string>

#include "kernels/cpu/reduce.h"
#include "runtime/errors.h"
#include "runtime/threads.h"

namespace qwen2audio {

Session::Session(std::shared_ptr<const AudioLanguageModel> model, int64_t batch)
    : model_(std::move(model)),
      batch_(batch),
      cache_(model_->make_cache(batch)),
      pending_(static_cast<size_t>(batch), -1),
      history_(static_cast<size_t>(batch)),
      valid_tokens_(static_cast<size_t>(batch), 0),
      sampler_(model_->text_config().vocab_size) {}

int64_t Session::length() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return static_cast<int64_t>(history_[0].size());
}

std::vector<std::vector<int64_t>> Session::tokens() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return history_;
}

void Session::reserve(int64_t extra_tokens) {
  const int64_t limit = model_->text_config().max_position_embeddings;
  const int64_t needed = static_cast<int64_t>(history_[0].size()) + extra_tokens;
  if (needed > limit)
    throw InvalidArgument("the context would reach " + std::to_string(needed) + " tokens (" +
                          std::to_string(history_[0].size()) + " so far + " + std::to_string(extra_tokens) +
                          " more), beyond max_position_embeddings (" + std::to_string(limit) + ")");
  // Grow geometrically so a long chat reallocates its cache only a few times.
  if (needed > cache_.capacity()) cache_.reserve(std::max(needed, std::min(limit, 2 * cache_.capacity())));
}

void Session::append(const TokenBatch& tokens, const AudioBatch* audio, const Interrupt& interrupt) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (tokens.batch != batch_)
    throw InvalidArgument("input_ids have " + std::to_string(tokens.batch) + " rows but the session has " +
                          std::to_string(batch_));
  model_->check_tokens(tokens);
  if (tokens.attention_mask) {
    for (int64_t b = 0; b < batch_; ++b)
      for (int64_t t = 1; t < tokens.steps; ++t)
        if (tokens.attention_mask[b * tokens.steps + t - 1] > tokens.attention_mask[b * tokens.steps + t])
          throw InvalidArgument("attention_mask row " + std::to_string(b) +
                                " is not left-padded (0...0 1...1); generation needs padding on the left");
  }
  std::vector<float> audio_rows;
  if (audio != nullptr) audio_rows = model_->audio_embeddings(*audio, interrupt);

  const int64_t hidden = model_->text_config().hidden_size;
  const bool has_pending = pending_[0] >= 0;
  const int64_t steps = tokens.steps + (has_pending ? 1 : 0);
  reserve(tokens.steps);

  float* states = hidden_.reserve(static_cast<size_t>(batch_ * steps * hidden));
  float* embedded = has_pending ? embedded_.reserve(static_cast<size_t>(batch_ * tokens.steps * hidden)) : states;
  model_->embed(tokens, audio, audio ? audio_rows.data() : nullptr, static_cast<int64_t>(audio_rows.size()) / hidden,
                embedded);
  std::vector<int64_t> ids(static_cast<size_t>(batch_ * steps));
  std::vector<uint8_t> mask(static_cast<size_t>(batch_ * steps));
  for (int64_t b = 0; b < batch_; ++b) {
    int64_t slot = b * steps;
    if (has_pending) {
      std::memcpy(states + (slot + 1) * hidden, embedded + b * tokens.steps * hidden,
                  sizeof(float) * tokens.steps * hidden);
      // The pending token's history entry exists already; it only needs its keys and values.
      model_->embed_tokens(&pending_[b], 1, states + slot * hidden);
      ids[slot] = -1;
      mask[slot] = 1;
      ++slot;
    }
    for (int64_t t = 0; t < tokens.steps; ++t) {
      ids[slot + t] = tokens.ids[b * tokens.steps + t];
      mask[slot + t] = tokens.attention_mask ? static_cast<uint8_t>(tokens.attention_mask[b * tokens.steps + t]) : 1;
    }
  }
  append_locked(ids, mask, steps, interrupt);
}

void Session::append_locked(const std::vector<int64_t>& ids, const std::vector<uint8_t>& mask, int64_t steps,
                            const Interrupt& interrupt) {
  const AudioLanguageModel& model = *model_;
  const int64_t vocab = model.text_config().vocab_size;
  const int64_t start = cache_.length();
  std::vector<int64_t>& positions = positions_;
  std::vector<int64_t>& counts = counts_;
  positions.resize(static_cast<size_t>(batch_ * steps));
  counts.assign(valid_tokens_.begin(), valid_tokens_.end());
  for (int64_t b = 0; b < batch_; ++b) {
    for (int64_t t = 0; t < steps; ++t) {
      const size_t index = static_cast<size_t>(b * steps + t);
      cache_.key_mask()[b * cache_.key_mask_stride() + start + t] = mask[index];
      // transformers gives padding position 1; no query sees it, so any value would do.
      positions[index] = mask[index] ? counts[b]++ : 1;
    }
  }
  float* logits = logits_.reserve(static_cast<size_t>(batch_ * vocab));
  model.decode(cache_, hidden_.data(), steps, positions.data(), workspace_, logits, interrupt);

  valid_tokens_.assign(counts.begin(), counts.end());
  for (int64_t b = 0; b < batch_; ++b) {
    for (int64_t t = 0; t < steps; ++t)
      if (ids[b * steps + t] >= 0) history_[b].push_back(ids[b * steps + t]);
    pending_[b] = -1;
  }
  logits_ready_ = true;
}

std::vector<int64_t> Session::generate(const GenerationOptions& options, const TokenCallback& on_tokens,
                                       const Interrupt& interrupt, GenerationRecord* record) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (options.max_new_tokens < 0)
    throw InvalidArgument("max_new_tokens must be >= 0, got " + std::to_string(options.max_new_tokens));
  if (options.min_new_tokens < 0)
    throw InvalidArgument("min_new_tokens must be >= 0, got " + std::to_string(options.min_new_tokens));
  check_sampling_options(options.sampling);
  const int64_t vocab = model_->text_config().vocab_size;
  if (options.pad_token_id < 0 || options.pad_token_id >= vocab)
    throw InvalidArgument("pad_token_id " + std::to_string(options.pad_token_id) + " is outside the vocabulary");
  for (int64_t token : options.eos_token_ids)
    if (token < 0 || token >= vocab)
      throw InvalidArgument("eos_token_id " + std::to_string(token) + " is outside the vocabulary");
  if (history_[0].empty()) throw InvalidArgument("the session holds no tokens: append a prompt before generating");
  if (record != nullptr) *record = GenerationRecord{};
  if (options.max_new_tokens == 0) return {};
  reserve(options.max_new_tokens);

  const int64_t hidden = model_->text_config().hidden_size;
  hidden_.reserve(static_cast<size_t>(batch_ * hidden));
  std::vector<int64_t> ids(static_cast<size_t>(batch_), -1);
  const std::vector<uint8_t> all_valid(static_cast<size_t>(batch_), 1);
  // Feeds the pending tokens: one decode step, no allocation once the buffers are sized.
  auto feed_pending = [&]() {
    for (int64_t b = 0; b < batch_; ++b) model_->embed_tokens(&pending_[b], 1, hidden_.data() + b * hidden);
    append_locked(ids, all_valid, 1, interrupt);
  };
  if (!logits_ready_) {
    if (pending_[0] < 0) throw std::logic_error("session has neither logits nor a pending token");
    feed_pending();
  }

  const bool scores = record != nullptr && options.output_scores;
  const bool raw_logits = record != nullptr && options.output_logits;
  const bool logprobs = record != nullptr && options.output_logprobs;
  // Step-major while generating (the step count is unknown until the end); transposed at the end.
  std::vector<float> step_logprobs;
  if (logprobs) step_logprobs.reserve(static_cast<size_t>(batch_ * options.max_new_tokens));
  sampler_.seed(options.seed ? *options.seed : std::random_device{}());
  std::vector<int64_t> generated(static_cast<size_t>(batch_ * options.max_new_tokens));
  std::vector<int64_t> step_tokens(static_cast<size_t>(batch_));
  std::vector<uint8_t> finished(static_cast<size_t>(batch_), 0);
  std::vector<uint8_t> finish_requests(static_cast<size_t>(batch_), 0);
  auto is_eos = [&](int64_t token) {
    return std::find(options.eos_token_ids.begin(), options.eos_token_ids.end(), token) != options.eos_token_ids.end();
  };
  int64_t steps = 0;
  while (steps < options.max_new_tokens) {
    const std::vector<int64_t>* suppressed =
        steps < options.min_new_tokens && !options.eos_token_ids.empty() ? &options.eos_token_ids : nullptr;
    float* step_scores = nullptr;
    if (scores) {
      record->scores.resize(record->scores.size() + static_cast<size_t>(batch_ * vocab));
      step_scores = record->scores.data() + record->scores.size() - static_cast<size_t>(batch_ * vocab);
    }
    if (raw_logits) record->logits.insert(record->logits.end(), logits_.data(), logits_.data() + batch_ * vocab);
    for (int64_t b = 0; b < batch_; ++b) {
      const float* row = logits_.data() + b * vocab;
      float* processed = step_scores ? step_scores + b * vocab : nullptr;
      int64_t token = options.pad_token_id;
      if (!finished[b])
        token = sampler_.next_token(row, history_[b], options.sampling, suppressed, processed);
      else if (processed != nullptr)
        sampler_.process(row, history_[b], options.sampling, suppressed, processed);
      if (logprobs)
        step_logprobs.push_back(finished[b] ? 0.0f : static_cast<float>(row[token] - kernels::log_sum_exp(row, vocab)));
      if (is_eos(token)) finished[b] = 1;
      step_tokens[b] = token;
      generated[b * options.max_new_tokens + steps] = token;
      history_[b].push_back(token);
      pending_[b] = token;
    }
    logits_ready_ = false;
    ++steps;
    if (on_tokens) {
      std::fill(finish_requests.begin(), finish_requests.end(), uint8_t{0});
      on_tokens(step_tokens.data(), batch_, finish_requests.data());
      for (int64_t b = 0; b < batch_; ++b) finished[b] |= finish_requests[b];
    }
    if (std::all_of(finished.begin(), finished.end(), [](uint8_t done) { return done != 0; })) break;
    if (steps < options.max_new_tokens) feed_pending();
  }
  std::vector<int64_t> result(static_cast<size_t>(batch_ * steps));
  for (int64_t b = 0; b < batch_; ++b)
    std::copy_n(generated.begin() + b * options.max_new_tokens, steps, result.begin() + b * steps);
  if (logprobs) {
    record->logprobs.resize(static_cast<size_t>(batch_ * steps));
    for (int64_t b = 0; b < batch_; ++b)
      for (int64_t t = 0; t < steps; ++t) record->logprobs[b * steps + t] = step_logprobs[t * batch_ + b];
  }
  return result;
}

void Session::truncate(int64_t length) {
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t total = static_cast<int64_t>(history_[0].size());
  if (length < 0 || length > total)
    throw InvalidArgument("cannot truncate a session of " + std::to_string(total) + " tokens to " +
                          std::to_string(length));
  if (length == total) return;
  logits_ready_ = false;
  if (length == 0) {
    cache_.truncate(0);
    for (int64_t b = 0; b < batch_; ++b) {
      history_[b].clear();
      pending_[b] = -1;
      valid_tokens_[b] = 0;
    }
    return;
  }
  // The last kept token becomes pending: the next call recomputes it, which yields the logits a
  // generate() right after the rewind needs. Pending tokens always attend, so it must not be padding.
  for (int64_t b = 0; b < batch_; ++b)
    if (cache_.key_mask()[b * cache_.key_mask_stride() + length - 1] == 0)
      throw InvalidArgument("cannot truncate to " + std::to_string(length) + " tokens: row " + std::to_string(b) +
                            " would end on padding");
  cache_.truncate(length - 1);
  for (int64_t b = 0; b < batch_; ++b) {
    history_[b].resize(static_cast<size_t>(length));
    pending_[b] = history_[b].back();
    const uint8_t* mask = cache_.key_mask() + b * cache_.key_mask_stride();
    valid_tokens_[b] = std::count(mask, mask + length - 1, uint8_t{1});
  }
}

}  // namespace qwen2audio
