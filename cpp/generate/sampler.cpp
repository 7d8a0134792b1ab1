#include "generate/sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "kernels/cpu/reduce.h"
#include "runtime/errors.h"

namespace qwen2audio {

void check_sampling_options(const SamplingOptions& options) {
  if (!(options.repetition_penalty > 0) || !std::isfinite(options.repetition_penalty))
    throw InvalidArgument("repetition_penalty must be a strictly positive number, got " +
                          std::to_string(options.repetition_penalty));
  if (!options.do_sample) return;
  if (!(options.temperature > 0) || !std::isfinite(options.temperature))
    throw InvalidArgument("temperature must be a strictly positive number when sampling, got " +
                          std::to_string(options.temperature));
  if (options.top_k < 0)
    throw InvalidArgument("top_k must be 0 (off) or positive, got " + std::to_string(options.top_k));
  if (!(options.top_p > 0 && options.top_p <= 1))
    throw InvalidArgument("top_p must be in (0, 1], got " + std::to_string(options.top_p));
}

Sampler::Sampler(int64_t vocab_size)
    : vocab_size_(vocab_size), seen_(static_cast<size_t>(vocab_size), 0), random_(std::random_device{}()) {
  candidates_.reserve(static_cast<size_t>(vocab_size));
}

double Sampler::uniform() { return static_cast<double>(random_() >> 11) * 0x1.0p-53; }

int64_t Sampler::next_token(const float* logits, const std::vector<int64_t>& history, const SamplingOptions& options,
                            const std::vector<int64_t>* suppressed, float* processed) {
  return run(logits, history, options, suppressed, processed, true);
}

void Sampler::process(const float* logits, const std::vector<int64_t>& history, const SamplingOptions& options,
                      const std::vector<int64_t>* suppressed, float* processed) {
  run(logits, history, options, suppressed, processed, false);
}

int64_t Sampler::run(const float* logits, const std::vector<int64_t>& history, const SamplingOptions& options,
                     const std::vector<int64_t>* suppressed, float* processed, bool draw) {
  constexpr float kRemoved = -std::numeric_limits<float>::infinity();
  float* scores = scores_.reserve(static_cast<size_t>(vocab_size_));
  std::memcpy(scores, logits, sizeof(float) * vocab_size_);

  if (options.repetition_penalty != 1.0) {
    // Once per distinct token, however often it occurred.
    const float penalty = static_cast<float>(options.repetition_penalty);
    for (int64_t token : history) {
      if (seen_[token]) continue;
      seen_[token] = 1;
      scores[token] = scores[token] < 0 ? scores[token] * penalty : scores[token] / penalty;
    }
    for (int64_t token : history) seen_[token] = 0;
  }
  if (suppressed != nullptr)
    for (int64_t token : *suppressed) scores[token] = kRemoved;
  if (!options.do_sample) {
    if (processed != nullptr) std::memcpy(processed, scores, sizeof(float) * vocab_size_);
    return draw ? kernels::argmax(scores, vocab_size_) : -1;
  }

  if (options.temperature != 1.0) {
    const float temperature = static_cast<float>(options.temperature);
    for (int64_t i = 0; i < vocab_size_; ++i) scores[i] /= temperature;
  }
  if (processed != nullptr) std::memcpy(processed, scores, sizeof(float) * vocab_size_);
  candidates_.clear();
  for (int64_t i = 0; i < vocab_size_; ++i)
    if (scores[i] != kRemoved) candidates_.emplace_back(scores[i], i);
  if (options.top_k > 0 && options.top_k < static_cast<int64_t>(candidates_.size())) {
    // Everything below the k-th largest score goes; ties with it stay, as in transformers.
    std::nth_element(candidates_.begin(), candidates_.begin() + (options.top_k - 1), candidates_.end(),
                     [](const auto& a, const auto& b) { return a.first > b.first; });
    const float threshold = candidates_[options.top_k - 1].first;
    candidates_.erase(std::remove_if(candidates_.begin(), candidates_.end(),
                                     [threshold](const auto& c) { return c.first < threshold; }),
                      candidates_.end());
    if (processed != nullptr)
      for (int64_t i = 0; i < vocab_size_; ++i)
        if (processed[i] < threshold) processed[i] = kRemoved;
  }
  if (candidates_.empty()) return draw ? kernels::argmax(scores, vocab_size_) : -1;

  // Probabilities of the survivors (softmax over the filtered scores).
  std::sort(candidates_.begin(), candidates_.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  const float max_score = candidates_.back().first;
  double total = 0.0;
  for (auto& candidate : candidates_) {
    candidate.first = std::exp(candidate.first - max_score);
    total += candidate.first;
  }
  size_t first_kept = 0;
  if (options.top_p < 1.0) {
    // Ascending order: drop the low tail whose cumulative probability stays within 1 - top_p,
    // always keeping the most likely token.
    double cumulative = 0.0;
    while (first_kept + 1 < candidates_.size()) {
      cumulative += candidates_[first_kept].first / total;
      if (cumulative > 1.0 - options.top_p) break;
      ++first_kept;
    }
    if (processed != nullptr)
      for (size_t i = 0; i < first_kept; ++i) processed[candidates_[i].second] = kRemoved;
  }
  if (!draw) return -1;
  double kept_total = 0.0;
  for (size_t i = first_kept; i < candidates_.size(); ++i) kept_total += candidates_[i].first;
  double target = uniform() * kept_total;
  for (size_t i = first_kept; i < candidates_.size(); ++i) {
    target -= candidates_[i].first;
    if (target < 0) return candidates_[i].second;
  }
  return candidates_.back().second;
}

}  // namespace qwen2audio
