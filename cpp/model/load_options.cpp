#include "model/load_options.h"

#include <optional>

#include "runtime/errors.h"

namespace qwen2audio {

DTypeChoice parse_dtype_choice(const std::string& text, const char* argument) {
  if (text == "auto") return DTypeChoice::Auto;
  if (text == "float32" || text == "fp32" || text == "f32") return DTypeChoice::Float32;
  if (text == "bfloat16" || text == "bf16") return DTypeChoice::BFloat16;
  throw InvalidArgument(std::string(argument) + " must be 'auto', 'float32' or 'bfloat16', got '" + text + "'");
}

namespace {

// The dtype a choice names; none for Auto, which each setting resolves its own way.
std::optional<DType> named_dtype(DTypeChoice choice) {
  switch (choice) {
    case DTypeChoice::Float32:
      return DType::F32;
    case DTypeChoice::BFloat16:
      return DType::BF16;
    case DTypeChoice::Auto:
      break;
  }
  return std::nullopt;
}

}  // namespace

ResolvedDTypes resolve_dtypes(const LoadOptions& options, const Checkpoint& checkpoint) {
  if (options.device.cuda) {
    const std::string device = "device='" + options.device.str() + "'";
    if (options.quantization.decoder != WeightQuantization::None || options.quantization.lm_head)
      throw InvalidArgument("quantization is CPU-only; on " + device +
                            " the model runs its bfloat16 weights (drop quantization=)");
    if (options.dtype == DTypeChoice::Float32)
      throw InvalidArgument(device + " computes in bfloat16; dtype='float32' is CPU-only");
    if (options.kv_cache_dtype == DTypeChoice::Float32)
      throw InvalidArgument(device + " keeps its KV cache in bfloat16; kv_cache_dtype='float32' is CPU-only");
  }
  ResolvedDTypes resolved;
  if (const std::optional<DType> chosen = named_dtype(options.dtype)) {
    resolved.compute = *chosen;
  } else {
    // What the embedding matrix holds: BF16 stays BF16, anything else computes in float32
    // (on a device, BF16 whatever the file holds).
    resolved.compute =
        options.device.cuda || checkpoint.record("language_model.model.embed_tokens.weight").dtype == DType::BF16
            ? DType::BF16
            : DType::F32;
  }
  // A BF16 model's key and value projections are BF16 numbers in the reference too, and BF16
  // halves the cache and the bytes each decode step reads.
  resolved.kv_cache = named_dtype(options.kv_cache_dtype).value_or(resolved.compute);
  return resolved;
}

}  // namespace qwen2audio
