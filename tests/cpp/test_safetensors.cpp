#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "runtime/errors.h"

namespace qwen2audio {
namespace {

namespace fs = std::filesystem;

std::string make_image(const std::string& header, const std::vector<uint8_t>& data) {
  std::string image(8, '\0');
  uint64_t length = header.size();
  for (int i = 0; i < 8; ++i) image[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  image += header;
  image.append(data.begin(), data.end());
  return image;
}

SafetensorsHeader parse(const std::string& image) {
  return parse_safetensors(reinterpret_cast<const uint8_t*>(image.data()), image.size(), "test.safetensors");
}

void expect_error(const std::string& image, const std::string& fragment) {
  try {
    parse(image);
    FAIL() << "expected an error containing '" << fragment << "'";
  } catch (const CheckpointError& error) {
    EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("test.safetensors"), std::string::npos) << error.what();
  }
}

TEST(Safetensors, ParsesValidImage) {
  std::vector<uint8_t> data(4 * 6 + 2 * 2);
  const auto image =
      make_image(R"({"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[2],"data_offsets":[24,28]},)"
                 R"("a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})",
                 data);
  const auto header = parse(image);
  ASSERT_EQ(header.tensors.size(), 2u);
  EXPECT_EQ(header.tensors[0].name, "a");
  EXPECT_EQ(header.tensors[0].dtype, DType::F32);
  EXPECT_EQ(header.tensors[0].shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(header.tensors[1].dtype, DType::BF16);
  EXPECT_EQ(header.metadata.at("format"), "pt");
}

TEST(Safetensors, AcceptsEmptyAndScalarTensors) {
  std::vector<uint8_t> data(4);
  const auto image = make_image(
      R"({"empty":{"dtype":"F32","shape":[0,5],"data_offsets":[0,0]},"scalar":{"dtype":"I32","shape":[],"data_offsets":[0,4]}})",
      data);
  const auto header = parse(image);
  EXPECT_EQ(header.tensors.size(), 2u);
}

TEST(Safetensors, RejectsTinyFile) { expect_error("abc", "too small"); }

TEST(Safetensors, RejectsHeaderPastEnd) {
  std::string image = make_image("{}", {});
  image[0] = 100;
  expect_error(image, "runs past the end");
}

TEST(Safetensors, RejectsAbsurdHeaderLength) {
  std::string image(8, '\xff');
  image += "{}";
  expect_error(image, "runs past the end");
}

TEST(Safetensors, RejectsInvalidJson) { expect_error(make_image("{not json", {}), "invalid JSON"); }

TEST(Safetensors, RejectsNonObjectHeader) { expect_error(make_image("[1,2]", {}), "not a JSON object"); }

TEST(Safetensors, RejectsDeepNesting) {
  expect_error(make_image(std::string(5000, '[') + std::string(5000, ']'), {}), "nested too deeply");
}

TEST(Safetensors, RejectsOffsetsOutOfBounds) {
  expect_error(make_image(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::vector<uint8_t>(8)),
               "run past the data section");
}

TEST(Safetensors, RejectsOverlap) {
  expect_error(make_image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                          std::vector<uint8_t>(12)),
               "overlap");
}

TEST(Safetensors, RejectsByteSizeMismatch) {
  expect_error(make_image(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::vector<uint8_t>(8)),
               "need 12");
}

TEST(Safetensors, RejectsShapeOverflow) {
  expect_error(make_image(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}})",
                          std::vector<uint8_t>(8)),
               "overflows");
}

TEST(Safetensors, RejectsDuplicateNames) {
  expect_error(make_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                          R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                          std::vector<uint8_t>(8)),
               "duplicate tensor name 'a'");
}

