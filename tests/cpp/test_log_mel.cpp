#include <gtest/gtest.h>
#include <sndfile.h>

#include <unistd.h>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <numbers>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "audio/log_mel.h"
#include "io/audio_file.h"
#include "kernels/cpu/filterbank.h"
#include "kernels/cpu/real_dft.h"
#include "runtime/errors.h"

namespace qwen2audio {
namespace {

namespace fs = std::filesystem;
using kernels::DftPrecision;
using kernels::Isa;

const fs::path kReference = QWEN2AUDIO_SHARED_REFERENCE_DIR;

// A little-endian .npy of float32 or int32 (version 1 or 2 header), as numpy.save writes them,
// returned in C (row-major) order. The reference mel bank is stored in Fortran order (it was saved as
// a transposed view of transformers' [201, 128] bank), so that layout is converted.
template <typename T>
std::vector<T> read_npy(const fs::path& path, std::vector<size_t>* shape) {
  std::ifstream stream(path, std::ios::binary);
  if (!stream) throw std::runtime_error("cannot open " + path.string());
  std::string magic(8, '\0');
  stream.read(magic.data(), 8);
  if (magic.compare(0, 6, "\x93NUMPY") != 0) throw std::runtime_error(path.string() + ": not .npy");
  size_t header_length = 0;
  if (magic[6] == 1) {
    unsigned char bytes[2];
    stream.read(reinterpret_cast<char*>(bytes), 2);
    header_length = bytes[0] | (bytes[1] << 8);
  } else {
    unsigned char bytes[4];
    stream.read(reinterpret_cast<char*>(bytes), 4);
    header_length = bytes[0] | (bytes[1] << 8) | (bytes[2] << 16) | (static_cast<size_t>(bytes[3]) << 24);
  }
  std::string header(header_length, '\0');
  stream.read(header.data(), static_cast<std::streamsize>(header_length));
  const char* expected_type = sizeof(T) == 4 && std::is_floating_point_v<T> ? "'<f4'" : "'<i4'";
  if (header.find(expected_type) == std::string::npos)
    throw std::runtime_error(path.string() + ": unexpected header " + header);
  const bool fortran_order = header.find("'fortran_order': True") != std::string::npos;
  const size_t open = header.find('(', header.find("'shape'")), close = header.find(')', open);
  shape->clear();
  size_t count = 1;
  std::string dimensions = header.substr(open + 1, close - open - 1);
  std::replace(dimensions.begin(), dimensions.end(), ',', ' ');
  std::istringstream parts(dimensions);
  for (size_t value; parts >> value;) {
    shape->push_back(value);
    count *= value;
  }
  std::vector<T> values(count);
  stream.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(count * sizeof(T)));
  if (!stream) throw std::runtime_error(path.string() + ": truncated");
  if (fortran_order && shape->size() == 2) {
    const size_t rows = (*shape)[0], columns = (*shape)[1];
    std::vector<T> row_major(count);
    for (size_t i = 0; i < rows; ++i)
      for (size_t j = 0; j < columns; ++j) row_major[i * columns + j] = values[j * rows + i];
    return row_major;
  }
  if (fortran_order && shape->size() > 2) throw std::runtime_error(path.string() + ": Fortran order above 2-D");
  return values;
}

std::vector<Isa> available_isas() {
  std::vector<Isa> isas{Isa::Scalar};
  if (kernels::isa_supported(Isa::Avx2)) isas.push_back(Isa::Avx2);
  if (kernels::isa_supported(Isa::Avx512)) isas.push_back(Isa::Avx512);
  return isas;
}

struct AlignedDeleter {
  void operator()(void* pointer) const { std::free(pointer); }
};
template <typename T>
std::unique_ptr<T[], AlignedDeleter> aligned(size_t count) {
  return std::unique_ptr<T[], AlignedDeleter>(
      static_cast<T*>(std::aligned_alloc(64, (count * sizeof(T) + 63) / 64 * 64 + 64)));
}

TEST(LogMel, MelBankMatchesReference) {
  std::vector<size_t> shape;
  const auto expected = read_npy<float>(kReference / "mel" / "mel_filters_128x201.npy", &shape);
  ASSERT_EQ(shape, (std::vector<size_t>{128, 201}));
  const auto bank = slaney_mel_filter_bank(201, 128, 0.0, 8000.0, 16000);
  ASSERT_EQ(bank.size(), expected.size());
  double worst = 0.0;
  for (size_t i = 0; i < bank.size(); ++i)
    worst = std::max(worst, std::abs(static_cast<double>(static_cast<float>(bank[i])) - expected[i]));
  EXPECT_LE(worst, 1e-8);
}

// The lane DFT against a direct double-precision DFT, for Whisper's length and for awkward ones
// (prime, tiny, power of two), every precision and every vector width this CPU runs.
TEST(RealDft, PowerSpectrumMatchesDirectDft) {
  std::mt19937 generator(7);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (const int length : {2, 3, 16, 17, 400, 512}) {
    std::vector<float> window(length);
    for (int i = 0; i < length; ++i) window[i] = 0.5f - 0.5f * std::cos(2.0f * std::numbers::pi_v<float> * i / length);
    for (const DftPrecision precision : {DftPrecision::kFloat, DftPrecision::kDouble}) {
      for (const Isa isa : available_isas()) {
        const kernels::RealDftPower dft(length, window, precision, isa);
        const int lanes = dft.lanes(), stride = length + 3;
        std::vector<float> signal(static_cast<size_t>(lanes) * stride);
        for (float& value : signal) value = uniform(generator);
        auto workspace = aligned<unsigned char>(dft.workspace_bytes());
        auto power = aligned<float>(static_cast<size_t>(dft.num_bins()) * lanes);
        dft.compute(signal.data(), stride, power.get(), workspace.get());
        for (int lane = 0; lane < lanes; ++lane) {
          std::vector<double> expected(dft.num_bins());
          double energy = 0.0;
          for (int k = 0; k < dft.num_bins(); ++k) {
            double re = 0.0, im = 0.0;
            for (int n = 0; n < length; ++n) {
              const double x = static_cast<double>(signal[lane * stride + n]) * window[n];
              const double angle = 2.0 * std::numbers::pi * ((static_cast<int64_t>(k) * n) % length) / length;
              re += x * std::cos(angle);
              im -= x * std::sin(angle);
            }
            expected[k] = re * re + im * im;
            energy = std::max(energy, expected[k]);
          }
          // Double: only the final rounding to float. Float: rounding noise relative to the frame.
          for (int k = 0; k < dft.num_bins(); ++k) {
            const double got = power[static_cast<size_t>(k) * lanes + lane];
            const double tolerance =
                precision == DftPrecision::kDouble ? 1e-7 * expected[k] + 1e-12 * energy : 2e-6 * energy;
            ASSERT_NEAR(got, expected[k], tolerance) << "length " << length << " bin " << k << " lane " << lane;
          }
        }
      }
    }
  }
}

TEST(LogFilterbank, MatchesScalarProjection) {
  const int filters = 5, bins = 9;
  std::vector<float> weights(filters * bins, 0.0f);
  for (int m = 0; m < filters; ++m)
    for (int k = m; k < std::min(bins, m + 3); ++k) weights[m * bins + k] = 0.25f * (k - m + 1);
  for (int m = 0; m < bins; ++m) weights[4 * bins + m] = 0.0f;  // an all-zero row: floored
  for (const int lanes : {2, 4, 8, 16}) {
    if (lanes == 8 && !kernels::isa_supported(Isa::Avx2)) continue;
    if (lanes == 16 && !kernels::isa_supported(Isa::Avx512)) continue;
    const kernels::LogFilterbank bank(weights.data(), filters, bins, 1e-10f, lanes);
    auto power = aligned<float>(static_cast<size_t>(bins) * lanes);
    for (int i = 0; i < bins * lanes; ++i) power[i] = static_cast<float>(std::pow(10.0, (i % 13) - 6));
    for (const int count : {lanes, lanes - 1}) {
      std::vector<float> out(filters * 20, -99.0f);
      const float largest = bank.compute(power.get(), out.data(), 20, count);
      float expected_largest = -1e30f;
      for (int m = 0; m < filters; ++m) {
        for (int lane = 0; lane < 20; ++lane) {
          if (lane >= count) {
            EXPECT_EQ(out[m * 20 + lane], -99.0f) << "wrote past count";
            continue;
          }
          double sum = 0.0;
          for (int k = 0; k < bins; ++k) sum += static_cast<double>(weights[m * bins + k]) * power[k * lanes + lane];
          const double expected = std::log10(std::max(sum, 1e-10));
          EXPECT_NEAR(out[m * 20 + lane], expected, 2e-6) << "filter " << m << " lane " << lane;
          expected_largest = std::max(expected_largest, static_cast<float>(expected));
        }
      }
      EXPECT_NEAR(largest, expected_largest, 2e-6);
    }
  }
}

TEST(LogMel, SpeechMatchesReference) {
  const std::vector<float> audio = load_audio_file((kReference / "audio" / "speech_en.wav").string());
  std::vector<size_t> shape;
  const auto expected = read_npy<float>(kReference / "mel" / "speech_en.input_features.npy", &shape);
  const auto expected_mask = read_npy<int32_t>(kReference / "mel" / "speech_en.feature_attention_mask.npy", &shape);
  const WhisperLogMel log_mel;
  ASSERT_EQ(log_mel.num_frames(), 3000);
  std::vector<float> features(128 * 3000);
  std::vector<int32_t> mask(3000);
  const AudioSamples clip{audio.data(), audio.size()};
  log_mel.compute({&clip, 1}, features.data(), mask.data(), 1);
  float worst = 0.0f;
  for (size_t i = 0; i < features.size(); ++i) worst = std::max(worst, std::abs(features[i] - expected[i]));
  EXPECT_LE(worst, 1e-4f);
  EXPECT_EQ(mask, expected_mask);
}

TEST(LogMel, BatchEqualsSingleAndPaddingShortcutIsExact) {
  // A loud 1.3 s tone (the max - 8 clamp then covers the floor) given once as is, once followed by
  // explicit zeros up to 30 s (every frame then runs the DFT), and a 2nd clip to batch with.
  std::vector<float> tone(20800), padded(480000, 0.0f), other(70001);
  for (size_t i = 0; i < tone.size(); ++i) tone[i] = 0.5f * std::sin(2.0 * std::numbers::pi * 440.0 * i / 16000.0);
  std::copy(tone.begin(), tone.end(), padded.begin());
  std::mt19937 generator(3);
  std::normal_distribution<float> normal(0.0f, 0.1f);
  for (float& value : other) value = normal(generator);
  const WhisperLogMel log_mel;
  const size_t size = 128 * 3000;
  std::vector<float> batch(3 * size), single(size);
  std::vector<int32_t> mask(3 * 3000), single_mask(3000);
  const AudioSamples clips[] = {
      {tone.data(), tone.size()}, {padded.data(), padded.size()}, {other.data(), other.size()}};
  log_mel.compute(clips, batch.data(), mask.data(), 2);
  for (int b = 0; b < 3; ++b) {
    log_mel.compute({&clips[b], 1}, single.data(), single_mask.data(), 1);
    EXPECT_TRUE(std::equal(single.begin(), single.end(), batch.begin() + b * size)) << "clip " << b;
    EXPECT_TRUE(std::equal(single_mask.begin(), single_mask.end(), mask.begin() + b * 3000)) << "clip " << b;
  }
  EXPECT_TRUE(std::equal(batch.begin(), batch.begin() + size, batch.begin() + size));
  EXPECT_EQ(std::count(mask.begin(), mask.begin() + 3000, 1), 130);
  EXPECT_EQ(std::count(mask.begin() + 3000, mask.begin() + 6000, 1), 3000);
  EXPECT_EQ(std::count(mask.begin() + 6000, mask.end(), 1), 438);  // ceil(70001 / 160)
}

TEST(LogMel, RejectsBadInput) {
  const WhisperLogMel log_mel;
  std::vector<float> features(128 * 3000);
  std::vector<float> samples(100, 0.0f);
  const AudioSamples empty{samples.data(), 0};
  EXPECT_THROW(log_mel.compute({&empty, 1}, features.data(), nullptr), InvalidArgument);
  samples[42] = std::nanf("");
  const AudioSamples with_nan{samples.data(), samples.size()};
  try {
    log_mel.compute({&with_nan, 1}, features.data(), nullptr);
    FAIL() << "NaN accepted";
  } catch (const InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("index 42"), std::string::npos) << error.what();
  }
  WhisperFeatureOptions options;
  options.n_fft = 1;
  EXPECT_THROW(WhisperLogMel{options}, ConfigError);
  options = {};
  options.hop_length = 0;
  EXPECT_THROW(WhisperLogMel{options}, ConfigError);
}

