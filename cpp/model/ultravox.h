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
#include "model/language_model.h"
#include "model/load_options.h"
#include "model/quantization.h"
#include "model/text_decoder.h"
#include "model/weight_layout.h"
#include "model/weights.h"

namespace qwen2audio {

// Audio tokens of one Ultravox chunk with `frames` valid mel frames: the encoder's stride-2
// convolution keeps ceil(frames / 2) of them and the projector stacks `stack_factor` per token.
int64_t ultravox_audio_token_count(int64_t frames, int64_t stack_factor);

// fixie-ai's UltravoxModel (v0.5): Whisper's encoder over each chunk of at most 30 s (keys past
// its audio_lens hidden, queries not), the stacked-frame projector
//   z = stack(enc, stack_factor) (zero rows pad the last stack);
//   out = linear_2(RMSNorm_mid(SwiGLU(linear_1(RMSNorm_pre(z)))))   (SwiGLU gates the second half)
// and a Llama 3 decoder (the TextDecoder of every family). Audio rows replace the token
// embeddings at each chunk's audio_token_start_idx. CPU only for now.
class UltravoxModel final : public AudioDecoderModel {
 public:
  // Options as Qwen2AudioModel::load (weight-only int8/int4 of the decoder included); the CPU only.
  static std::shared_ptr<UltravoxModel> load(const std::filesystem::path& path, const LoadOptions& options = {});

  const UltravoxConfig& config() const { return config_; }

  // Valid frames per chunk (the feature_attention_mask's sums, a prefix of every row), checked.
  std::vector<int64_t> audio_lens(const AudioBatch& audio) const;
  std::vector<int64_t> audio_token_counts(const AudioBatch& audio) const;

  // The encoder's last hidden state of every frame of every chunk: [clips, ceil(frames / 2), d].
  void encode(const AudioBatch& audio, float* out, const Interrupt& interrupt = {}) const;
  // The projector rows each chunk contributes (its audio token count), chunk after chunk; with
  // `all_rows` every stacked row of the whole chunk, as the reference's projector output holds.
  std::vector<float> audio_embeddings(const AudioBatch& audio, const Interrupt& interrupt, bool all_rows) const;
  std::vector<float> audio_embeddings(const AudioBatch& audio, const Interrupt& interrupt = {}) const override {
    return audio_embeddings(audio, interrupt, false);
  }
  void embed(const TokenBatch& tokens, const AudioBatch* audio, const float* audio_rows, int64_t count,
             float* out) const override;

 private:
  UltravoxModel() = default;
  // The encoder, projector and decoder over `weights` (a checkpoint's, or a recording store's:
  // ultravox_expected_tensors) and `ops`.
  void build_modules(WeightStore& weights, backend::Ops& ops, DType kv_cache_dtype);
  friend std::vector<ExpectedTensor> ultravox_expected_tensors(const UltravoxConfig& config);
  UltravoxConfig config_;
  std::unique_ptr<backend::Constant> ln_pre_, ln_mid_;
  std::unique_ptr<backend::LinearWeights> linear_1_, linear_2_;
};

// The tensors of an Ultravox checkpoint (audio_tower.*, multi_modal_projector.*, language_model.*): what
// its modules ask for.
std::vector<ExpectedTensor> ultravox_expected_tensors(const UltravoxConfig& config);

}  // namespace qwen2audio
