#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/cpu_ops.h"
#include "backend/kv_cache.h"
#include "backend/workspace_pool.h"
#include "io/checkpoint.h"
#include "io/config.h"
#include "model/audio_encoder.h"
#include "model/interrupt.h"
#include "model/text_decoder.h"
#include "model/weights.h"
#include "runtime/dtype.h"

namespace qwen2audio {

// Token ids of a batch, row-major [batch, steps]; attention_mask (same shape, 0 or 1) marks
// padding with 0, null means no padding.
struct TokenBatch {
  const int64_t* ids = nullptr;
  const int64_t* attention_mask = nullptr;
  int64_t batch = 0;
  int64_t steps = 0;
};

// Log-mel features of audio clips [clips, mel_bins, frames] and which frames are valid: the
// feature_attention_mask [clips, frames] (null: every frame valid), as the processor makes it.
// audio_token_starts: where each clip's audio rows go, as flat indices into the TokenBatch they
// come with, for families whose placeholder id is not unique in the text (Ultravox's is EOS).
struct AudioBatch {
  const float* features = nullptr;
  const int64_t* feature_attention_mask = nullptr;
  int64_t clips = 0;
  int64_t mel_bins = 0;
  int64_t frames = 0;
  const int64_t* audio_token_starts = nullptr;
};

// What generation (generate/session.h, generate/decode_batch.h) needs of a model, whatever its
// family: token checks, embeddings with the audio merged in, a KV cache and the decoder's step.
// Implementations are read-only after loading, so sessions on several threads may share one.
class AudioLanguageModel {
 public:
  virtual ~AudioLanguageModel() = default;

  virtual const TextConfig& text_config() const = 0;
  virtual const GenerationConfig& generation_config() const = 0;

  // Throws InvalidArgument naming the first id outside the vocabulary or bad mask entry.
  virtual void check_tokens(const TokenBatch& tokens) const { check_token_batch(tokens, text_config().vocab_size); }
  // The rows of every clip's audio tokens, clip after clip: [sum of counts, hidden_size].
  virtual std::vector<float> audio_embeddings(const AudioBatch& audio, const Interrupt& interrupt) const = 0;
  // Token embeddings [batch * steps, hidden_size] with audio_rows (of `audio`, null without audio)
  // written where the family places them.
  virtual void embed(const TokenBatch& tokens, const AudioBatch* audio, const float* audio_rows, int64_t count,
                     float* out) const = 0;
  // Plain token embeddings (a generated token fed back).
  virtual void embed_tokens(const int64_t* ids, int64_t count, float* out) const = 0;

  virtual KVCache make_cache(int64_t batch) const = 0;
  // The decoder over `steps` new tokens per cache row (embeddings in hidden [batch * steps,
  // hidden_size], used as scratch); the cache's key mask must be set for the new slots and it
  // advances by `steps`. logits: [batch, vocab] at each row's last step, or with `all_positions`
  // [batch * steps, vocab].
  virtual void decode(KVCache& cache, float* hidden, int64_t steps, const int64_t* positions,
                      TextDecoder::Workspace& workspace, float* logits, const Interrupt& interrupt,
                      bool all_positions = false) const = 0;
  // One token for each row of a ragged batch: hidden [count, hidden_size], logits [count, vocab].
  virtual void decode_rows(KVCache& cache, float* hidden, const TextDecoder::RaggedRows& rows, const int64_t* positions,
                           TextDecoder::Workspace& workspace, float* logits, const Interrupt& interrupt) const = 0;

  // Hugging Face's forward, whatever the family: logits [batch, steps, vocab] of every position,
  // positions 0..steps-1 in every row whatever the padding (as transformers numbers them).
  void forward(const TokenBatch& tokens, const AudioBatch* audio, float* logits, const Interrupt& interrupt = {}) const;