// Writes mono float samples with libsndfile in `format`; false when this libsndfile cannot.
bool write_audio(const fs::path& path, const std::vector<float>& samples, int rate, int channels, int format) {
  SF_INFO info{};
  info.samplerate = rate;
  info.channels = channels;
  info.format = format;
  if (!sf_format_check(&info)) return false;
  SNDFILE* file = sf_open(path.c_str(), SFM_WRITE, &info);
  if (file == nullptr) return false;
  sf_writef_float(file, samples.data(), static_cast<sf_count_t>(samples.size() / channels));
  sf_close(file);
  return true;
}

fs::path temp_path(const std::string& name) {
  return fs::temp_directory_path() / ("qwen2audio_test_" + std::to_string(::getpid()) + "_" + name);
}

TEST(AudioFile, ResamplesAToneFaithfully) {
  // 1 kHz at 48 kHz stereo (the same tone in both channels) -> 16 kHz mono: the ideal result is known.
  const int rate = 48000, seconds = 1;
  std::vector<float> stereo(static_cast<size_t>(rate) * seconds * 2);
  for (int i = 0; i < rate * seconds; ++i)
    stereo[2 * i] = stereo[2 * i + 1] = 0.5f * std::sin(2.0 * std::numbers::pi * 1000.0 * i / rate);
  const fs::path path = temp_path("tone.wav");
  ASSERT_TRUE(write_audio(path, stereo, rate, 2, SF_FORMAT_WAV | SF_FORMAT_FLOAT));
  const std::vector<float> samples = load_audio_file(path.string());
  fs::remove(path);
  ASSERT_NEAR(static_cast<double>(samples.size()), 16000.0 * seconds, 1.0);
  double worst = 0.0;
  for (size_t i = 200; i + 200 < samples.size(); ++i)  // away from the filter's start-up at the edges
    worst = std::max(worst, std::abs(samples[i] - 0.5 * std::sin(2.0 * std::numbers::pi * 1000.0 * i / 16000.0)));
  EXPECT_LT(worst, 1e-4);
}

