#include "io/config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/json_limits.h"
#include "runtime/errors.h"

namespace qwen2audio {
namespace {

using json = nlohmann::json;
constexpr size_t kMaxConfigBytes = 4u << 20;
// Limits far above any real model, low enough that a typo cannot ask for terabytes.
constexpr int64_t kMaxDimension = 1 << 20;
constexpr int64_t kMaxVocabulary = 1 << 24;
constexpr int64_t kMaxLayers = 1024;

class FieldReader {
 public:
  FieldReader(const json& object, std::string origin) : object_(object), origin_(std::move(origin)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw ConfigError(origin_ + ": '" + key + "' " + what);
  }
  const json* find(const std::string& key) const {
    auto found = object_.find(key);
    return (found == object_.end() || found->is_null()) ? nullptr : &*found;
  }
  void integer(const std::string& key, int64_t& target, int64_t min_value, int64_t max_value) const {
    const json* value = find(key);
    if (value == nullptr) return;
    if (!value->is_number_integer()) fail(key, "must be an integer, got " + json_excerpt(*value));
    const auto number = value->get<int64_t>();
    if (value->is_number_unsigned() && value->get<uint64_t>() > static_cast<uint64_t>(max_value))
      fail(key, "is " + json_excerpt(*value) + ", outside [" + std::to_string(min_value) + ", " +
                    std::to_string(max_value) + "]");
    if (number < min_value || number > max_value)
      fail(key, "is " + json_excerpt(*value) + ", outside [" + std::to_string(min_value) + ", " +
                    std::to_string(max_value) + "]");
    target = number;
  }
  void optional_integer(const std::string& key, std::optional<int64_t>& target) const {
    const json* value = find(key);
    if (value == nullptr) return;
    int64_t number = 0;
    integer(key, number, 0, kMaxVocabulary);
    target = number;
  }
  void integer_list(const std::string& key, std::vector<int64_t>& target) const {
    const json* value = find(key);
    if (value == nullptr) return;
    target.clear();
    if (value->is_array()) {
      for (const json& item : *value) {
        if (!item.is_number_integer() || item.get<int64_t>() < 0) fail(key, "must hold non-negative integers");
        target.push_back(item.get<int64_t>());
      }
    } else {
      int64_t number = 0;
      integer(key, number, 0, kMaxVocabulary);
      target.push_back(number);
    }
  }
  void number(const std::string& key, double& target) const {
    const json* value = find(key);
    if (value == nullptr) return;
    if (!value->is_number()) fail(key, "must be a number, got " + json_excerpt(*value));
    target = value->get<double>();
  }
  void boolean(const std::string& key, bool& target) const {
    const json* value = find(key);
    if (value == nullptr) return;
    if (!value->is_boolean()) fail(key, "must be true or false, got " + json_excerpt(*value));
    target = value->get<bool>();
  }
  void string(const std::string& key, std::string& target) const {
    const json* value = find(key);
    if (value == nullptr) return;
    if (!value->is_string()) fail(key, "must be a string, got " + json_excerpt(*value));
    target = value->get<std::string>();
  }
  const std::string& origin() const { return origin_; }