  // A workspace for a call that needs one only while it runs (an encoder pass, forward), kept
  // between calls by the model (backend/workspace_pool.h).
  virtual backend::WorkspacePool::Lease borrow_workspace() const = 0;
  // Workspaces made for such calls since loading (reuse shows as no growth).
  virtual int64_t workspaces_created() const = 0;

  static void check_token_batch(const TokenBatch& tokens, int64_t vocab);
  // Throws InvalidArgument naming the first clip of `audio` whose features hold NaN or infinity;
  // `name` is the features' name in the family's processor output (input_features, audio_values).
  static void check_finite_features(const AudioBatch& audio, const char* name);
};

// What every family is made of and does alike: a checkpoint, the ops its graph runs on, the weights,
// the Whisper encoder and the shared decoder, and the decoder's calls. A family adds its config, its
// projector, its audio checks and where its audio rows go.
class AudioDecoderModel : public AudioLanguageModel {
 public:
  const TextConfig& text_config() const override { return decoder_->config(); }
  const GenerationConfig& generation_config() const override { return checkpoint_->generation_config(); }
  const Checkpoint& checkpoint() const { return *checkpoint_; }
  const WeightStore& weights() const { return *weights_; }
  DType dtype() const { return weights_->matrix_dtype(); }
  DType kv_cache_dtype() const { return decoder_->kv_cache_dtype(); }
  size_t copied_weight_bytes() const { return weights_->copied_bytes(); }
  size_t mapped_weight_bytes() const { return weights_->mapped_bytes(); }
  const QuantizationConfig& quantization() const { return weights_->quantization(); }
  const AudioEncoder& encoder() const { return *encoder_; }
  const TextDecoder& decoder() const { return *decoder_; }
  // The CPU's matrix multiply (oneDNN primitives, options); null on a device.
  const kernels::Gemm* cpu_gemm() const { return cpu_ops_ ? &cpu_ops_->gemm() : nullptr; }
  int num_threads() const { return num_threads_.load(); }
  void set_num_threads(int count);

  void embed_tokens(const int64_t* ids, int64_t count, float* out) const override { decoder_->embed(ids, count, out); }
  KVCache make_cache(int64_t batch) const override { return decoder_->make_cache(batch); }
  void decode(KVCache& cache, float* hidden, int64_t steps, const int64_t* positions, TextDecoder::Workspace& workspace,
              float* logits, const Interrupt& interrupt, bool all_positions) const override;
  // CPU models only (the CPU's attention takes rows of their own lengths).
  void decode_rows(KVCache& cache, float* hidden, const TextDecoder::RaggedRows& rows, const int64_t* positions,
                   TextDecoder::Workspace& workspace, float* logits, const Interrupt& interrupt) const override;
  backend::WorkspacePool::Lease borrow_workspace() const override { return workspaces_.borrow(); }
  int64_t workspaces_created() const override { return workspaces_.created(); }

 protected:
  // The ops on the CPU with these options (a family's load on the CPU).
  void use_cpu_ops(const kernels::GemmOptions& options);
  // Copies rows the graph left in the backend's memory into host `out` (the encoder's output a caller
  // asked for); `slot` is the workspace slot a device stages them in.
  void copy_to_host(backend::Workspace& workspace, const backend::Mat& rows, float* out, int slot) const;

  std::shared_ptr<const Checkpoint> checkpoint_;
  // The ops the graph runs on (the CPU's, or a device's). Declared before the modules holding its
  // weights, so it outlives them.
  std::unique_ptr<backend::Ops> ops_;
  backend::CpuOps* cpu_ops_ = nullptr;  // ops_ on the CPU
  std::unique_ptr<WeightStore> weights_;
  std::unique_ptr<AudioEncoder> encoder_;
  std::unique_ptr<TextDecoder> decoder_;
  // After ops_: its workspaces hold the backend's per-stream state, released before the ops.
  mutable backend::WorkspacePool workspaces_;
  std::atomic<int> num_threads_{1};
};

}  // namespace qwen2audio
