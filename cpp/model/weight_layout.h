#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/config.h"

namespace qwen2audio {

// A tensor a checkpoint must hold, by its Hugging Face name and shape (audio_tower.*,
// multi_modal_projector.*, language_model.*, as the published checkpoints store them).
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
  // Set for the packed tensors of a quantized checkpoint (model/quantization.h), which must have
  // exactly this dtype; unset: F32, BF16 or F16.
  std::optional<DType> dtype = std::nullopt;
};

// What a Qwen2AudioForConditionalGeneration checkpoint of `config` must hold: the tensors its
// modules ask for (model/weights.h), in the order they ask. Defined with the family (qwen2_audio.cpp).
std::vector<ExpectedTensor> expected_tensors(const Qwen2AudioConfig& config);

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
