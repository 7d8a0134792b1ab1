// The model on a GPU against the shared reference (HF transformers on the tiny checkpoint) and
// against the CPU engine in BF16: encoder output, audio features, logits, greedy tokens, batched
// and multi-turn generation, concurrent sessions. Skipped when no CUDA device is present.

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "audio/device_log_mel.h"
#include "audio/log_mel.h"
#include "generate/session.h"
#include "model/qwen2_audio.h"
#include "npy.h"
#include "runtime/errors.h"

namespace qwen2audio {
namespace {

namespace fs = std::filesystem;
using testing::read_npy;

// The shared reference; QWEN2AUDIO_SHARED_REFERENCE points elsewhere when the tests run on a GPU
// machine that holds a copy of it rather than the build tree's neighbour.
const fs::path kReference = [] {
  const char* override_path = std::getenv("QWEN2AUDIO_SHARED_REFERENCE");
  return fs::path(override_path && *override_path ? override_path : QWEN2AUDIO_SHARED_REFERENCE_DIR);
}();
const fs::path kTiny = kReference / "tiny_model";

// The CPU engine's BF16 bounds against the float32 goldens (tests/python/test_model.py); the GPU
// rounds the same values to BF16 (weights, and activations entering each GEMM), so it must meet them too.
constexpr float kEncoderTolerance = 0.025f;
constexpr float kLogitsTolerance = 0.05f;

// The reference stores the tiny checkpoint's weights gzipped; a loadable folder is made once per
// run in the temporary directory (gzip is on every machine these tests run on).
struct ScratchFolder {
  fs::path path = fs::temp_directory_path() / ("qwen2audio_cuda_tests_" + std::to_string(::getpid()));
  ~ScratchFolder() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
};

fs::path tiny_checkpoint() {
  static const ScratchFolder scratch;
  static const fs::path folder = [] {
    const fs::path destination = scratch.path / "bf16";
    fs::create_directories(destination);
    for (const char* name : {"config.json", "generation_config.json"})
      fs::copy_file(kTiny / "bf16" / name, destination / name, fs::copy_options::overwrite_existing);
    const std::string command = "gzip -dc '" + (kTiny / "bf16" / "model.safetensors.gz").string() + "' > '" +
                                (destination / "model.safetensors").string() + "'";
    if (std::system(command.c_str()) != 0) throw std::runtime_error("could not run: " + command);
    return destination;
  }();
  return folder;
}

bool has_cuda_device() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess && count > 0;
}

struct Golden {
  std::string name;
  std::vector<int64_t> ids;
  std::vector<float> features;  // [clips, 128, 3000]
  std::vector<int64_t> feature_mask;
  int64_t clips = 0;
  std::vector<int64_t> greedy;
  nlohmann::json record;
  AudioBatch audio() const { return {features.data(), feature_mask.data(), clips, 128, 3000}; }
  TokenBatch tokens() const { return {ids.data(), nullptr, 1, static_cast<int64_t>(ids.size())}; }
};

std::vector<Golden> load_goldens() {
  std::ifstream stream(kTiny / "golden.json");
  const nlohmann::json document = nlohmann::json::parse(stream);
  std::vector<Golden> goldens;
  for (const auto& record : document["goldens"]) {
    Golden golden;
    golden.name = record["name"];
    golden.ids = record["input_ids"].get<std::vector<int64_t>>();
    golden.greedy = record["greedy_new_tokens"].get<std::vector<int64_t>>();
    golden.record = record;
    for (const auto& item : record["audio_cases"]) {
      const std::string case_name = item;
      const auto features = read_npy<float>(kReference / "mel" / (case_name + ".input_features.npy"));
      const auto mask = read_npy<int32_t>(kReference / "mel" / (case_name + ".feature_attention_mask.npy"));
      golden.features.insert(golden.features.end(), features.begin(), features.end());
      golden.feature_mask.insert(golden.feature_mask.end(), mask.begin(), mask.end());
      ++golden.clips;
    }
    goldens.push_back(std::move(golden));
  }
  return goldens;
}

float max_difference(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float worst = 0.0f;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

std::vector<int64_t> greedy(const std::shared_ptr<const Qwen2AudioModel>& model, const Golden& golden, int64_t steps) {
  Session session(model, 1);
  const AudioBatch audio = golden.audio();
  session.append(golden.tokens(), golden.clips ? &audio : nullptr);
  GenerationOptions options;
  options.max_new_tokens = steps;
  return session.generate(options);
}

LoadOptions on_device(const std::string& device, DTypeChoice dtype = DTypeChoice::Auto) {
  LoadOptions options;
  options.device = parse_device(device);
  options.dtype = dtype;
  return options;
}

class CudaModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!has_cuda_device()) return;
    gpu_ = Qwen2AudioModel::load(tiny_checkpoint(), on_device("cuda"));
    cpu_ = Qwen2AudioModel::load(tiny_checkpoint(), on_device("cpu", DTypeChoice::BFloat16));
    goldens_ = load_goldens();
  }
  static void TearDownTestSuite() {
    gpu_.reset();
    cpu_.reset();
  }
  void SetUp() override {
    if (!has_cuda_device()) GTEST_SKIP() << "no CUDA device";
  }
  static std::shared_ptr<Qwen2AudioModel> gpu_, cpu_;
  static std::vector<Golden> goldens_;
};
std::shared_ptr<Qwen2AudioModel> CudaModelTest::gpu_, CudaModelTest::cpu_;
std::vector<Golden> CudaModelTest::goldens_;

