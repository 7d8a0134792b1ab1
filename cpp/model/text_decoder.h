#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/kv_cache.h"
#include "backend/ops.h"
#include "io/config.h"
#include "model/interrupt.h"
#include "model/weights.h"

namespace qwen2audio {

// The decoder of every family: Qwen2 (Qwen2-Audio) and Llama 3 (Ultravox) are the same graph,
// differing only in what TextConfig says (q/k/v biases, RoPE scaling, tied head):
//   per layer: x += o_proj(attention(rope(q), rope(k), v))  over RMSNorm(x), GQA
//              x += down_proj(silu(gate_proj(h)) * up_proj(h)),  h = RMSNorm(x)
//   logits = lm_head(RMSNorm(x))   (lm_head = embed_tokens when tie_word_embeddings)
// Causal attention over the KV cache: each call appends its tokens' keys and values. Written once
// against the op-level backend (backend/ops.h); token embeddings are looked up on the host.
class TextDecoder {
 public:
  // Scratch for one stream of calls (a session or one forward); sized by the largest call, so
  // decode steps after a prefill allocate nothing.
  using Workspace = backend::Workspace;

  // One decode step of rows that advance on their own (generate/decode_batch.h): hidden row i is
  // the next token of cache row rows[i], which holds lengths[i] tokens; its keys and values go to
  // slot lengths[i], whose key_mask entry the caller sets. The cache's own length() is unused.
  struct RaggedRows {
    const int64_t* rows = nullptr;
    const int64_t* lengths = nullptr;
    int64_t count = 0;
  };

  // kv_cache_dtype: what make_cache's caches hold (F32 or BF16). The weights come from `weights`
  // and live where `ops` keeps them; `ops` must outlive the decoder.
  TextDecoder(const TextConfig& config, WeightStore& weights, backend::Ops& ops, DType kv_cache_dtype = DType::F32);

  const TextConfig& config() const { return config_; }
  int64_t hidden_size() const { return config_.hidden_size; }
  int64_t vocab_size() const { return config_.vocab_size; }

  // out[i, :] = embed_tokens[ids[i]]; ids must be in range.
  void embed(const int64_t* ids, int64_t count, float* out) const;

  // hidden: host [batch, steps, hidden_size], the embeddings of `steps` new tokens per cache row
  // (used as scratch). positions: [batch, steps] rotary positions. The cache's key_mask must
  // already be set for the new slots [cache.length(), cache.length() + steps); on return the cache
  // has advanced by `steps`. logits: [batch, vocab] at each row's last step, or with
  // `all_positions` [batch * steps, vocab] (the reference's forward).
  void decode(float* hidden, int64_t steps, const int64_t* positions, KVCache& cache, Workspace& workspace,
              float* logits, const Interrupt& interrupt, bool all_positions = false) const;
  // The same layers over a ragged step: hidden [ragged.count, hidden_size], positions [count],
  // logits [count, vocab].
  void decode(float* hidden, const RaggedRows& ragged, const int64_t* positions, KVCache& cache, Workspace& workspace,
              float* logits, const Interrupt& interrupt) const;

  KVCache make_cache(int64_t batch) const;
  DType kv_cache_dtype() const { return kv_cache_dtype_; }

 private:
  // The layer loop of both decodes, over hidden in the backend's memory.
  void run_layers(const backend::Mat& hidden, const backend::CacheWrite& write, const int64_t* positions,
                  KVCache& cache, Workspace& workspace, const Interrupt& interrupt) const;
  // logits = lm_head(norm(rows of hidden)), into host logits.
  void head(const backend::Mat& hidden, float* logits, Workspace& workspace) const;

  struct Layer {
    std::unique_ptr<backend::Constant> input_layernorm, post_attention_layernorm;
    std::unique_ptr<backend::LinearWeights> qkv_proj;  // q, k, v stacked
    std::unique_ptr<backend::LinearWeights> o_proj;
    std::unique_ptr<backend::LinearWeights> gate_up_proj;  // gate, up stacked
    std::unique_ptr<backend::LinearWeights> down_proj;
  };
  TextConfig config_;
  backend::Ops& ops_;
  DType kv_cache_dtype_;
  Matrix embed_tokens_;
  std::vector<Layer> layers_;
  std::unique_ptr<backend::Constant> norm_;
  std::unique_ptr<backend::LinearWeights> lm_head_;
  std::vector<float> inverse_frequencies_;  // RoPE's, scaling applied; [head_dim / 2]
  std::unique_ptr<backend::Constant> rope_frequencies_;
};

// RoPE inverse frequencies of a decoder config: theta's, rescaled per Llama 3's rope_scaling.
std::vector<float> rope_inverse_frequencies(const TextConfig& config);

}  // namespace qwen2audio
