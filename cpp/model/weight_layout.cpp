#include "model/weight_layout.h"

#include <set>

#include "model/quantization.h"
#include "runtime/errors.h"

namespace qwen2audio {

void add_encoder_tensors(const AudioEncoderConfig& audio, std::vector<ExpectedTensor>& tensors) {
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    tensors.push_back({std::move(name), std::move(shape)});
  };

  const int64_t d = audio.d_model;
  add("audio_tower.conv1.weight", {d, audio.num_mel_bins, 3});
  add("audio_tower.conv1.bias", {d});
  add("audio_tower.conv2.weight", {d, d, 3});
  add("audio_tower.conv2.bias", {d});
  add("audio_tower.embed_positions.weight", {audio.max_source_positions, d});
  for (int64_t layer = 0; layer < audio.encoder_layers; ++layer) {
    const std::string prefix = "audio_tower.layers." + std::to_string(layer) + ".";
    // Whisper's attention has no key bias; HF's checkpoints follow.
    add(prefix + "self_attn.k_proj.weight", {d, d});
    for (const char* projection : {"q_proj", "v_proj", "out_proj"}) {
      add(prefix + "self_attn." + projection + ".weight", {d, d});
      add(prefix + "self_attn." + projection + ".bias", {d});
    }
    for (const char* norm : {"self_attn_layer_norm", "final_layer_norm"}) {
      add(prefix + norm + ".weight", {d});
      add(prefix + norm + ".bias", {d});
    }
    add(prefix + "fc1.weight", {audio.encoder_ffn_dim, d});
    add(prefix + "fc1.bias", {audio.encoder_ffn_dim});
    add(prefix + "fc2.weight", {d, audio.encoder_ffn_dim});
    add(prefix + "fc2.bias", {d});
  }
  add("audio_tower.layer_norm.weight", {d});
  add("audio_tower.layer_norm.bias", {d});
}

void add_decoder_tensors(const TextConfig& text, std::vector<ExpectedTensor>& tensors) {
  auto add = [&](std::string name, std::vector<int64_t> shape) {
    tensors.push_back({std::move(name), std::move(shape)});
  };
  const int64_t hidden = text.hidden_size;
  const int64_t q_width = text.num_attention_heads * text.head_dim;
  const int64_t kv_width = text.num_key_value_heads * text.head_dim;
  add("language_model.model.embed_tokens.weight", {text.vocab_size, hidden});
  for (int64_t layer = 0; layer < text.num_hidden_layers; ++layer) {
    const std::string prefix = "language_model.model.layers." + std::to_string(layer) + ".";
    add(prefix + "self_attn.q_proj.weight", {q_width, hidden});
    add(prefix + "self_attn.k_proj.weight", {kv_width, hidden});
    add(prefix + "self_attn.v_proj.weight", {kv_width, hidden});
    if (text.attention_bias) {
      add(prefix + "self_attn.q_proj.bias", {q_width});
      add(prefix + "self_attn.k_proj.bias", {kv_width});
      add(prefix + "self_attn.v_proj.bias", {kv_width});
    }
    add(prefix + "self_attn.o_proj.weight", {hidden, q_width});
    add(prefix + "mlp.gate_proj.weight", {text.intermediate_size, hidden});
    add(prefix + "mlp.up_proj.weight", {text.intermediate_size, hidden});
    add(prefix + "mlp.down_proj.weight", {hidden, text.intermediate_size});
    add(prefix + "input_layernorm.weight", {hidden});
    add(prefix + "post_attention_layernorm.weight", {hidden});
  }
  add("language_model.model.norm.weight", {hidden});
  if (!text.tie_word_embeddings) add("language_model.lm_head.weight", {text.vocab_size, hidden});
}

std::vector<ExpectedTensor> expected_tensors(const Qwen2AudioConfig& config) {
  std::vector<ExpectedTensor> tensors;
  add_encoder_tensors(config.audio, tensors);
  const int64_t hidden = config.text.hidden_size;
  tensors.push_back({"multi_modal_projector.linear.weight", {hidden, config.audio.d_model}});
  tensors.push_back({"multi_modal_projector.linear.bias", {hidden}});
  add_decoder_tensors(config.text, tensors);
  return tensors;
}

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
