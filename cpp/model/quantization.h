#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/gemv.h"
#include "model/weight_layout.h"
#include "model/weights.h"
#include "runtime/buffer.h"

// Weight-only quantization of the language model (kernels/cpu/gemv.h has the formats).
//
// What is quantized: the seven projections of every decoder layer (q, k, v, o, gate, up, down),
// which are 87 % of Qwen2-Audio-7B's weights and all but the output head of the bytes a decode
// step reads. The output head (lm_head, 9 %) gets its own format, int8 by default in both modes:
// its errors land directly on the logits that pick the token (bench/RESULTS.md measures it). The
// embedding table stays as stored: a lookup reads one row per token, and its memory-mapped rows
// cost nothing until touched. The audio encoder and the projector stay BF16/F32: they run once
// per clip as large matrix multiplies, where quantized weights save no time.
//
// A quantized model saved with save_pretrained keeps each quantized layer as `<prefix>.qweight`
// (I8 [n, k] codes, or U8 [n, k / 2] packed int4 codes) and `<prefix>.scales` (F32 [n, groups]),
// with "quantization_config" in config.json; loading that folder uses the packed tensors in place
// from the memory map.
namespace qwen2audio {

enum class WeightQuantization : uint8_t { None, Int8, Int4 };

const char* quantization_name(WeightQuantization quantization);
// "none" / "" -> None, "int8", "int4"; anything else throws InvalidArgument.
WeightQuantization parse_quantization(const std::string& name);

struct QuantizationConfig {
  WeightQuantization decoder = WeightQuantization::None;
  WeightQuantization lm_head = WeightQuantization::None;
  int64_t group_size = 128;
  bool stored = false;  // the checkpoint holds the packed tensors

  bool enabled() const { return decoder != WeightQuantization::None || lm_head != WeightQuantization::None; }
};

// The config of a checkpoint saved quantized (from its config.json's "quantization_config"), or a
// disabled one. Throws CheckpointError on a malformed entry.
QuantizationConfig stored_quantization(const Checkpoint& checkpoint);

// What a caller asks of a load. lm_head unset: int8 whenever the decoder is quantized.
struct QuantizationRequest {
  WeightQuantization decoder = WeightQuantization::None;
  int64_t group_size = 128;
  std::optional<WeightQuantization> lm_head;
};

// What a load runs with: the stored quantization when there is one (asking for another throws
// InvalidArgument), else the request applied at load (group_size a positive multiple of 32).
QuantizationConfig resolve_quantization(const Checkpoint& checkpoint, const QuantizationRequest& request);

// config.json's "quantization_config" object for a model loaded with `config`.
std::string quantization_config_json(const QuantizationConfig& config);

// How a linear layer of that role is stored.
WeightQuantization quantization_of(const QuantizationConfig& config, QuantizationRole role);

// The tensors a checkpoint saved with `quantization` holds, from those of the unquantized layout.
std::vector<ExpectedTensor> quantized_layout(const QuantizationConfig& quantization,
                                             std::vector<ExpectedTensor> tensors);

// A quantized weight: quantized at load from `<prefix>.weight` (codes and scales in `storage`) or
// viewed in place from a checkpoint's `<prefix>.qweight` / `<prefix>.scales`.
struct QuantizedWeight {
  Matrix matrix;
  Buffer<uint8_t> codes;
  Buffer<uint8_t> scales;
  size_t mapped_bytes = 0;
  size_t copied_bytes = 0;
};
// Drops the pages of a memory-mapped source from this process (they stay in the page cache and would
// fault back in if touched): a matrix quantized or repacked at load is not read again, so the
// resident size stays at the quantized model's, not bf16 + quantized.
void release_mapped_pages(const void* data, size_t bytes);

QuantizedWeight load_quantized_weight(const Checkpoint& checkpoint, const QuantizationConfig& config,
                                      const std::string& prefix, WeightQuantization quantization);

}  // namespace qwen2audio
