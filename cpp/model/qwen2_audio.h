#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "backend/cpu_ops.h"
#include "io/checkpoint.h"
#include "kernels/cpu/gemm.h"
#include "model/audio_encoder.h"
#include "model/interrupt.h"
#include "model/language_model.h"
#include "model/load_options.h"
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
  // options (model/load_options.h): dtype Auto is the checkpoint's own (BF16 stays bfloat16, F32
  // float32, F16 computes in float32). quantization: weight-only int8/int4 of the decoder applied
  // at load (model/quantization.h); a checkpoint saved quantized loads its packed weights whatever is
  // asked, and refuses a different format. device: the CPU, or a CUDA GPU where the same graph runs
  // over the device's ops (backend/ops.h) with BF16 weights and a BF16 KV cache; tokens are embedded
  // and sampled on the host. Quantization and float32 compute are CPU-only.
  static std::shared_ptr<Qwen2AudioModel> load(const std::filesystem::path& path, const LoadOptions& options = {});

  const Qwen2AudioConfig& config() const { return config_; }
  const TextConfig& text_config() const override { return config_.text; }
  const GenerationConfig& generation_config() const override { return checkpoint_->generation_config(); }
  const Checkpoint& checkpoint() const { return *checkpoint_; }
  DType dtype() const { return weights_->matrix_dtype(); }
  int num_threads() const { return num_threads_.load(); }
  void set_num_threads(int count);
  // The CPU's matrix multiply (oneDNN primitives, options); null on a device.
  const kernels::Gemm* cpu_gemm() const { return cpu_ops_ ? &cpu_ops_->gemm() : nullptr; }
  const AudioEncoder& encoder() const { return *encoder_; }
  const TextDecoder& decoder() const { return *decoder_; }
  DType kv_cache_dtype() const { return decoder_->kv_cache_dtype(); }
  size_t copied_weight_bytes() const { return weights_->copied_bytes(); }
  size_t mapped_weight_bytes() const { return weights_->mapped_bytes(); }
  const QuantizationConfig& quantization() const { return weights_->quantization(); }
  const WeightStore& weights() const { return *weights_; }
  // "cpu" or "cuda:N"; device_description() adds the GPU's name.
  const std::string& device() const { return device_name_; }
  std::string device_description() const { return ops_->description(); }
  size_t device_weight_bytes() const { return ops_->weight_bytes(); }

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
      throw InvalidArgument(
          "Qwen2-Audio places audio at its <|AUDIO|> tokens, not at given positions (audio_token_start_idx)");
    embed(tokens, audio_rows, count, out);
  }
  void embed_tokens(const int64_t* ids, int64_t count, float* out) const override { decoder_->embed(ids, count, out); }

  // A KV cache for `batch` rows on the model's device.
  KVCache make_cache(int64_t batch) const override;
  // The decoder over `steps` new tokens per cache row, whose embeddings are in hidden [batch *
  // steps, hidden_size] (on the CPU turned into the last layer's states in place); the cache's
  // key mask must be set for the new slots, and it advances by `steps`. logits: [batch, vocab] at
  // each row's last step.
  void decode(KVCache& cache, float* hidden, int64_t steps, const int64_t* positions, TextDecoder::Workspace& workspace,
              float* logits, const Interrupt& interrupt, bool all_positions) const override;
  // One token for each row of a ragged batch (TextDecoder::RaggedRows): hidden [count,
  // hidden_size], positions [count], logits [count, vocab]. CPU models only.
  void decode_rows(KVCache& cache, float* hidden, const TextDecoder::RaggedRows& rows, const int64_t* positions,
                   TextDecoder::Workspace& workspace, float* logits, const Interrupt& interrupt) const override;

 private:
  Qwen2AudioModel() = default;
  // The encoder, projector and decoder over `weights` (a checkpoint's, or a recording store's:
  // expected_tensors) and `ops`.
  void build_modules(WeightStore& weights, backend::Ops& ops, DType kv_cache_dtype);
  friend std::vector<ExpectedTensor> expected_tensors(const Qwen2AudioConfig& config);
  std::shared_ptr<const Checkpoint> checkpoint_;
  Qwen2AudioConfig config_;
  std::unique_ptr<WeightStore> weights_;
  // The ops the graph runs on (the CPU's, or a device's). Declared before the modules holding its
  // weights, so it outlives them.
  std::unique_ptr<backend::Ops> ops_;
  backend::CpuOps* cpu_ops_ = nullptr;  // ops_ on the CPU
  std::unique_ptr<AudioEncoder> encoder_;
  std::unique_ptr<backend::LinearWeights> projector_;
  std::unique_ptr<TextDecoder> decoder_;
  std::string device_name_ = "cpu";
  std::atomic<int> num_threads_{1};
};

}  // namespace qwen2audio