TEST_F(CudaModelTest, ReportsItsDevice) {
  EXPECT_EQ(gpu_->device(), "cuda:0");
  EXPECT_NE(gpu_->device_description().find("cuda:0 ("), std::string::npos);
  EXPECT_GT(gpu_->device_weight_bytes(), 0u);
  EXPECT_EQ(gpu_->dtype(), DType::BF16);
}

TEST_F(CudaModelTest, EncoderAndAudioFeaturesMatchReference) {
  for (const Golden& golden : goldens_) {
    if (golden.clips == 0) continue;
    SCOPED_TRACE(golden.name);
    const AudioBatch audio = golden.audio();
    std::vector<float> encoded(static_cast<size_t>(golden.clips * 750 * 64));
    gpu_->encode(audio, encoded.data());
    const auto expected = read_npy<float>(kTiny / (golden.name + ".encoder_last_hidden_state.npy"));
    const float encoder_error = max_difference(encoded, expected);
    EXPECT_LE(encoder_error, kEncoderTolerance);

    const std::vector<float> features = gpu_->audio_embeddings(audio);
    const auto expected_features = read_npy<float>(kTiny / (golden.name + ".audio_features.npy"));
    const float feature_error = max_difference(features, expected_features);
    EXPECT_LE(feature_error, kEncoderTolerance);
    std::cout << golden.name << ": encoder max |diff| " << encoder_error << ", audio features " << feature_error
              << "\n";
  }
}

TEST_F(CudaModelTest, LogitsMatchReferenceAndTheCpuEngine) {
  const auto active = read_npy<int64_t>(kTiny / "active_ids.npy");
  const int64_t vocab = gpu_->config().text.vocab_size;
  for (const Golden& golden : goldens_) {
    SCOPED_TRACE(golden.name);
    const TokenBatch tokens = golden.tokens();
    const AudioBatch audio = golden.audio();
    std::vector<float> gpu_logits(static_cast<size_t>(tokens.steps * vocab)), cpu_logits(gpu_logits.size());
    gpu_->forward(tokens, golden.clips ? &audio : nullptr, gpu_logits.data());
    cpu_->forward(tokens, golden.clips ? &audio : nullptr, cpu_logits.data());
    const auto expected = read_npy<float>(kTiny / (golden.name + ".logits_active.npy"));
    std::vector<float> selected;
    for (int64_t t = 0; t < tokens.steps; ++t)
      for (int64_t id : active) selected.push_back(gpu_logits[t * vocab + id]);
    const float reference_error = max_difference(selected, expected);
    const float cpu_error = max_difference(gpu_logits, cpu_logits);
    EXPECT_LE(reference_error, kLogitsTolerance);
    EXPECT_GT(reference_error, 0.0f);  // computed in BF16, not a copy of anything
    EXPECT_LE(cpu_error, 2 * kLogitsTolerance);
    std::cout << golden.name << ": logits max |diff| vs reference " << reference_error << ", vs CPU bf16 " << cpu_error
              << "\n";
  }
}

