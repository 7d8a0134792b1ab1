#include <gtest/gtest.h>

#include "io/config.h"
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

}  // namespace
}  // namespace qwen2audio
