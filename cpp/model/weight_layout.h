#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/config.h"

namespace qwen2audio {

// The tensor names and shapes of Hugging Face's Qwen2AudioForConditionalGeneration state dict, as
// the published checkpoints store them (audio_tower.*, multi_modal_projector.*, language_model.*).
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
  // Set for the packed tensors of a quantized checkpoint (model/quantization.h), which must have
  // exactly this dtype; unset: F32, BF16 or F16.
  std::optional<DType> dtype = std::nullopt;
};

std::vector<ExpectedTensor> expected_tensors(const Qwen2AudioConfig& config);
// The parts every family shares, under the names HF gives them in both (audio_tower.*, a Whisper
// encoder; language_model.*, a Qwen2 or Llama causal LM).
void add_encoder_tensors(const AudioEncoderConfig& audio, std::vector<ExpectedTensor>& tensors);
void add_decoder_tensors(const TextConfig& text, std::vector<ExpectedTensor>& tensors);

struct WeightCheck {
  std::vector<std::string> missing;
  std::vector<std::string> unexpected;
  std::vector<std::string> wrong_shape;  // "name: checkpoint [a, b], config expects [c, d]"
  std::vector<std::string> unsupported_dtype;
  bool ok() const { return missing.empty() && unexpected.empty() && wrong_shape.empty() && unsupported_dtype.empty(); }
  std::string report() const;
};

// A checkpoint saved quantized (its config.json has a quantization_config) is checked against its
// packed layout.
WeightCheck check_weights(const Qwen2AudioConfig& config, const Checkpoint& checkpoint);
WeightCheck check_weights(const std::vector<ExpectedTensor>& tensors, const TextConfig& text,
                          const Checkpoint& checkpoint);
// Throws CheckpointError with every problem at once.
void require_weights(const Qwen2AudioConfig& config, const Checkpoint& checkpoint);
void require_weights(const WeightCheck& check, const Checkpoint& checkpoint);

}  // namespace qwen2audio
