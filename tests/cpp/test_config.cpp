#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include "io/config.h"

#include "model/text_decoder.h"
#include "model/ultravox.h"
#include "model/weight_layout.h"
#include "runtime/errors.h"

namespace qwen2audio {
namespace {

TEST(Config, EmptyObjectGivesQwen2Audio7BEncoderAndQwen2Defaults) {
  const auto config = parse_qwen2audio_config(R"({"model_type":"qwen2_audio"})", "config.json");
  EXPECT_EQ(config.audio.d_model, 1280);
  EXPECT_EQ(config.audio.encoder_layers, 32);
  EXPECT_EQ(config.audio.encoder_attention_heads, 20);
  EXPECT_EQ(config.text.vocab_size, 151936);
  EXPECT_EQ(config.text.intermediate_size, 22016);
  EXPECT_EQ(config.text.num_key_value_heads, 32);
  EXPECT_DOUBLE_EQ(config.text.rms_norm_eps, 1e-6);
  EXPECT_FALSE(config.text.tie_word_embeddings);
  EXPECT_EQ(config.audio_token_index, 151646);
}

TEST(Config, KeyValueHeadsDefaultToAttentionHeads) {
  const auto config =
      parse_qwen2audio_config(R"({"text_config":{"num_attention_heads":8,"hidden_size":256}})", "config.json");
  EXPECT_EQ(config.text.num_key_value_heads, 8);
  EXPECT_EQ(config.text.head_dim, 32);
}

TEST(Config, RopeThetaFromRopeParameters) {
  const auto config = parse_qwen2audio_config(
      R"({"text_config":{"rope_parameters":{"rope_type":"default","rope_theta":500000.0}}})", "config.json");
  EXPECT_DOUBLE_EQ(config.text.rope_theta, 500000.0);
}

TEST(Config, RejectsBadValuesNamingTheField) {
  auto expect_field_error = [](const std::string& text, const std::string& field) {
    try {
      parse_qwen2audio_config(text, "config.json");
      FAIL() << "no error for " << text;
    } catch (const ConfigError& error) {
      EXPECT_NE(std::string(error.what()).find(field), std::string::npos) << error.what();
    }
  };
  expect_field_error(R"({"text_config":{"hidden_size":"big"}})", "hidden_size");
  expect_field_error(R"({"text_config":{"hidden_size":-4}})", "hidden_size");
  expect_field_error(R"({"text_config":{"vocab_size":99999999999}})", "vocab_size");
  expect_field_error(R"({"text_config":{"num_attention_heads":32,"num_key_value_heads":5}})", "num_key_value_heads");
  expect_field_error(R"({"audio_config":{"d_model":100,"encoder_attention_heads":3}})", "d_model");
  expect_field_error(R"({"model_type":"llama"})", "model_type");
  expect_field_error(R"({"text_config":{"rope_scaling":{"type":"yarn"}}})", "rope_scaling");
  expect_field_error(R"([1])", "object");
  expect_field_error(R"({"text_config":)", "invalid JSON");
}

TEST(GenerationConfigTest, ReadsEosListAndSampling) {
  const auto config = parse_generation_config(
      R"({"eos_token_id":[151645,151643],"pad_token_id":151643,"do_sample":true,"top_k":20,"top_p":0.5,"temperature":0.7})",
      "generation_config.json");
  EXPECT_EQ(config.eos_token_ids, (std::vector<int64_t>{151645, 151643}));
  EXPECT_TRUE(config.do_sample);
  EXPECT_EQ(config.top_k, 20);
  EXPECT_DOUBLE_EQ(config.repetition_penalty, 1.0);
  EXPECT_THROW(parse_generation_config(R"({"top_p":1.5})", "g.json"), ConfigError);
}

TEST(WeightLayout, CountsTensorsOfTheRealModel) {
  const auto config =
      parse_qwen2audio_config(R"({"text_config":{"vocab_size":156032,"intermediate_size":11008}})", "config.json");
  const auto tensors = expected_tensors(config);
  // Encoder: 5 stem/position + 15 per layer + 2 final norm; projector 2; decoder: embed + 12 per
  // layer + norm + lm_head.
  EXPECT_EQ(tensors.size(), 5u + 32 * 15 + 2 + 2 + 1 + 32 * 12 + 1 + 1);
  int64_t parameters = 0;
  for (const auto& tensor : tensors) {
    int64_t count = 1;
    for (int64_t extent : tensor.shape) count *= extent;
    parameters += count;
  }
  // Qwen2-Audio-7B has 8.40e9 parameters with the position table, 8.2e9 without the audio parts
  // counted twice; a broad bracket catches a wrong layer formula.
  EXPECT_GT(parameters, 8'000'000'000);
  EXPECT_LT(parameters, 8'600'000'000);
}

TEST(UltravoxConfig, ReadsTheTinyCheckpointsEmbeddedSubConfigs) {
  const auto path = std::filesystem::path(QWEN2AUDIO_SHARED_REFERENCE_DIR) / "ultravox_tiny" / "f32" / "config.json";
  EXPECT_EQ(read_model_type(path), "ultravox");
  const UltravoxConfig config = load_ultravox_config(path);
  EXPECT_EQ(config.stack_factor, 8);
  EXPECT_EQ(config.projector_hidden_size, 128);
  EXPECT_EQ(config.audio.d_model, 64);
  EXPECT_EQ(config.text.model_type, "llama");
  EXPECT_FALSE(config.text.attention_bias);
  EXPECT_TRUE(config.text.tie_word_embeddings);
  EXPECT_EQ(config.text.num_key_value_heads, 2);
  EXPECT_DOUBLE_EQ(config.text.rope_scaling.factor, 32.0);
  EXPECT_EQ(config.text.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(ultravox_expected_tensors(config).size(), 37u + 4u + 20u);  // encoder, projector, tied decoder
  EXPECT_THROW(parse_qwen2audio_config(R"({"model_type":"ultravox"})", "config.json"), ConfigError);
}

TEST(UltravoxConfig, RefusesWhatTheEngineCannotRun) {
  const std::string base = R"({"model_type":"ultravox","audio_config":{"model_type":"whisper"},)"
                           R"("text_config":{"model_type":"llama"})";
  EXPECT_NO_THROW(parse_ultravox_config(base + "}", "config.json"));
  for (const char* extra : {R"(,"text_model_id":"meta-llama/Llama-3.2-1B-Instruct")", R"(,"projector_act":"gelu")",
                            R"(,"text_model_lora_config":{"r":8})", R"(,"audio_latency_block_size":100)"})
    EXPECT_THROW(parse_ultravox_config(base + extra + "}", "config.json"), ConfigError) << extra;
  EXPECT_THROW(parse_ultravox_config(R"({"model_type":"ultravox","text_config":{"model_type":"llama"}})", "c"),
               ConfigError);
}

TEST(RopeScaling, Llama3KeepsShortWavelengthsSlowsLongOnesAndBlendsBetween) {
  TextConfig config;
  config.head_dim = 16;
  config.rope_theta = 500000.0;
  const std::vector<float> plain = rope_inverse_frequencies(config);
  config.rope_scaling = {32.0, 1.0, 4.0, 8192};
  const std::vector<float> scaled = rope_inverse_frequencies(config);
  int high = 0, low = 0, medium = 0;
  for (size_t i = 0; i < plain.size(); ++i) {
    const double wavelength = 2 * M_PI / plain[i];
    if (wavelength < 8192.0 / 4) {
      EXPECT_EQ(scaled[i], plain[i]);
      ++high;
    } else if (wavelength > 8192.0) {
      EXPECT_FLOAT_EQ(scaled[i], plain[i] / 32);
      ++low;
    } else {
      const double smooth = (8192.0 / wavelength - 1.0) / 3.0;
      EXPECT_NEAR(scaled[i], (1 - smooth) * plain[i] / 32 + smooth * plain[i], 1e-6 * plain[i]);
      ++medium;
    }
  }
  EXPECT_GT(high, 0);  // head_dim 16 at theta 5e5 reaches all three regimes
  EXPECT_GT(low, 0);
  EXPECT_GT(medium, 0);
}

TEST(UltravoxConfig, AudioTokensPerChunk) {
  EXPECT_EQ(ultravox_audio_token_count(309, 8), 20);
  EXPECT_EQ(ultravox_audio_token_count(30, 8), 2);
  EXPECT_EQ(ultravox_audio_token_count(3000, 8), 188);
  EXPECT_EQ(ultravox_audio_token_count(1700, 8), 107);
}

}  // namespace
}  // namespace qwen2audio
