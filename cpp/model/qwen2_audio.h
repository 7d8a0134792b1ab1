#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "kernels/cpu/gemm.h"
#include "model/audio_encoder.h"
#include "model/device_model.h"
#include "model/interrupt.h"
#include "model/language_model.h"
#include "model/quantization.h"
#include "model/text_decoder.h"
#include "model/weights.h"
#include "runtime/errors.h"

namespace qwen2audio {

// Qwen2AudioForConditionalGeneration: the audio encoder, the projector into the language model's
// embedding space, and the Qwen2 decoder. Read-only after loading, so any number of threads and
// sessions may use one model at once.
class Qwen2AudioModel final : public AudioLanguageModel {
 public:
  // dtype: "auto" (the checkpoint's own: BF16 stays bfloat16, F32 float32, F16 computes in
  // float32), "float32" or "bfloat16". num_threads 0: the OpenMP default.
  // quantization: weight-only int8/int4 of the decoder applied at load (model/quantization.h); a
  // checkpoint saved quantized loads its packed weights whatever is asked here, and refuses a
  // different format.
  // kv_cache_dtype: what sessions' KV caches hold: "auto" (BF16 for a BF16 model, else float32),
  // "float32" or "bfloat16".
  // device: "cpu", or "cuda"/"cuda:N": the encoder, projector and decoder run on that GPU with
  // BF16 weights and a BF16 KV cache (model/device_model.h); tokens are embedded and sampled on
  // the host. Quantization and float32 compute are CPU-only.
  static std::shared_ptr<Qwen2AudioModel> load(const std::filesystem::path& path, const std::string& dtype = "auto",
                                               int num_threads = 0, kernels::GemmOptions gemm_options = {},
                                               const QuantizationRequest& quantization = {},
                                               const std::string& kv_cache_dtype = "auto",
                                               const std::string& device = "cpu");

  const Qwen2AudioConfig& config() const { return config_; }
  const TextConfig& text_config() const override { return config_.text; }
  const GenerationConfig& generation_config() const override { return checkpoint_->generation_config(); }
  const Checkpoint& checkpoint() const { return *checkpoint_; }
  DType dtype() const { return weights_->matrix_dtype(); }
  int num_threads() const { return num_threads_.load(); }
  void set_num_threads(int count);
  kernels::Gemm& gemm() const { return *gemm_; }
  const AudioEncoder& encoder() const { return *encoder_; }
  const TextDecoder& decoder() const { return *decoder_; }
  DType kv_cache_dtype() const { return decoder_->kv_cache_dtype(); }
  size_t copied_weight_bytes() const { return weights_->copied_bytes(); }
  size_t mapped_weight_bytes() const { return weights_->mapped_bytes(); }
  const QuantizationConfig& quantization() const { return weights_->quantization(); }
  const WeightStore& weights() const { return *weights_; }
  // "cpu" or "cuda:N"; device_description() adds the GPU's name.
  const std::string& device() const { return device_name_; }
  std::string device_description() const { return device_model_ ? device_model_->description() : "cpu"; }
  size_t device_weight_bytes() const { return device_model_ ? device_model_->weight_bytes() : 0; }

  // Each checks its inputs and throws InvalidArgument naming the problem.
  std::vector<int64_t> mel_frames(const AudioBatch& audio) const;
  std::vector<int64_t> audio_token_counts(const AudioBatch& audio) const;
  void check_tokens(const TokenBatch& tokens) const override;

  // The encoder's last hidden state: [clips, output_frames, d_model].
  void encode(const AudioBatch& audio, float* out, const Interrupt& interrupt = {}) const;
  // The projected embeddings of each clip's audio tokens, clip after clip: [sum of counts, hidden].
  // The encoder runs over the clips' attended positions only; `full_window` runs every clip's
  // whole 30 s window as the reference does (the same numbers, at up to 6x the work: for tests).
  std::vector<float> audio_embeddings(const AudioBatch& audio, const Interrupt& interrupt, bool full_window) const;
  std::vector<float> audio_embeddings(const AudioBatch& audio, const Interrupt& interrupt = {}) const override {
    return audio_embeddings(audio, interrupt, false);
  }
  // Token embeddings [batch * steps, hidden] with the audio embeddings written, in order, over the
  // audio placeholder tokens; their counts must match.
  void embed(const TokenBatch& tokens, const float* audio, int64_t audio_rows, float* out) const;
  // Qwen2-Audio places audio at its own placeholder id, in order.
  void embed(const TokenBatch& tokens, const AudioBatch* audio, const float* audio_rows, int64_t count,
             float* out) const override {
    if (audio != nullptr && audio->audio_token_starts != nullptr)
      throw InvalidArgument("Qwen2-Audio places audio at its <|AUDIO|> tokens; audio_token_start_idx is Ultravox's");
    embed(tokens, audio_rows, count, out);
  }
  void embed_tokens(const int64_t* ids, int64_t count, float* out) const override { decoder_->embed(ids, count, out); }
  // Hugging Face's forward: logits [batch, steps, vocab] of every position, positions 0..steps-1.
  void forward(const TokenBatch& tokens, const AudioBatch* audio, float* logits, const Interrupt& interrupt = {}) const;

  // A KV cache for `batch` rows on the model's device.
  KVCache make_cache(int64_t batch) const override;
  // The decoder over `steps` new tokens per cache row, whose embeddings are in hidden [batch *
  // steps, hidden_size] (on the CPU turned into the last layer's states in place); the cache's
  // key mask must be set for the new slots, and it advances by `steps`. logits: [batch, vocab] at
  // each row's last step.
  void decode(KVCache& cache, float* hidden, int64_t steps, const int64_t* positions, TextDecoder::Workspace& workspace,
              float* logits, const Interrupt& interrupt) const override;
  // One token for each row of a ragged batch (TextDecoder::RaggedRows): hidden [count,
  // hidden_size], positions [count], logits [count, vocab]. CPU models only.
  void decode_rows(KVCache& cache, float* hidden, const TextDecoder::RaggedRows& rows, const int64_t* positions,
                   TextDecoder::Workspace& workspace, float* logits, const Interrupt& interrupt) const override;

 private:
  Qwen2AudioModel() = default;
  std::shared_ptr<const Checkpoint> checkpoint_;
  Qwen2AudioConfig config_;
  std::unique_ptr<WeightStore> weights_;
  std::unique_ptr<kernels::Gemm> gemm_;
  std::unique_ptr<AudioEncoder> encoder_;
  Linear projector_;
  std::unique_ptr<TextDecoder> decoder_;
  std::unique_ptr<DeviceModel> device_model_;  // null on the CPU
  std::string device_name_ = "cpu";
  std::atomic<int> num_threads_{1};
};

}  // namespace qwen2audio
