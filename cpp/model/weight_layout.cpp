#include "model/weight_layout.h"

#include <set>

#include "model/quantization.h"
#include "runtime/errors.h"

namespace qwen2audio {

WeightCheck check_weights(const Qwen2AudioConfig& config, const Checkpoint& checkpoint) {
  return check_weights(expected_tensors(config), config.text, checkpoint);
}

WeightCheck check_weights(const std::vector<ExpectedTensor>& tensors, const TextConfig& text,
                          const Checkpoint& checkpoint) {
  WeightCheck check;
  std::set<std::string> expected_names;
  for (const ExpectedTensor& expected : quantized_layout(stored_quantization(checkpoint), tensors)) {
    expected_names.insert(expected.name);
    if (!checkpoint.contains(expected.name)) {
      check.missing.push_back(expected.name);
      continue;
    }
    const TensorRecord& record = checkpoint.record(expected.name);
    if (record.shape != expected.shape)
      check.wrong_shape.push_back(expected.name + ": checkpoint " + shape_to_string(record.shape) +
                                  ", config expects " + shape_to_string(expected.shape));
    const bool dtype_ok = expected.dtype
                              ? record.dtype == *expected.dtype
                              : record.dtype == DType::F32 || record.dtype == DType::BF16 || record.dtype == DType::F16;
    if (!dtype_ok)
      check.unsupported_dtype.push_back(
          expected.name + ": " + std::string(dtype_name(record.dtype)) +
          (expected.dtype ? ", expected " + std::string(dtype_name(*expected.dtype)) : ""));
  }
  for (const std::string& name : checkpoint.tensor_names()) {
    // A tied checkpoint may still carry the duplicate head; transformers ignores it too.
    if (name == "language_model.lm_head.weight" && text.tie_word_embeddings) continue;
    if (!expected_names.count(name)) check.unexpected.push_back(name);
  }
  return check;
}

std::string WeightCheck::report() const {
  std::string text;
  auto section = [&](const char* title, const std::vector<std::string>& names) {
    if (names.empty()) return;
    text += "\n" + std::string(title) + " (" + std::to_string(names.size()) + "):";
    for (const std::string& name : names) text += "\n  " + name;
  };
  section("missing tensors", missing);
  section("unexpected tensors", unexpected);
  section("shape mismatches", wrong_shape);
  section("unsupported dtypes", unsupported_dtype);
  return text;
}

void require_weights(const Qwen2AudioConfig& config, const Checkpoint& checkpoint) {
  require_weights(check_weights(config, checkpoint), checkpoint);
}

void require_weights(const WeightCheck& check, const Checkpoint& checkpoint) {
  if (!check.ok())
    throw CheckpointError("checkpoint " + checkpoint.directory().string() +
                          " does not match its config.json:" + check.report());
}

}  // namespace qwen2audio