TEST(Safetensors, RejectsUnknownDtypeAndBadFields) {
  expect_error(make_image(R"({"a":{"dtype":"F12","shape":[1],"data_offsets":[0,4]}})", std::vector<uint8_t>(4)),
               "unknown dtype");
  expect_error(make_image(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", std::vector<uint8_t>(4)),
               "non-negative");
  expect_error(make_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", std::vector<uint8_t>(4)),
               "before begin");
  expect_error(make_image(R"({"a":{"dtype":"F32","shape":[1]}})", std::vector<uint8_t>(4)), "no 'data_offsets'");
}

class CheckpointFolder : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = fs::temp_directory_path() / ("qwen2audio_gtest_" + std::to_string(::getpid()) + "_" +
                                              ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(directory_);
    fs::create_directories(directory_);
  }
  void TearDown() override { fs::remove_all(directory_); }

  void write(const std::string& name, const std::string& contents) {
    std::ofstream(directory_ / name, std::ios::binary) << contents;
  }
  std::string tensor_file(const std::string& name, float value) {
    std::vector<uint8_t> data(4);
    std::memcpy(data.data(), &value, 4);
    return make_image(R"({")" + name + R"(":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", data);
  }

  fs::path directory_;
};

TEST_F(CheckpointFolder, ReadsShardedCheckpoint) {
  write("a.safetensors", tensor_file("x", 1.5f));
  write("b.safetensors", tensor_file("y", -2.0f));
  write("model.safetensors.index.json", R"({"weight_map":{"x":"a.safetensors","y":"b.safetensors"}})");
  const auto checkpoint = Checkpoint::open(directory_);
  EXPECT_EQ(checkpoint->tensor_names(), (std::vector<std::string>{"x", "y"}));
  // The shard's data section starts at an odd offset, so the value is read bytewise (a float load there is UB).
  float y = 0;
  std::memcpy(&y, checkpoint->tensor("y").data, sizeof y);
  EXPECT_FLOAT_EQ(y, -2.0f);
  EXPECT_THROW(checkpoint->tensor("z"), CheckpointError);
}

TEST_F(CheckpointFolder, RejectsMissingShard) {
  write("a.safetensors", tensor_file("x", 1.5f));
  write("model.safetensors.index.json", R"({"weight_map":{"x":"a.safetensors","y":"gone.safetensors"}})");
  EXPECT_THROW(
      {
        try {
          Checkpoint::open(directory_);
        } catch (const CheckpointError& error) {
          EXPECT_NE(std::string(error.what()).find("gone.safetensors"), std::string::npos);
          throw;
        }
      },
      CheckpointError);
}

TEST_F(CheckpointFolder, RejectsTensorAbsentFromShard) {
  write("a.safetensors", tensor_file("x", 1.5f));
  write("model.safetensors.index.json", R"({"weight_map":{"x":"a.safetensors","w":"a.safetensors"}})");
  EXPECT_THROW(Checkpoint::open(directory_), CheckpointError);
}

TEST_F(CheckpointFolder, RejectsDuplicateAcrossShards) {
  write("a.safetensors", tensor_file("x", 1.5f));
  write("b.safetensors", tensor_file("x", 2.5f));
  write("model.safetensors.index.json", R"({"weight_map":{"x":"a.safetensors","y":"b.safetensors"}})");
  EXPECT_THROW(Checkpoint::open(directory_), CheckpointError);
}

TEST_F(CheckpointFolder, RejectsShardOutsideFolder) {
  write("model.safetensors.index.json", R"({"weight_map":{"x":"../etc/passwd"}})");
  EXPECT_THROW(Checkpoint::open(directory_), CheckpointError);
}

TEST_F(CheckpointFolder, RejectsEmptyFolder) { EXPECT_THROW(Checkpoint::open(directory_), CheckpointError); }

TEST(ReferenceCheckpoint, OpensTinyModelConfig) {
  const fs::path config = fs::path(QWEN2AUDIO_SHARED_REFERENCE_DIR) / "tiny_model" / "f32" / "config.json";
  if (!fs::exists(config)) GTEST_SKIP() << "shared reference not found at " << config;
  const Qwen2AudioConfig parsed = load_qwen2audio_config(config);
  EXPECT_EQ(parsed.audio.d_model, 64);
  EXPECT_EQ(parsed.text.num_key_value_heads, 2);
  EXPECT_EQ(parsed.text.head_dim, 16);
  EXPECT_EQ(parsed.text.vocab_size, 151649);
}

}  // namespace
}  // namespace qwen2audio
