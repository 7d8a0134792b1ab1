#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "backend/kv_cache.h"
#include "generate/sampler.h"
#include "model/language_model.h"

namespace qwen2audio {

struct GenerationOptions {
  int64_t max_new_tokens = 0;
  // EOS tokens are kept out until this many new tokens exist (transformers' min_new_tokens).
  int64_t min_new_tokens = 0;
  SamplingOptions sampling;
  std::vector<int64_t> eos_token_ids;  // empty: never stop early
  int64_t pad_token_id = 0;            // what finished rows emit while others continue
  std::optional<uint64_t> seed;        // unset: a fresh random seed
  // What GenerationRecord collects; each costs memory or time per step, so all are off by default.
  bool output_scores = false;
  bool output_logits = false;
  bool output_logprobs = false;
};

// Per-step data asked for by GenerationOptions; the vectors of unrequested outputs stay empty.
struct GenerationRecord {
  std::vector<float> scores;    // [steps, batch, vocab]: what the sampler chose from (Sampler::next_token)
  std::vector<float> logits;    // [steps, batch, vocab]: the model's raw logits
  std::vector<float> logprobs;  // [batch, steps]: log-softmax of the raw logits at the chosen token;
                                // 0 where a finished row is padded (a forced token)
};

// Receives each step's new tokens, one per row. Setting finish[b] = 1 ends row b after this step's
// token (stop strings are matched by the caller); it then emits pad_token_id like a row that reached
// EOS. It may throw to stop generation (the tokens of that step stay in the session).
using TokenCallback = std::function<void(const int64_t* tokens, int64_t batch, uint8_t* finish)>;

// A conversation's state on one model: the KV cache of every token fed so far, for a batch of rows
// that advance together. append() feeds tokens (prompt, next user turn) and generate() continues
// from them, so a multi-turn chat never recomputes earlier turns. Positions follow transformers'
// generate: each row counts its own non-padding tokens, so left-padded rows match unpadded ones.
//
// The last token generate() returns is "pending": its keys and values are computed by the next
// append() or generate(), which is when the next turn needs them. tokens() includes it.
//
// Calls on one session are serialized; separate sessions (also on one model) run concurrently.
class Session {
 public:
  Session(std::shared_ptr<const AudioLanguageModel> model, int64_t batch);

  const AudioLanguageModel& model() const { return *model_; }
  int64_t batch() const { return batch_; }
  // Tokens in the cache plus the pending one.
  int64_t length() const;
  // Every token of each row: prompt (padding included), generated and pending.
  std::vector<std::vector<int64_t>> tokens() const;

  // Feeds [batch, steps] more tokens. attention_mask rows must be left-padded (0...0 1...1) with at
  // least one 1. Audio placeholders in these tokens take the clips of `audio`, in order.
  void append(const TokenBatch& tokens, const AudioBatch* audio, const Interrupt& interrupt = {});

  // Generates up to max_new_tokens per row, stopping early once every row has produced an EOS
  // token (or was finished by the callback); finished rows emit pad_token_id meanwhile. Returns
  // [batch, steps] row-major. `record` receives the outputs the options ask for.
  std::vector<int64_t> generate(const GenerationOptions& options, const TokenCallback& on_tokens = {},
                                const Interrupt& interrupt = {}, GenerationRecord* record = nullptr);

  // Keeps the first `length` tokens (a chat that edits its history rewinds to the shared prefix);
  // the last kept token is recomputed by the next call, so generate() may follow directly.
  void truncate(int64_t length);
  void reset() { truncate(0); }

 private:
  // A serving batch moves conversations between its slots and sessions (cache rows, history).
  friend class DecodeBatch;

  // Runs `steps` tokens per row whose embeddings are in hidden_; ids of -1 are in history_ already.
  void append_locked(const std::vector<int64_t>& ids, const std::vector<uint8_t>& mask, int64_t steps,
                     const Interrupt& interrupt);
  void reserve(int64_t extra_tokens);

  std::shared_ptr<const AudioLanguageModel> model_;
  int64_t batch_;
  KVCache cache_;
  TextDecoder::Workspace workspace_;
  Buffer<float> hidden_;
  // A prompt's embeddings where a pending token goes before each row (otherwise they are embedded
  // straight into hidden_): kept, as a fresh buffer per call was a page fault per 4 KiB of a prompt's
  // rows (3 % of a batch of four 30 s clips' int8 prefill).
  Buffer<float> embedded_;
  Buffer<float> logits_;  // [batch, vocab] at each row's last fed token
  bool logits_ready_ = false;
  std::vector<int64_t> pending_;               // per row, -1 when none
  std::vector<std::vector<int64_t>> history_;  // per row: fed tokens plus pending
  std::vector<int64_t> valid_tokens_;          // per row: non-padding tokens fed (the next position)
  std::vector<int64_t> positions_, counts_;    // scratch of append_locked, reused every step
  Sampler sampler_;
  mutable std::mutex mutex_;
};

}  // namespace qwen2audio
