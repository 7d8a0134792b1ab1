#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/config.h"

namespace qwen2audio {

// Which weight-only quantization may apply to a linear layer's weight: the graph that owns the layer
// says so when it asks for it (model/weights.h), so the rule is the family's, not a name pattern.
enum class QuantizationRole : uint8_t {
  Never,              // the audio encoder, the projectors, embeddings
  DecoderProjection,  // q/k/v/o and the MLP of every decoder layer: the decoder's quantization
  OutputHead,         // an untied lm_head: its own setting
};

// A tensor a checkpoint must hold, by its Hugging Face name and shape (audio_tower.*,
// multi_modal_projector.*, language_model.*, as the published checkpoints store them).
struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
  // Set for the packed tensors of a quantized checkpoint (model/quantization.h), which must have
  // exactly this dtype; unset: F32, BF16 or F16.
  std::optional<DType> dtype = std::nullopt;
  QuantizationRole quantization_role = QuantizationRole::Never;
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