TEST(AudioFile, DecodesMp3) {
  std::vector<float> tone(16000 * 2);
  for (size_t i = 0; i < tone.size(); ++i) tone[i] = 0.3f * std::sin(2.0 * std::numbers::pi * 440.0 * i / 16000.0);
  const fs::path path = temp_path("tone.mp3");
  if (!write_audio(path, tone, 16000, 1, SF_FORMAT_MPEG | SF_FORMAT_MPEG_LAYER_III))
    GTEST_SKIP() << "this libsndfile cannot write MP3";
  const std::vector<float> from_file = load_audio_file(path.string());
  std::ifstream stream(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
  fs::remove(path);
  const std::vector<float> from_memory = load_audio_memory(bytes.data(), bytes.size());
  EXPECT_EQ(from_file, from_memory);
  // Lossy with an encoder delay: the same tone (its RMS), about the same length.
  EXPECT_NEAR(static_cast<double>(from_file.size()), static_cast<double>(tone.size()), 2400.0);
  double energy = 0.0;
  for (size_t i = 4000; i < 28000; ++i) energy += static_cast<double>(from_file[i]) * from_file[i];
  EXPECT_NEAR(std::sqrt(energy / 24000.0), 0.3 / std::sqrt(2.0), 0.01);
}

TEST(AudioFile, ErrorsNameTheSource) {
  const std::string garbage = "this is not an audio file at all, not even close";
  try {
    load_audio_memory(garbage.data(), garbage.size(), {}, "clip.bin");
    FAIL() << "garbage decoded";
  } catch (const InvalidArgument& error) {
    EXPECT_NE(std::string(error.what()).find("clip.bin"), std::string::npos) << error.what();
  }
  EXPECT_THROW(load_audio_file((fs::temp_directory_path() / "qwen2audio_no_such_file.wav").string()), InvalidArgument);
  AudioLoadOptions tight;
  tight.max_samples = 1000;
  EXPECT_THROW(load_audio_file((kReference / "audio" / "speech_en.wav").string(), tight), InvalidArgument);
}

}  // namespace
}  // namespace qwen2audio
