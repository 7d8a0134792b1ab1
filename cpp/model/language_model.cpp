#include "model/language_model.h"

#include "runtime/errors.h"

namespace qwen2audio {
namespace {

std::string position(int64_t batch_index, int64_t step) {
  return "[" + std::to_string(batch_index) + ", " + std::to_string(step) + "]";
}

}  // namespace

DType choose_compute_dtype(const std::string& requested, const Checkpoint& checkpoint) {
  if (requested == "float32" || requested == "fp32" || requested == "f32") return DType::F32;
  if (requested == "bfloat16" || requested == "bf16") return DType::BF16;
  if (requested == "auto")
    return checkpoint.record("language_model.model.embed_tokens.weight").dtype == DType::BF16 ? DType::BF16
                                                                                              : DType::F32;
  throw InvalidArgument("dtype must be 'auto', 'float32' or 'bfloat16', got '" + requested + "'");
}

// A BF16 model's key and value projections are BF16 numbers in
// the reference too, and BF16 halves the cache and the bytes each decode step reads.
DType choose_kv_cache_dtype(const std::string& requested, DType compute) {
  if (requested == "auto") return compute == DType::BF16 ? DType::BF16 : DType::F32;
  if (requested == "float32" || requested == "fp32" || requested == "f32") return DType::F32;
  if (requested == "bfloat16" || requested == "bf16") return DType::BF16;
  throw InvalidArgument("kv_cache_dtype must be 'auto', 'float32' or 'bfloat16', got '" + requested + "'");
}

void AudioLanguageModel::check_token_batch(const TokenBatch& tokens, int64_t vocab) {
  if (tokens.batch < 1 || tokens.steps < 1)
    throw InvalidArgument("input_ids must hold at least one token per row, got shape (" + std::to_string(tokens.batch) +
                          ", " + std::to_string(tokens.steps) + ")");
  for (int64_t b = 0; b < tokens.batch; ++b) {
    bool any_valid = tokens.attention_mask == nullptr;
    for (int64_t t = 0; t < tokens.steps; ++t) {
      const int64_t id = tokens.ids[b * tokens.steps + t];
      if (id < 0 || id >= vocab)
        throw InvalidArgument("input_ids" + position(b, t) + " = " + std::to_string(id) +
                              " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
      if (tokens.attention_mask) {
        const int64_t mask = tokens.attention_mask[b * tokens.steps + t];
        if (mask != 0 && mask != 1)
          throw InvalidArgument("attention_mask" + position(b, t) + " is " + std::to_string(mask) +
                                "; it must hold 0 or 1");
        any_valid |= mask == 1;
      }
    }
    if (!any_valid) throw InvalidArgument("attention_mask row " + std::to_string(b) + " masks every token");
  }
}

}  // namespace qwen2audio
