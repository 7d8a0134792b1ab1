#pragma once

#include <cstdint>
#include <random>
#include <utility>
#include <vector>

#include "runtime/buffer.h"

namespace qwen2audio {

// The logits processors of transformers' generate, in its order: repetition penalty, then (only
// when sampling) temperature, top-k and top-p; each is skipped at its neutral value.
struct SamplingOptions {
  bool do_sample = false;
  double temperature = 1.0;
  int64_t top_k = 0;  // 0: off
  double top_p = 1.0;
  double repetition_penalty = 1.0;
};

// Throws InvalidArgument on out-of-range values (as transformers does).
void check_sampling_options(const SamplingOptions& options);

// Picks next tokens from rows of logits. Holds its scratch (no allocation per token after the
// first) and its random generator, so one sampler belongs to one generation at a time.
class Sampler {
 public:
  explicit Sampler(int64_t vocab_size);

  void seed(uint64_t seed) { random_.seed(seed); }
  // `history`: every token of the row so far (prompt, padding, generated) for the repetition
  // penalty. `suppressed` tokens get a score of -inf after the penalty (transformers' min-new-tokens
  // processor keeps EOS out that way). `processed`, when given, receives the vocabulary's scores as
  // transformers' output_scores reports them: after the penalty, suppression, temperature, and with
  // what top-k / top-p removed at -inf. Returns the chosen token id.
  int64_t next_token(const float* logits, const std::vector<int64_t>& history, const SamplingOptions& options,
                     const std::vector<int64_t>* suppressed = nullptr, float* processed = nullptr);
  // Fills `processed` as next_token would without choosing a token, so the random sequence is the
  // same whether or not finished rows have their scores recorded.
  void process(const float* logits, const std::vector<int64_t>& history, const SamplingOptions& options,
               const std::vector<int64_t>* suppressed, float* processed);

 private:
  double uniform();
  int64_t run(const float* logits, const std::vector<int64_t>& history, const SamplingOptions& options,
              const std::vector<int64_t>* suppressed, float* processed, bool draw);

  int64_t vocab_size_;
  Buffer<float> scores_;
  std::vector<uint8_t> seen_;
  std::vector<std::pair<float, int64_t>> candidates_;
  std::mt19937_64 random_;
};

}  // namespace qwen2audio
