#pragma once

#include <cstdint>
#include <vector>

#include "io/config.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/gemm.h"
#include "model/interrupt.h"
#include "model/kv_cache.h"
#include "model/weights.h"
#include "runtime/buffer.h"

namespace qwen2audio {

// The decoder of every family: Qwen2 (Qwen2-Audio) and Llama 3 (Ultravox) are the same graph,
// differing only in what TextConfig says (q/k/v biases, RoPE scaling, tied head):
//   per layer: x += o_proj(attention(rope(q), rope(k), v))  over RMSNorm(x), GQA
//              x += down_proj(silu(gate_proj(h)) * up_proj(h)),  h = RMSNorm(x)
//   logits = lm_head(RMSNorm(x))   (lm_head = embed_tokens when tie_word_embeddings)
// Causal attention over the KV cache: each call appends its tokens' keys and values.
class TextDecoder {
 public:
  // Scratch for one stream of calls (a session or one forward); sized by the largest call, so
  // decode steps after a prefill allocate nothing.
  struct Workspace {
    Buffer<float> normed, q, k, v, attended, gate, up, cos, sin;
    kernels::AttentionScratch attention;
    std::vector<int64_t> kv_lens;  // per-row key counts of a ragged step
  };

  // One decode step of rows that advance on their own (generate/decode_batch.h): hidden row i is
  // the next token of cache row rows[i], which holds lengths[i] tokens; its keys and values go to
  // slot lengths[i], whose key_mask entry the caller sets. The cache's own length() is unused.
  struct RaggedRows {
    const int64_t* rows = nullptr;
    const int64_t* lengths = nullptr;
    int64_t count = 0;
  };

  // kv_cache_dtype: what make_cache's caches hold (F32 or BF16).
  TextDecoder(const TextConfig& config, WeightStore& weights, DType kv_cache_dtype = DType::F32);

  const TextConfig& config() const { return config_; }
  int64_t hidden_size() const { return config_.hidden_size; }
  int64_t vocab_size() const { return config_.vocab_size; }

  // out[i, :] = embed_tokens[ids[i]]; ids must be in range.
  void embed(const int64_t* ids, int64_t count, float* out) const;

  // hidden: [batch, steps, hidden_size], the embeddings of `steps` new tokens per cache row, turned
  // in place into the last layer's output (before the final norm). positions: [batch, steps]
  // rotary positions. The cache's key_mask must already be set for the new slots
  // [cache.length(), cache.length() + steps); on return the cache has advanced by `steps`.
  void forward(kernels::Gemm& gemm, float* hidden, int64_t steps, const int64_t* positions, KVCache& cache,
               Workspace& workspace, const Interrupt& interrupt) const;
  // The same layers over a ragged step: hidden [ragged.count, hidden_size], positions [count].
  void forward(kernels::Gemm& gemm, float* hidden, const RaggedRows& ragged, const int64_t* positions, KVCache& cache,
               Workspace& workspace, const Interrupt& interrupt) const;

  // logits[r, :] = lm_head(norm(hidden[r, :])) for `rows` rows of hidden with row stride ldh.
  void logits(kernels::Gemm& gemm, const float* hidden, int64_t rows, int64_t ldh, float* logits,
              Workspace& workspace) const;

  // forward() and then the logits [batch, vocab] at each row's last step (or of each ragged row):
  // a model's decode step on the CPU, whatever its family.
  void decode(kernels::Gemm& gemm, float* hidden, int64_t steps, const int64_t* positions, KVCache& cache,
              Workspace& workspace, float* logits, const Interrupt& interrupt) const;
  void decode(kernels::Gemm& gemm, float* hidden, const RaggedRows& ragged, const int64_t* positions, KVCache& cache,
              Workspace& workspace, float* logits, const Interrupt& interrupt) const;

  KVCache make_cache(int64_t batch) const;
  DType kv_cache_dtype() const { return kv_cache_dtype_; }

 private:
  // The layer loop of both forwards; `ragged` null: `steps` tokens for every cache row.
  void run_layers(kernels::Gemm& gemm, float* hidden, int64_t steps, const RaggedRows* ragged, const int64_t* positions,
                  KVCache& cache, Workspace& workspace, const Interrupt& interrupt) const;

  struct Layer {
    Norm input_layernorm, post_attention_layernorm;
    Linear q_proj, k_proj, v_proj, o_proj;
    Linear gate_proj, up_proj, down_proj;
  };
  TextConfig config_;
  DType kv_cache_dtype_;
  Matrix embed_tokens_;
  std::vector<Layer> layers_;
  Norm norm_;
  Linear lm_head_;
  std::vector<float> inverse_frequencies_;  // RoPE's, scaling applied; [head_dim / 2]
};

// RoPE inverse frequencies of a decoder config: theta's, rescaled per Llama 3's rope_scaling.
std::vector<float> rope_inverse_frequencies(const TextConfig& config);

}  // namespace qwen2audio
