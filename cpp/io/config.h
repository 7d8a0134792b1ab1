#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace qwen2audio {

// Field names and defaults follow Hugging Face's Qwen2AudioEncoderConfig, Qwen2Config and
// Qwen2AudioConfig, so a config.json reads here exactly as transformers reads it. Training-only
// fields (dropout, init ranges) are parsed for completeness but unused.
struct AudioEncoderConfig {
  int64_t num_mel_bins = 128;
  int64_t encoder_layers = 32;
  int64_t encoder_attention_heads = 20;
  int64_t encoder_ffn_dim = 5120;
  int64_t d_model = 1280;
  int64_t max_source_positions = 1500;
  std::string activation_function = "gelu";
  bool scale_embedding = false;
  double dropout = 0.0;
  double attention_dropout = 0.0;
  double activation_dropout = 0.0;
  double encoder_layerdrop = 0.0;
  double init_std = 0.02;

  int64_t head_dim() const { return d_model / encoder_attention_heads; }
};

// Llama 3's frequency-dependent RoPE scaling (transformers' rope_type "llama3"); factor 0: none.
struct RopeScaling {
  double factor = 0.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
  bool enabled() const { return factor > 0.0; }
};

// One struct for the decoders of every family (Qwen2 and Llama read the same field names); the
// defaults are Qwen2Config's, and parse_text_config applies LlamaConfig's where they differ.
struct TextConfig {
  std::string model_type = "qwen2";
  int64_t vocab_size = 151936;
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 22016;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 32;  // absent or null: equal to num_attention_heads
  int64_t head_dim = 0;              // absent: hidden_size / num_attention_heads
  int64_t max_position_embeddings = 32768;
  std::string hidden_act = "silu";
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  // Qwen2's q/k/v projections always carry a bias; Llama's follow attention_bias (false by default).
  bool attention_bias = true;
  bool tie_word_embeddings = false;
  bool use_sliding_window = false;
  int64_t sliding_window = 4096;
  int64_t max_window_layers = 28;
  double attention_dropout = 0.0;
  double initializer_range = 0.02;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> pad_token_id;
};

struct Qwen2AudioConfig {
  AudioEncoderConfig audio;
  TextConfig text;
  int64_t audio_token_index = 151646;
  int64_t ignore_index = -100;
  std::string model_type = "qwen2_audio";
  std::string torch_dtype;  // as written in the file, empty when absent
};

// fixie-ai's UltravoxConfig (v0.5): a Whisper encoder, a stacked-frame projector and a Llama decoder,
// both sub-models embedded in config.json (audio_model_id / text_model_id null).
struct UltravoxConfig {
  AudioEncoderConfig audio;
  TextConfig text;
  int64_t stack_factor = 8;
  int64_t projector_hidden_size = 4096;  // config "hidden_size": linear_1's output, halved by SwiGLU
  bool projector_ln_mid = true;
  std::string projector_act = "swiglu";
  std::optional<int64_t> pad_token_id;
  std::string torch_dtype;
};

// Defaults are those of transformers' GenerationConfig; Qwen2-Audio checkpoints override some.
struct GenerationConfig {
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> pad_token_id;
  bool do_sample = false;
  double temperature = 1.0;
  int64_t top_k = 50;
  double top_p = 1.0;
  double repetition_penalty = 1.0;
  std::optional<int64_t> max_new_tokens;
  int64_t max_length = 20;

  // Used when a checkpoint has no generation_config.json, as transformers derives it.
  static GenerationConfig from_model_config(const TextConfig& config);
};

// Each throws ConfigError naming the file and field on a malformed or out-of-range value.
Qwen2AudioConfig parse_qwen2audio_config(const std::string& json_text, const std::string& origin);
Qwen2AudioConfig load_qwen2audio_config(const std::filesystem::path& path);
UltravoxConfig parse_ultravox_config(const std::string& json_text, const std::string& origin);
UltravoxConfig load_ultravox_config(const std::filesystem::path& path);
// config.json's model_type ("qwen2_audio" when absent, as the engine's first family assumed), which
// picks the model family.
std::string read_model_type(const std::filesystem::path& path);
GenerationConfig parse_generation_config(const std::string& json_text, const std::string& origin);
GenerationConfig load_generation_config(const std::filesystem::path& path);

// Every field after defaults are applied, in config.json's own shape.
std::string config_to_json(const Qwen2AudioConfig& config);
std::string generation_config_to_json(const GenerationConfig& config);

// Reads a small JSON text file whole, refusing absurd sizes. Shared by the config loaders and the
// tokenizer files.
std::string read_text_file(const std::filesystem::path& path, size_t max_bytes, const char* what);

}  // namespace qwen2audio