TEST_F(CudaModelTest, GreedyTokensMatchReference) {
  for (const Golden& golden : goldens_) {
    SCOPED_TRACE(golden.name);
    EXPECT_EQ(greedy(gpu_, golden, 12), golden.greedy);
  }
}

TEST_F(CudaModelTest, LeftPaddedBatchGeneratesAsOneByOne) {
  const Golden& longer = goldens_[0];
  const Golden& shorter = goldens_[3];  // text only
  ASSERT_EQ(shorter.clips, 0);
  const int64_t steps = std::max(longer.ids.size(), shorter.ids.size());
  std::vector<int64_t> ids(2 * steps, 151643), mask(2 * steps, 0);
  for (int row = 0; row < 2; ++row) {
    const std::vector<int64_t>& source = row == 0 ? longer.ids : shorter.ids;
    const int64_t pad = steps - static_cast<int64_t>(source.size());
    std::copy(source.begin(), source.end(), ids.begin() + row * steps + pad);
    std::fill(mask.begin() + row * steps + pad, mask.begin() + (row + 1) * steps, 1);
  }
  Session session(gpu_, 2);
  const AudioBatch audio = longer.audio();
  session.append({ids.data(), mask.data(), 2, steps}, &audio);
  GenerationOptions options;
  options.max_new_tokens = 8;
  const std::vector<int64_t> batched = session.generate(options);
  const std::vector<int64_t> first = greedy(gpu_, longer, 8), second = greedy(gpu_, shorter, 8);
  EXPECT_EQ(std::vector<int64_t>(batched.begin(), batched.begin() + 8), first);
  EXPECT_EQ(std::vector<int64_t>(batched.begin() + 8, batched.end()), second);
}

// A second turn appended to a session (its cache grown past the first reservation, then rewound)
// gives what the CPU engine gives for the same conversation.
TEST_F(CudaModelTest, MultiTurnSessionsFollowTheCpuEngine) {
  const Golden& golden = goldens_[1];
  const Golden& text = goldens_[3];
  ASSERT_EQ(text.clips, 0);
  auto conversation = [&](const std::shared_ptr<Qwen2AudioModel>& model) {
    Session session(model, 1);
    const AudioBatch audio = golden.audio();
    session.append(golden.tokens(), golden.clips ? &audio : nullptr);
    GenerationOptions options;
    options.max_new_tokens = 6;
    std::vector<int64_t> all = session.generate(options);
    // A long text-only second turn, so the cache grows while holding the first.
    std::vector<int64_t> turn;
    for (int repeat = 0; repeat < 12; ++repeat) turn.insert(turn.end(), text.ids.begin(), text.ids.end());
    session.append({turn.data(), nullptr, 1, static_cast<int64_t>(turn.size())}, nullptr);
    std::vector<int64_t> second = session.generate(options);
    all.insert(all.end(), second.begin(), second.end());
    session.truncate(static_cast<int64_t>(golden.ids.size()) + 3);
    std::vector<int64_t> rewound = session.generate(options);
    all.insert(all.end(), rewound.begin(), rewound.end());
    return all;
  };
  EXPECT_EQ(conversation(gpu_), conversation(cpu_));
}

TEST_F(CudaModelTest, ConcurrentSessionsMatchSequentialRuns) {
  std::vector<std::vector<int64_t>> sequential, concurrent(goldens_.size());
  for (const Golden& golden : goldens_) sequential.push_back(greedy(gpu_, golden, 10));
  std::vector<std::thread> threads;
  for (size_t i = 0; i < goldens_.size(); ++i)
    threads.emplace_back([&, i] { concurrent[i] = greedy(gpu_, goldens_[i], 10); });
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(concurrent, sequential);
}

