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
class Qwen2AudioModel final : public AudioDecoderModel {
 public:
  // options (model/load_options.h): dtype Auto is the checkpoint's own (BF16 stays bfloat16, F32
  // float32, F16 computes in float32). quantization: weight-only int8/int4 of the decoder applied
  // at load (model/quantization.h); a checkpoint saved quantized loads its packed weights whatever is
  // asked, and refuses a different format. device: the CPU, or a CUDA GPU where the same graph runs
  // over the device's ops (backend/ops.h) with BF16 weights and a BF16 KV cache; tokens are embedded
  // and sampled on the host. Quantization and float32 compute are CPU-only.
  static std::shared_ptr<Qwen2AudioModel> load(const std::filesystem::path& path, const LoadOptions& options = {});

  const Qwen2AudioConfig& config() const { return config_; }
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

 private:
  Qwen2AudioModel() = default;
  // The encoder, projector and decoder over `weights` (a checkpoint's, or a recording store's:
  // expected_tensors) and `ops`.
  void build_modules(WeightStore& weights, backend::Ops& ops, DType kv_cache_dtype);
  friend std::vector<ExpectedTensor> expected_tensors(const Qwen2AudioConfig& config);
  Qwen2AudioConfig config_;
  std::unique_ptr<backend::LinearWeights> projector_;
  std::string device_name_ = "cpu";
};

}  // namespace qwen2audio
