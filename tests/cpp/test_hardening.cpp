// Hostile input found by fuzzing and review, at the C++ level (the Python suite tests the same through
// the bindings): each case used to crash, hang or allocate by the input's say-so.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "io/audio_file.h"
#include "io/config.h"
#include "runtime/errors.h"
#include "text/tokenizer.h"

namespace qwen2audio {
namespace {

namespace fs = std::filesystem;

std::string nested(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// 400k levels overflowed an 8 MB stack in nlohmann's recursive dump(), used to quote the bad value.
constexpr size_t kDeep = 400'000;

TEST(Hardening, DeeplyNestedConfigValueIsRefused) {
  const std::string text = R"({"text_config": {"hidden_size": )" + nested(kDeep) + "}}";
  try {
    parse_qwen2audio_config(text, "config.json");
    FAIL() << "accepted";
  } catch (const ConfigError& error) {
    EXPECT_NE(std::string(error.what()).find("nested more than 64 levels"), std::string::npos) << error.what();
  }
  EXPECT_THROW(parse_generation_config(R"({"top_p": )" + nested(kDeep) + "}", "generation_config.json"), ConfigError);
  // Nesting within the limit parses; the field's type is what is wrong.
  EXPECT_THROW(parse_qwen2audio_config(R"({"text_config": {"hidden_size": )" + nested(60) + "}}", "config.json"),
               ConfigError);
}

TEST(Hardening, LongBadConfigValueIsQuotedBriefly) {
  const std::string text = R"({"text_config": {"hidden_size": ")" + std::string(1 << 20, 'x') + "\"}}";
  try {
    parse_qwen2audio_config(text, "config.json");
    FAIL() << "accepted";
  } catch (const ConfigError& error) {
    EXPECT_LT(std::strlen(error.what()), 300u);
  }
}

// GPT-2's byte -> printable character table, as vocab.json spells byte tokens.
std::string byte_token(int byte) {
  const auto printable = [](int value) { return (value >= '!' && value <= '~') || (value >= 0xA1 && value != 0xAD); };
  int codepoint = byte;
  if (!printable(byte)) {
    codepoint = 256;
    for (int other = 0; other < byte; ++other) codepoint += printable(other) ? 0 : 1;
  }
  if (codepoint == '"' || codepoint == '\\') return "\\" + std::string(1, static_cast<char>(codepoint));
  if (codepoint < 0x80) return std::string(1, static_cast<char>(codepoint));
  return {static_cast<char>(0xC0 | (codepoint >> 6)), static_cast<char>(0x80 | (codepoint & 0x3F))};
}

class HardeningTokenizer : public ::testing::Test {
 protected:
  void SetUp() override {
    folder_ = fs::temp_directory_path() / ("qwen2audio-hardening-" + std::to_string(::getpid()) + "-" +
                                           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::create_directories(folder_);
    std::string vocab = "{";
    for (int byte = 0; byte < 256; ++byte) vocab += "\"" + byte_token(byte) + "\": " + std::to_string(byte) + ", ";
    vocab += "\"he\": 256}";
    write("vocab.json", vocab);
    write("merges.txt", "#version: 0.2\nh e\n");
  }
  void TearDown() override { fs::remove_all(folder_); }
  void write(const std::string& name, const std::string& text) {
    std::ofstream(folder_ / name, std::ios::binary) << text;
  }
  void expect_nesting_error() {
    try {
      text::Tokenizer::from_directory(folder_);
      FAIL() << "accepted";
    } catch (const ConfigError& error) {
      EXPECT_NE(std::string(error.what()).find("nested more than 64 levels"), std::string::npos) << error.what();
    }
  }
  fs::path folder_;
};

TEST_F(HardeningTokenizer, SmallTokenizerLoads) {
  EXPECT_EQ(text::Tokenizer::from_directory(folder_)->encode("hehe"), (std::vector<int32_t>{256, 256}));
}

TEST_F(HardeningTokenizer, DeeplyNestedTokenizerConfigIsRefused) {
  write("tokenizer_config.json", R"({"added_tokens_decoder": {"400": )" + nested(kDeep) + "}}");
  expect_nesting_error();
}

TEST_F(HardeningTokenizer, DeeplyNestedTokenizerJsonIsRefused) {
  write("tokenizer.json", R"({"post_processor": )" + nested(kDeep) + "}");
  expect_nesting_error();
}

std::string wav(int rate, int channels, const std::vector<int16_t>& samples) {
  auto u32 = [](uint32_t value) { return std::string(reinterpret_cast<const char*>(&value), 4); };
  auto u16 = [](uint16_t value) { return std::string(reinterpret_cast<const char*>(&value), 2); };
  const std::string data(reinterpret_cast<const char*>(samples.data()), samples.size() * 2);
  return "RIFF" + u32(36 + static_cast<uint32_t>(data.size())) + "WAVEfmt " + u32(16) + u16(1) +
         u16(static_cast<uint16_t>(channels)) + u32(rate) + u32(rate * 2 * channels) +
         u16(static_cast<uint16_t>(2 * channels)) + u16(16) + "data" + u32(static_cast<uint32_t>(data.size())) + data;
}

TEST(Hardening, AudioAtAnAbsurdSampleRateIsRefused) {
  // A 64-byte file claiming 1 Hz used to size a 4 GB resampling buffer and take a minute in libsoxr.
  const std::string one_hertz = wav(1, 1, std::vector<int16_t>(10, 1000));
  try {
    load_audio_memory(one_hertz.data(), one_hertz.size());
    FAIL() << "accepted";
  } catch (const InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("too far from 16000 Hz"), std::string::npos) << error.what();
  }
  const std::string hundred_hertz = wav(100, 1, std::vector<int16_t>(10, 1000));
  EXPECT_EQ(load_audio_memory(hundred_hertz.data(), hundred_hertz.size()).size(), 1600u);
}

TEST(Hardening, AudioWithManyChannelsIsAveraged) {
  std::vector<int16_t> samples;
  for (int frame = 0; frame < 4; ++frame)
    for (int channel = 0; channel < 1024; ++channel) samples.push_back(static_cast<int16_t>(channel));
  const std::string data = wav(16000, 1024, samples);
  const std::vector<float> mono = load_audio_memory(data.data(), data.size());
  ASSERT_EQ(mono.size(), 4u);
  for (const float sample : mono) EXPECT_FLOAT_EQ(sample, 511.5f / 32768.0f);
}

}  // namespace
}  // namespace qwen2audio