TEST_F(CudaModelTest, RefusesWhatOnlyTheCpuDoes) {
  EXPECT_THROW(Qwen2AudioModel::load(tiny_checkpoint(), on_device("cuda", DTypeChoice::Float32)), InvalidArgument);
  LoadOptions int8 = on_device("cuda");
  int8.quantization.decoder = WeightQuantization::Int8;
  EXPECT_THROW(Qwen2AudioModel::load(tiny_checkpoint(), int8), InvalidArgument);
  LoadOptions float_cache = on_device("cuda");
  float_cache.kv_cache_dtype = DTypeChoice::Float32;
  EXPECT_THROW(Qwen2AudioModel::load(tiny_checkpoint(), float_cache), InvalidArgument);
  EXPECT_THROW(Qwen2AudioModel::load(tiny_checkpoint(), on_device("cuda:64")), InvalidArgument);
}

// Runs everywhere: without a GPU (or without the backend) asking for CUDA fails with a DeviceError
// naming the cause, and bad device strings fail before anything is loaded.
TEST(CudaModelWithoutDevice, FailsClearly) {
  EXPECT_THROW(parse_device("tpu"), InvalidArgument);
  EXPECT_THROW(parse_device("cuda:x"), InvalidArgument);
  if (has_cuda_device()) GTEST_SKIP() << "a CUDA device is present";
  try {
    Qwen2AudioModel::load(tiny_checkpoint(), on_device("cuda"));
    FAIL() << "loading onto a missing GPU succeeded";
  } catch (const DeviceError& error) {
    EXPECT_NE(std::string(error.what()).find("CUDA"), std::string::npos) << error.what();
  }
  EXPECT_THROW(DeviceWhisperLogMel(WhisperFeatureOptions{}, "cuda"), DeviceError);
  EXPECT_THROW(DeviceWhisperLogMel(WhisperFeatureOptions{}, "cpu"), InvalidArgument);
}

}  // namespace
}  // namespace qwen2audio

namespace qwen2audio {
namespace {

// The processor's front end on the GPU (through the backend library) equals the CPU one, frame
// mask included, and meets the CPU's 1e-4 bound against the reference features.
TEST(CudaLogMelFrontEnd, MatchesTheCpuAndTheReference) {
  if (!has_cuda_device()) GTEST_SKIP() << "no CUDA device";
  const WhisperFeatureOptions options;
  const WhisperLogMel cpu(options);
  const DeviceWhisperLogMel gpu(options, "cuda");
  for (const std::string name : {"speech_en", "short_0p3s", "chirp_5s"}) {
    SCOPED_TRACE(name);
    const auto audio = read_npy<float>(kReference / "mel" / (name + ".audio.npy"));
    const auto expected = read_npy<float>(kReference / "mel" / (name + ".input_features.npy"));
    const AudioSamples clip{audio.data(), audio.size()};
    std::vector<float> on_gpu(static_cast<size_t>(128 * cpu.num_frames())), on_cpu(on_gpu.size());
    std::vector<int32_t> gpu_mask(static_cast<size_t>(cpu.num_frames())), cpu_mask(gpu_mask.size());
    gpu.compute({&clip, 1}, on_gpu.data(), gpu_mask.data());
    cpu.compute({&clip, 1}, on_cpu.data(), cpu_mask.data());
    EXPECT_EQ(gpu_mask, cpu_mask);
    EXPECT_LE(max_difference(on_gpu, expected), 1e-4f);
    EXPECT_LE(max_difference(on_gpu, on_cpu), 1e-4f);
  }
  const std::vector<float> bad(1000, std::nanf(""));
  const AudioSamples bad_clip{bad.data(), bad.size()};
  std::vector<float> out(static_cast<size_t>(128 * cpu.num_frames()));
  EXPECT_THROW(gpu.compute({&bad_clip, 1}, out.data(), nullptr), InvalidArgument);
}

}  // namespace
}  // namespace qwen2audio