 private:
  const json& object_;
  std::string origin_;
};

json parse_object(const std::string& text, const std::string& origin) {
  json parsed;
  try {
    parsed = json::parse(text, json_depth_limit<ConfigError>(origin));
  } catch (const json::exception& error) {
    throw ConfigError(origin + ": invalid JSON: " + error.what());
  }
  if (!parsed.is_object()) throw ConfigError(origin + ": expected a JSON object");
  return parsed;
}

// expected_type: the encoder class each family embeds (both are Whisper encoders by field names).
AudioEncoderConfig parse_audio_config(const json& object, const std::string& origin,
                                      const std::string& expected_type = "qwen2_audio_encoder") {
  const FieldReader read(object, origin);
  AudioEncoderConfig config;
  std::string model_type = expected_type;
  read.string("model_type", model_type);
  if (model_type != expected_type) read.fail("model_type", "is '" + model_type + "', expected '" + expected_type + "'");
  read.integer("num_mel_bins", config.num_mel_bins, 1, 1024);
  read.integer("encoder_layers", config.encoder_layers, 0, kMaxLayers);
  read.integer("encoder_attention_heads", config.encoder_attention_heads, 1, 1024);
  read.integer("encoder_ffn_dim", config.encoder_ffn_dim, 1, kMaxDimension);
  read.integer("d_model", config.d_model, 1, kMaxDimension);
  read.integer("max_source_positions", config.max_source_positions, 1, kMaxDimension);
  read.string("activation_function", config.activation_function);
  read.boolean("scale_embedding", config.scale_embedding);
  read.number("dropout", config.dropout);
  read.number("attention_dropout", config.attention_dropout);
  read.number("activation_dropout", config.activation_dropout);
  read.number("encoder_layerdrop", config.encoder_layerdrop);
  read.number("init_std", config.init_std);
  if (config.d_model % config.encoder_attention_heads != 0)
    read.fail("d_model", "(" + std::to_string(config.d_model) + ") is not divisible by encoder_attention_heads (" +
                             std::to_string(config.encoder_attention_heads) + ")");
  if (config.activation_function != "gelu")
    read.fail("activation_function", "is '" + config.activation_function + "'; only 'gelu' is supported");
  return config;
}

// expected_type "qwen2" (Qwen2Config) or "llama" (LlamaConfig, whose defaults differ).
TextConfig parse_text_config(const json& object, const std::string& origin,
                             const std::string& expected_type = "qwen2") {
  const FieldReader read(object, origin);
  TextConfig config;
  const bool llama = expected_type == "llama";
  std::string model_type = expected_type;
  read.string("model_type", model_type);
  if (model_type != expected_type) read.fail("model_type", "is '" + model_type + "', expected '" + expected_type + "'");
  config.model_type = model_type;
  if (llama) {
    config.vocab_size = 32000;
    config.intermediate_size = 11008;
    config.max_position_embeddings = 2048;
    config.attention_bias = false;
  }
  read.integer("vocab_size", config.vocab_size, 1, kMaxVocabulary);
  read.integer("hidden_size", config.hidden_size, 1, kMaxDimension);
  read.integer("intermediate_size", config.intermediate_size, 1, kMaxDimension);
  read.integer("num_hidden_layers", config.num_hidden_layers, 0, kMaxLayers);
  read.integer("num_attention_heads", config.num_attention_heads, 1, 1024);
  config.num_key_value_heads = config.num_attention_heads;
  read.integer("num_key_value_heads", config.num_key_value_heads, 1, 1024);
  read.integer("head_dim", config.head_dim, 1, kMaxDimension);
  read.integer("max_position_embeddings", config.max_position_embeddings, 1, 1 << 24);
  read.string("hidden_act", config.hidden_act);
  read.number("rms_norm_eps", config.rms_norm_eps);
  read.number("rope_theta", config.rope_theta);
  // Newer transformers nest rope_theta in rope_parameters.
  if (const json* rope_parameters = read.find("rope_parameters"); rope_parameters && rope_parameters->is_object()) {
    const FieldReader rope(*rope_parameters, origin + " rope_parameters");
    rope.number("rope_theta", config.rope_theta);
    std::string rope_type = "default";
    rope.string("rope_type", rope_type);
    if (rope_type != "default") rope.fail("rope_type", "is '" + rope_type + "'; only default RoPE is supported");
  }
  if (const json* rope_scaling = read.find("rope_scaling"); rope_scaling != nullptr) {
    if (!llama) read.fail("rope_scaling", "is set; scaled RoPE is not supported by Qwen2-Audio");
    if (!rope_scaling->is_object()) read.fail("rope_scaling", "must be an object");
    const FieldReader rope(*rope_scaling, origin + " rope_scaling");
    std::string rope_type = "default";
    rope.string("type", rope_type);
    rope.string("rope_type", rope_type);
    if (rope_type != "llama3" && rope_type != "default")
      rope.fail("rope_type", "is '" + rope_type + "'; only 'llama3' scaling is supported");
    if (rope_type == "llama3") {
      RopeScaling& scaling = config.rope_scaling;
      rope.number("factor", scaling.factor);
      rope.number("low_freq_factor", scaling.low_freq_factor);
      rope.number("high_freq_factor", scaling.high_freq_factor);
      rope.integer("original_max_position_embeddings", scaling.original_max_position_embeddings, 1, 1 << 30);
      if (!(scaling.factor > 0)) rope.fail("factor", "must be positive");
      if (!(scaling.high_freq_factor > scaling.low_freq_factor) || !(scaling.low_freq_factor > 0))
        rope.fail("high_freq_factor", "must exceed low_freq_factor, both positive");
    }
  }
  if (llama) {
    read.boolean("attention_bias", config.attention_bias);
    bool mlp_bias = false;
    read.boolean("mlp_bias", mlp_bias);
    if (mlp_bias) read.fail("mlp_bias", "is true; only Llama MLPs without bias are supported");
  }
  read.boolean("tie_word_embeddings", config.tie_word_embeddings);
  read.boolean("use_sliding_window", config.use_sliding_window);
  read.integer("sliding_window", config.sliding_window, 1, 1 << 30);
  read.integer("max_window_layers", config.max_window_layers, 0, kMaxLayers);
  read.number("attention_dropout", config.attention_dropout);
  read.number("initializer_range", config.initializer_range);
  read.optional_integer("bos_token_id", config.bos_token_id);
  read.integer_list("eos_token_id", config.eos_token_ids);
  read.optional_integer("pad_token_id", config.pad_token_id);

  if (config.head_dim == 0) {
    if (config.hidden_size % config.num_attention_heads != 0)
      read.fail("hidden_size", "(" + std::to_string(config.hidden_size) +
                                   ") is not divisible by num_attention_heads (" +
                                   std::to_string(config.num_attention_heads) + ")");
    config.head_dim = config.hidden_size / config.num_attention_heads;
  }
  if (config.head_dim % 2 != 0) read.fail("head_dim", "must be even for rotary embeddings");
  if (config.num_attention_heads % config.num_key_value_heads != 0)
    read.fail("num_key_value_heads", "(" + std::to_string(config.num_key_value_heads) +
                                         ") does not divide num_attention_heads (" +
                                         std::to_string(config.num_attention_heads) + ")");
  if (config.hidden_act != "silu") read.fail("hidden_act", "is '" + config.hidden_act + "'; only 'silu' is supported");
  if (!(config.rms_norm_eps > 0)) read.fail("rms_norm_eps", "must be positive");
  if (!(config.rope_theta > 0)) read.fail("rope_theta", "must be positive");
  if (config.use_sliding_window)
    read.fail("use_sliding_window", "is true; sliding-window attention is not used by Qwen2-Audio");
  return config;
}

std::string read_whole_file(const std::filesystem::path& path) {
  return read_text_file(path, kMaxConfigBytes, "config");
}

}  // namespace

std::string read_text_file(const std::filesystem::path& path, size_t max_bytes, const char* what) {
  std::error_code error;
  const auto size = std::filesystem::file_size(path, error);
  if (error) throw ConfigError(path.string() + ": cannot read " + what + ": " + error.message());
  if (size > max_bytes)
    throw ConfigError(path.string() + ": " + what + " file is " + std::to_string(size) + " bytes, over the " +
                      std::to_string(max_bytes) + "-byte limit");
  std::ifstream stream(path, std::ios::binary);
  if (!stream) throw ConfigError(path.string() + ": cannot open " + what);
  std::ostringstream buffer;
  buffer << stream.rdbuf();
  return buffer.str();
}

Qwen2AudioConfig parse_qwen2audio_config(const std::string& json_text, const std::string& origin) {
  const json object = parse_object(json_text, origin);
  const FieldReader read(object, origin);
  Qwen2AudioConfig config;
  read.string("model_type", config.model_type);
  if (config.model_type != "qwen2_audio")
    read.fail("model_type", "is '" + config.model_type + "'; this engine runs Qwen2-Audio ('qwen2_audio') checkpoints");
  read.integer("audio_token_index", config.audio_token_index, 0, kMaxVocabulary);
  read.integer("audio_token_id", config.audio_token_index, 0, kMaxVocabulary);  // HF's attribute alias
  read.integer("ignore_index", config.ignore_index, -(1 << 30), 1 << 30);
  read.string("torch_dtype", config.torch_dtype);
  if (config.torch_dtype.empty()) read.string("dtype", config.torch_dtype);

  const json* audio = read.find("audio_config");
  if (audio != nullptr && !audio->is_object()) read.fail("audio_config", "must be an object");
  // Absent audio_config: Qwen2AudioConfig builds the Qwen2-Audio-7B encoder, which equals the
  // encoder class defaults.
  config.audio = audio ? parse_audio_config(*audio, origin + " audio_config") : AudioEncoderConfig{};
  const json* text = read.find("text_config");
  if (text != nullptr && !text->is_object()) read.fail("text_config", "must be an object");
  config.text = text ? parse_text_config(*text, origin + " text_config") : TextConfig{};

  if (config.audio_token_index >= config.text.vocab_size)
    read.fail("audio_token_index", "(" + std::to_string(config.audio_token_index) +
                                       ") is outside the text vocabulary (" + std::to_string(config.text.vocab_size) +
                                       ")");
  return config;
}

Qwen2AudioConfig load_qwen2audio_config(const std::filesystem::path& path) {
  return parse_qwen2audio_config(read_whole_file(path), path.string());
}

GenerationConfig GenerationConfig::from_model_config(const TextConfig& config) {
  GenerationConfig generation;
  generation.bos_token_id = config.bos_token_id;
  generation.eos_token_ids = config.eos_token_ids;
  generation.pad_token_id = config.pad_token_id;
  return generation;
}

UltravoxConfig parse_ultravox_config(const std::string& json_text, const std::string& origin) {
  const json object = parse_object(json_text, origin);
  const FieldReader read(object, origin);
  std::string model_type;
  read.string("model_type", model_type);
  if (model_type != "ultravox") read.fail("model_type", "is '" + model_type + "', expected 'ultravox'");
  // A config naming its sub-models by hub id needs their configs fetched; this engine reads
  // self-contained checkpoints only.
  for (const char* key : {"audio_model_id", "text_model_id"})
    if (read.find(key) != nullptr)
      read.fail(key, "is set; save the checkpoint with its audio_config and text_config embedded (ids null)");
  for (const char* key : {"audio_config", "text_config"}) {
    const json* sub = read.find(key);
    if (sub == nullptr || !sub->is_object()) read.fail(key, "must be an object (the embedded sub-model config)");
  }
  UltravoxConfig config;
  config.audio = parse_audio_config(*read.find("audio_config"), origin + " audio_config", "whisper");
  config.text = parse_text_config(*read.find("text_config"), origin + " text_config", "llama");
  read.integer("stack_factor", config.stack_factor, 1, 1024);
  read.integer("hidden_size", config.projector_hidden_size, 2, kMaxDimension);
  read.boolean("projector_ln_mid", config.projector_ln_mid);
  read.string("projector_act", config.projector_act);
  read.optional_integer("pad_token_id", config.pad_token_id);
  read.string("torch_dtype", config.torch_dtype);
  if (config.projector_act != "swiglu")
    read.fail("projector_act", "is '" + config.projector_act + "'; only 'swiglu' is supported");
  if (!config.projector_ln_mid)
    read.fail("projector_ln_mid", "is false; only the v0.5 projector (ln_pre and ln_mid) is supported");
  if (config.projector_hidden_size % 2 != 0) read.fail("hidden_size", "must be even (SwiGLU halves it)");
  if (const json* block = read.find("audio_latency_block_size"); block != nullptr)
    read.fail("audio_latency_block_size", "is set; the streaming attention mask is not supported");
  for (const char* key : {"audio_model_lora_config", "text_model_lora_config"}) {
    const json* lora = read.find(key);
    if (lora == nullptr || !lora->is_object()) continue;
    int64_t rank = 0;
    FieldReader(*lora, origin + " " + key).integer("r", rank, 0, 1 << 20);
    if (rank != 0) read.fail(key, "has r > 0; merge the LoRA weights before loading");
  }
  return config;
}

UltravoxConfig load_ultravox_config(const std::filesystem::path& path) {
  return parse_ultravox_config(read_whole_file(path), path.string());
}

std::string read_model_type(const std::filesystem::path& path) {
  const std::string origin = path.string();
  const json object = parse_object(read_whole_file(path), origin);
  std::string model_type = "qwen2_audio";
  FieldReader(object, origin).string("model_type", model_type);
  return model_type;
}

GenerationConfig parse_generation_config(const std::string& json_text, const std::string& origin) {
  const json object = parse_object(json_text, origin);
  const FieldReader read(object, origin);
  GenerationConfig config;
  read.optional_integer("bos_token_id", config.bos_token_id);
  read.integer_list("eos_token_id", config.eos_token_ids);
  read.optional_integer("pad_token_id", config.pad_token_id);
  read.boolean("do_sample", config.do_sample);
  read.number("temperature", config.temperature);
  read.integer("top_k", config.top_k, 0, kMaxVocabulary);
  read.number("top_p", config.top_p);
  read.number("repetition_penalty", config.repetition_penalty);
  int64_t max_new_tokens = -1;
  read.integer("max_new_tokens", max_new_tokens, 0, 1 << 24);
  if (max_new_tokens >= 0) config.max_new_tokens = max_new_tokens;
  read.integer("max_length", config.max_length, 0, 1 << 24);
  if (!(config.temperature >= 0)) read.fail("temperature", "must be non-negative");
  if (!(config.top_p > 0 && config.top_p <= 1)) read.fail("top_p", "must be in (0, 1]");
  if (!(config.repetition_penalty > 0)) read.fail("repetition_penalty", "must be positive");
  return config;
}

GenerationConfig load_generation_config(const std::filesystem::path& path) {
  return parse_generation_config(read_whole_file(path), path.string());
}

namespace {
json optional_json(const std::optional<int64_t>& value) { return value ? json(*value) : json(nullptr); }
}  // namespace

std::string config_to_json(const Qwen2AudioConfig& config) {
  const AudioEncoderConfig& audio = config.audio;
  const TextConfig& text = config.text;
  json object = {
      {"model_type", config.model_type},
      {"audio_token_index", config.audio_token_index},
      {"ignore_index", config.ignore_index},
      {"torch_dtype", config.torch_dtype.empty() ? json(nullptr) : json(config.torch_dtype)},
      {"audio_config",
       {{"model_type", "qwen2_audio_encoder"},
        {"num_mel_bins", audio.num_mel_bins},
        {"encoder_layers", audio.encoder_layers},
        {"encoder_attention_heads", audio.encoder_attention_heads},
        {"encoder_ffn_dim", audio.encoder_ffn_dim},
        {"d_model", audio.d_model},
        {"max_source_positions", audio.max_source_positions},
        {"activation_function", audio.activation_function},
        {"scale_embedding", audio.scale_embedding},
        {"dropout", audio.dropout},
        {"attention_dropout", audio.attention_dropout},
        {"activation_dropout", audio.activation_dropout},
        {"encoder_layerdrop", audio.encoder_layerdrop},
        {"init_std", audio.init_std}}},
      {"text_config",
       {{"model_type", "qwen2"},
        {"vocab_size", text.vocab_size},
        {"hidden_size", text.hidden_size},
        {"intermediate_size", text.intermediate_size},
        {"num_hidden_layers", text.num_hidden_layers},
        {"num_attention_heads", text.num_attention_heads},
        {"num_key_value_heads", text.num_key_value_heads},
        {"head_dim", text.head_dim},
        {"max_position_embeddings", text.max_position_embeddings},
        {"hidden_act", text.hidden_act},
        {"rms_norm_eps", text.rms_norm_eps},
        {"rope_theta", text.rope_theta},
        {"tie_word_embeddings", text.tie_word_embeddings},
        {"use_sliding_window", text.use_sliding_window},
        {"sliding_window", text.sliding_window},
        {"max_window_layers", text.max_window_layers},
        {"attention_dropout", text.attention_dropout},
        {"initializer_range", text.initializer_range},
        {"bos_token_id", optional_json(text.bos_token_id)},
        {"eos_token_id", text.eos_token_ids},
        {"pad_token_id", optional_json(text.pad_token_id)}}},
  };
  return object.dump();
}

std::string generation_config_to_json(const GenerationConfig& config) {
  json object = {
      {"bos_token_id", optional_json(config.bos_token_id)},
      {"eos_token_id", config.eos_token_ids},
      {"pad_token_id", optional_json(config.pad_token_id)},
      {"do_sample", config.do_sample},
      {"temperature", config.temperature},
      {"top_k", config.top_k},
      {"top_p", config.top_p},
      {"repetition_penalty", config.repetition_penalty},
      {"max_new_tokens", optional_json(config.max_new_tokens)},
      {"max_length", config.max_length},
  };
  return object.dump();
}

}  // namespace qwen2audio
