#include "io/audio_file.h"

#include <sndfile.h>
#include <soxr.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <memory>

#include "runtime/errors.h"

namespace qwen2audio {
namespace {

// Frames decoded per read: bounds the interleaved buffer whatever the file's length.
constexpr sf_count_t kBlockFrames = 1 << 16;
// Floats each per-block buffer (interleaved input, resampled output) may hold: a header's channel
// count and rate must not size a buffer of gigabytes from a file of a few bytes.
constexpr double kBlockSamples = 1 << 20;
// libsndfile supports up to 1024 channels; more in a header means a corrupt file.
constexpr int kMaxChannels = 1024;
constexpr int kMaxRate = 1'000'000;
// Real conversions (8 kHz -> 16 kHz, 192 kHz -> 16 kHz) are far inside this; a file claiming a
// rate of a few Hz would make the resampler's work and buffers grow with the ratio.
constexpr double kMaxRateRatio = 256;

struct SndfileCloser {
  void operator()(SNDFILE* file) const { sf_close(file); }
};
using Sndfile = std::unique_ptr<SNDFILE, SndfileCloser>;

struct SoxrDeleter {
  void operator()(soxr_t resampler) const { soxr_delete(resampler); }
};
using Resampler = std::unique_ptr<std::remove_pointer_t<soxr_t>, SoxrDeleter>;

// An encoded file in memory, read through libsndfile's virtual I/O.
struct MemoryFile {
  const unsigned char* data;
  sf_count_t size;
  sf_count_t position;
};

sf_count_t memory_length(void* user) { return static_cast<MemoryFile*>(user)->size; }

sf_count_t memory_seek(sf_count_t offset, int whence, void* user) {
  auto* file = static_cast<MemoryFile*>(user);
  sf_count_t target = offset;
  if (whence == SEEK_CUR) target += file->position;
  if (whence == SEEK_END) target += file->size;
  if (target < 0 || target > file->size) return -1;
  file->position = target;
  return target;
}

sf_count_t memory_read(void* destination, sf_count_t count, void* user) {
  auto* file = static_cast<MemoryFile*>(user);
  const sf_count_t available = std::clamp<sf_count_t>(file->size - file->position, 0, count);
  std::memcpy(destination, file->data + file->position, static_cast<size_t>(available));
  file->position += available;
  return available;
}

sf_count_t memory_write(const void*, sf_count_t, void*) { return 0; }

sf_count_t memory_tell(void* user) { return static_cast<MemoryFile*>(user)->position; }

[[noreturn]] void fail(const std::string& name, const std::string& what) {
  throw InvalidArgument("cannot load audio " + name + ": " + what);
}

std::vector<float> decode(SNDFILE* raw_file, const SF_INFO& info, const AudioLoadOptions& options,
                          const std::string& name) {
  Sndfile file(raw_file);
  if (options.sampling_rate < 1 || options.sampling_rate > kMaxRate)
    throw InvalidArgument("sampling_rate must be in 1.." + std::to_string(kMaxRate) + ", got " +
                          std::to_string(options.sampling_rate));
  if (options.max_samples < 1) throw InvalidArgument("max_samples must be positive");
  if (info.channels < 1 || info.channels > kMaxChannels)
    fail(name, "invalid channel count " + std::to_string(info.channels));
  if (info.samplerate < 1 || info.samplerate > kMaxRate)
    fail(name, "invalid sample rate " + std::to_string(info.samplerate));
  if (info.frames <= 0) fail(name, "the file holds no audio samples");
  const double ratio = static_cast<double>(options.sampling_rate) / info.samplerate;
  if (ratio > kMaxRateRatio || ratio < 1 / kMaxRateRatio)
    fail(name, "its sample rate of " + std::to_string(info.samplerate) + " Hz is too far from " +
                   std::to_string(options.sampling_rate) + " Hz to resample (more than a factor " +
                   std::to_string(static_cast<int>(kMaxRateRatio)) + ")");
  const auto too_long = [&](double output_samples) {
    return output_samples > static_cast<double>(options.max_samples);
  };
  const auto length_error = [&]() {
    fail(name, "longer than the limit of " + std::to_string(options.max_samples) + " samples at " +
                   std::to_string(options.sampling_rate) + " Hz (" +
                   std::to_string(options.max_samples / options.sampling_rate) + " s); raise max_seconds to load it");
  };
  // Some formats (e.g. MP3 streams) report an unknown length as SF_COUNT_MAX; the check while
  // decoding covers them.
  if (info.frames != SF_COUNT_MAX && too_long(std::floor(info.frames * ratio))) length_error();

  Resampler resampler;
  if (info.samplerate != options.sampling_rate) {
    soxr_error_t error = nullptr;
    const soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
    const soxr_quality_spec_t quality = soxr_quality_spec(SOXR_HQ, 0);
    resampler.reset(soxr_create(info.samplerate, options.sampling_rate, 1, &error, &io, &quality, nullptr));
    if (error != nullptr || !resampler) fail(name, std::string("cannot set up resampling: ") + soxr_strerror(error));
  }

  const auto block_frames = static_cast<sf_count_t>(
      std::clamp(kBlockSamples / (info.channels * std::max(1.0, ratio)), 64.0, static_cast<double>(kBlockFrames)));
  std::vector<float> interleaved(static_cast<size_t>(block_frames) * info.channels);
  std::vector<float> mono(static_cast<size_t>(block_frames));
  std::vector<float> resampled(static_cast<size_t>(std::ceil(block_frames * ratio)) + 64);
  std::vector<float> output;
  // The header's length is only a hint (a corrupt one may claim far more than the file holds), so
  // the up-front reservation is capped; longer audio grows the vector as it decodes.
  if (info.frames != SF_COUNT_MAX)
    output.reserve(static_cast<size_t>(std::min(std::ceil(info.frames * ratio) + 64, double{1 << 24})));

  // Pushes `count` mono samples (count 0 with `input` null: end of input) through the resampler.
  const auto resample = [&](const float* input, size_t count) {
    size_t consumed = 0;
    do {
      size_t used = 0, produced = 0;
      const soxr_error_t error = soxr_process(resampler.get(), input == nullptr ? nullptr : input + consumed,
                                              count - consumed, &used, resampled.data(), resampled.size(), &produced);
      if (error != nullptr) fail(name, std::string("resampling failed: ") + soxr_strerror(error));
      consumed += used;
      output.insert(output.end(), resampled.begin(), resampled.begin() + static_cast<std::ptrdiff_t>(produced));
      if (too_long(static_cast<double>(output.size()))) length_error();
      // At end of input, the resampler drains its delay line over as many calls as needed.
      if (input == nullptr && produced == 0) break;
      if (input != nullptr && used == 0 && produced == 0) fail(name, "resampling made no progress");
    } while (input == nullptr || consumed < count);
  };

  for (;;) {
    const sf_count_t got = sf_readf_float(file.get(), interleaved.data(), block_frames);
    if (got <= 0) break;
    const float* samples = interleaved.data();
    if (info.channels > 1) {
      // Downmix by averaging, as sox -c 1 and most tools do: a full-scale tone in one channel
      // comes out at half scale rather than clipping.
      const float scale = 1.0f / static_cast<float>(info.channels);
      for (sf_count_t frame = 0; frame < got; ++frame) {
        float sum = 0.0f;
        for (int channel = 0; channel < info.channels; ++channel) sum += samples[frame * info.channels + channel];
        mono[frame] = sum * scale;
      }
      samples = mono.data();
    }
    if (resampler) {
      resample(samples, static_cast<size_t>(got));
    } else {
      output.insert(output.end(), samples, samples + got);
      if (too_long(static_cast<double>(output.size()))) length_error();
    }
  }
  if (sf_error(file.get()) != SF_ERR_NO_ERROR) fail(name, std::string("decoding failed: ") + sf_strerror(file.get()));
  if (resampler) resample(nullptr, 0);
  if (output.empty()) fail(name, "the file holds no audio samples");
  for (size_t i = 0; i < output.size(); ++i)
    if (!std::isfinite(output[i])) fail(name, "sample " + std::to_string(i) + " is NaN or infinite");
  return output;
}

}  // namespace

std::vector<float> load_audio_file(const std::string& path, const AudioLoadOptions& options) {
  // libsndfile would block forever opening a FIFO with no writer; devices and folders are no
  // audio files either.
  std::error_code error;
  if (std::filesystem::exists(path, error) && !std::filesystem::is_regular_file(path, error))
    fail("'" + path + "'", "not a regular file");
  SF_INFO info{};
  SNDFILE* file = sf_open(path.c_str(), SFM_READ, &info);
  const std::string name = "'" + path + "'";
  if (file == nullptr) fail(name, sf_strerror(nullptr));
  return decode(file, info, options, name);
}

std::vector<float> load_audio_memory(const void* data, size_t size, const AudioLoadOptions& options,
                                     const std::string& name) {
  if (size == 0) fail(name, "no bytes given");
  MemoryFile memory{static_cast<const unsigned char*>(data), static_cast<sf_count_t>(size), 0};
  SF_VIRTUAL_IO io{memory_length, memory_seek, memory_read, memory_write, memory_tell};
  SF_INFO info{};
  SNDFILE* file = sf_open_virtual(&io, SFM_READ, &info, &memory);
  if (file == nullptr) fail(name, sf_strerror(nullptr));
  return decode(file, info, options, name);
}

}  // namespace qwen2audio
