#include "audio/log_mel.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numbers>
#include <string>

#include "kernels/cpu/filterbank.h"
#include "kernels/cpu/real_dft.h"
#include "runtime/errors.h"
#include "runtime/threads.h"

namespace qwen2audio {
namespace {

// transformers' clamp before log10 and the resulting value of silent frames.
constexpr float kMelFloor = 1e-10f;
// Whisper's dynamic range (decades below the clip's loudest value) and scaling.
constexpr float kDynamicRange = 8.0f;

double hertz_to_mel_slaney(double hertz) {
  constexpr double kMinLogHertz = 1000.0, kMinLogMel = 15.0;
  const double log_step = 27.0 / std::log(6.4);
  if (hertz >= kMinLogHertz) return kMinLogMel + std::log(hertz / kMinLogHertz) * log_step;
  return 3.0 * hertz / 200.0;
}

double mel_to_hertz_slaney(double mel) {
  constexpr double kMinLogHertz = 1000.0, kMinLogMel = 15.0;
  const double log_step = std::log(6.4) / 27.0;
  if (mel >= kMinLogMel) return kMinLogHertz * std::exp(log_step * (mel - kMinLogMel));
  return 200.0 * mel / 3.0;
}

// numpy.linspace, whose rounding the filter edges inherit: start + i * step, the end point exact.
std::vector<double> linspace(double start, double stop, int count) {
  std::vector<double> values(count);
  const double step = count > 1 ? (stop - start) / (count - 1) : 0.0;
  for (int i = 0; i < count; ++i) values[i] = i * step + start;
  if (count > 1) values[count - 1] = stop;
  return values;
}

struct AlignedFree {
  void operator()(float* pointer) const { std::free(pointer); }
};
using AlignedFloats = std::unique_ptr<float[], AlignedFree>;

AlignedFloats aligned_floats(size_t count) {
  const size_t bytes = (count * sizeof(float) + 63) / 64 * 64;
  auto* pointer = static_cast<float*>(std::aligned_alloc(64, std::max<size_t>(bytes, 64)));
  if (pointer == nullptr) throw std::bad_alloc();
  return AlignedFloats(pointer);
}

// Index of the first NaN or Inf among the first `count` samples, or -1. The bit test vectorizes;
// the position is only searched for when there is one.
int64_t first_non_finite(const float* samples, size_t count) {
  uint32_t any = 0;
  for (size_t i = 0; i < count; ++i) {
    uint32_t bits;
    std::memcpy(&bits, samples + i, sizeof(bits));
    any |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  if (any == 0) return -1;
  for (size_t i = 0; i < count; ++i)
    if (!std::isfinite(samples[i])) return static_cast<int64_t>(i);
  return -1;
}

}  // namespace

std::vector<double> slaney_mel_filter_bank(int num_frequency_bins, int num_mel_filters, double min_frequency,
                                           double max_frequency, int sampling_rate) {
  if (num_frequency_bins < 2 || num_mel_filters < 1 || sampling_rate <= 0)
    throw InvalidArgument("mel filter bank needs >= 2 frequency bins, >= 1 filter and a positive sampling rate");
  if (!(min_frequency >= 0.0) || !(max_frequency > min_frequency))
    throw InvalidArgument("mel filter bank needs 0 <= min_frequency < max_frequency");
  // As transformers: the FFT bin frequencies use the integer Nyquist (sampling_rate // 2).
  const std::vector<double> fft_freqs = linspace(0.0, static_cast<double>(sampling_rate / 2), num_frequency_bins);
  std::vector<double> filter_freqs =
      linspace(hertz_to_mel_slaney(min_frequency), hertz_to_mel_slaney(max_frequency), num_mel_filters + 2);
  for (double& frequency : filter_freqs) frequency = mel_to_hertz_slaney(frequency);

  std::vector<double> bank(static_cast<size_t>(num_mel_filters) * num_frequency_bins);
  for (int m = 0; m < num_mel_filters; ++m) {
    const double lower = filter_freqs[m], center = filter_freqs[m + 1], upper = filter_freqs[m + 2];
    // Slaney normalisation: each triangle has unit area in Hz, so channels carry equal energy.
    const double area_norm = 2.0 / (upper - lower);
    for (int k = 0; k < num_frequency_bins; ++k) {
      const double down = -(lower - fft_freqs[k]) / (center - lower);
      const double up = (upper - fft_freqs[k]) / (upper - center);
      bank[static_cast<size_t>(m) * num_frequency_bins + k] = std::max(0.0, std::min(down, up)) * area_norm;
    }
  }
  return bank;
}

WhisperLogMel::WhisperLogMel(const WhisperFeatureOptions& options, kernels::DftPrecision precision, kernels::Isa isa)
    : options_(options) {
  const auto fail = [](const std::string& what) { throw ConfigError("WhisperFeatureExtractor settings: " + what); };
  if (options.feature_size < 1 || options.feature_size > 4096)
    fail("feature_size must be in 1..4096, got " + std::to_string(options.feature_size));
  if (options.sampling_rate < 1 || options.sampling_rate > 1'000'000)
    fail("sampling_rate must be in 1..1000000, got " + std::to_string(options.sampling_rate));
  if (options.n_fft < 2 || options.n_fft > 65536)
    fail("n_fft must be in 2..65536, got " + std::to_string(options.n_fft));
  if (options.hop_length < 1 || options.hop_length > options.n_fft * 16)
    fail("hop_length must be in 1..16*n_fft, got " + std::to_string(options.hop_length));
  if (options.chunk_length < 1 || options.chunk_length > 3600)
    fail("chunk_length must be in 1..3600 seconds, got " + std::to_string(options.chunk_length));
  n_samples_ = static_cast<int64_t>(options.chunk_length) * options.sampling_rate;
  if (options.padded_samples < 0 || options.padded_samples > n_samples_ * 120)
    fail("padded_samples must be in 0..120 * chunk_length * sampling_rate, got " +
         std::to_string(options.padded_samples));
  if (options.padded_samples > 0) n_samples_ = options.padded_samples;
  // torch.stft's reflect padding needs the signal longer than half a window.
  if (n_samples_ <= options.n_fft / 2) fail("chunk_length * sampling_rate must exceed n_fft / 2");
  if (n_samples_ / options.hop_length > std::numeric_limits<int32_t>::max() / 2) fail("too many frames");
  num_frames_ = static_cast<int>(n_samples_ / options.hop_length);
  // Whisper's settings give 128 x 3000 features per clip and a 128 x 201 filter bank; these caps
  // (1 GiB of features per clip, 128 MiB of filters) only stop a typo from asking for terabytes.
  if (static_cast<int64_t>(options.feature_size) * num_frames_ > (int64_t{1} << 28))
    fail("feature_size * frames per clip is over 2^28; lower chunk_length or raise hop_length");
  if (static_cast<int64_t>(options.feature_size) * (options.n_fft / 2 + 1) > (int64_t{1} << 24))
    fail("feature_size * (n_fft / 2 + 1) is over 2^24; lower feature_size or n_fft");

  mel_filters_ = slaney_mel_filter_bank(num_frequency_bins(), options.feature_size, 0.0, 8000.0, options.sampling_rate);
  const std::vector<float> filters_float(mel_filters_.begin(), mel_filters_.end());

  // torch.hann_window (periodic): 0.5 - 0.5 cos(2 pi n / N).
  std::vector<float> window(options.n_fft);
  for (int n = 0; n < options.n_fft; ++n)
    window[n] = static_cast<float>(0.5 - 0.5 * std::cos(2.0 * std::numbers::pi * n / options.n_fft));
  dft_ = std::make_unique<kernels::RealDftPower>(options.n_fft, window, precision, isa);
  filterbank_ = std::make_unique<kernels::LogFilterbank>(filters_float.data(), options.feature_size,
                                                         num_frequency_bins(), kMelFloor, dft_->lanes());
}

WhisperLogMel::~WhisperLogMel() = default;

void WhisperLogMel::compute(std::span<const AudioSamples> clips, float* features, int32_t* attention_mask,
                            int num_threads) const {
  const int64_t total = n_samples_;
  const int hop = options_.hop_length, n_fft = options_.n_fft, pad = options_.n_fft / 2;
  const int mels = options_.feature_size, frames = num_frames_, lanes = dft_->lanes();
  const int groups = (frames + lanes - 1) / lanes;
  const size_t clip_floats = static_cast<size_t>(mels) * frames;
  const auto clip_count = static_cast<int64_t>(clips.size());

  const int threads = num_threads > 0 ? std::min(num_threads, 4096) : default_num_threads();
  const std::vector<int64_t> used = checked_lengths(clips, threads);

  const float floor_log = std::log10(kMelFloor);
  const int64_t items = clip_count * groups;
  std::vector<float> item_max(static_cast<size_t>(items));
  const int64_t chunk_length = static_cast<int64_t>(lanes - 1) * hop + n_fft;
  // Per-thread scratch, allocated here so an allocation failure throws in the caller's thread
  // rather than inside the parallel region. Each part is rounded to 64-byte lines.
  const auto lines = [](size_t floats) { return (floats + 15) / 16 * 16; };
  const size_t workspace_floats = lines(dft_->workspace_bytes() / sizeof(float) + 1);
  const size_t power_floats = lines(static_cast<size_t>(dft_->num_bins()) * lanes);
  const size_t thread_floats = workspace_floats + power_floats + lines(static_cast<size_t>(chunk_length));
  const AlignedFloats scratch = aligned_floats(thread_floats * threads);

#pragma omp parallel num_threads(threads)
  {
    float* const workspace = scratch.get() + thread_floats * omp_get_thread_num();
    float* const power = workspace + workspace_floats;
    float* const chunk = power + power_floats;
#pragma omp for schedule(dynamic, 4)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t b = item / groups;
      const int first_frame = static_cast<int>(item % groups) * lanes;
      const int count = std::min(lanes, frames - first_frame);
      float* out = features + b * clip_floats + first_frame;
      // Positions in the reflect-padded signal (sample index + pad) this group's stored frames read.
      const int64_t lo = static_cast<int64_t>(first_frame) * hop;
      const int64_t hi = lo + static_cast<int64_t>(count - 1) * hop + n_fft;
      const int64_t n = used[b];
      // Nonzero padded positions: [0, n + pad) (the left reflection included) and the right
      // reflection of the last samples, past 2 (total - 1) - n + pad.
      const bool silent = lo >= n + pad && hi - 1 <= 2 * (total - 1) - n + pad;
      if (silent) {
        for (int m = 0; m < mels; ++m) std::fill_n(out + static_cast<size_t>(m) * frames, count, floor_log);
        item_max[item] = floor_log;
        continue;
      }
      const float* samples = clips[b].data;
      const float* source;
      if (lo - pad >= 0 && lo + chunk_length - pad <= n) {
        source = samples + (lo - pad);  // the common case: every lane lies inside the audio
      } else {
        // Edges: materialise the padded signal for this group (zeros past the audio, reflections
        // at both ends of the total-length signal).
        for (int64_t j = 0; j < chunk_length; ++j) {
          int64_t index = lo + j - pad;
          if (index < 0) index = -index;
          if (index >= total) index = 2 * (total - 1) - index;
          chunk[j] = index >= 0 && index < n ? samples[index] : 0.0f;
        }
        source = chunk;
      }
      dft_->compute(source, hop, power, workspace);
      item_max[item] = filterbank_->compute(power, out, frames, count);
    }
  }

#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t row = 0; row < clip_count * mels; ++row) {
    const int64_t b = row / mels;
    const float* maxima = item_max.data() + b * groups;
    const float clip_max = *std::max_element(maxima, maxima + groups);
    const float lowest = clip_max - kDynamicRange;
    float* values = features + b * clip_floats + static_cast<size_t>(row % mels) * frames;
    for (int f = 0; f < frames; ++f) values[f] = (std::max(values[f], lowest) + 4.0f) * 0.25f;
  }

  if (attention_mask != nullptr) frame_mask(used, attention_mask);
}

std::vector<int64_t> WhisperLogMel::checked_lengths(std::span<const AudioSamples> clips, int num_threads) const {
  const auto clip_count = static_cast<int64_t>(clips.size());
  const int threads = num_threads > 0 ? std::min(num_threads, 4096) : default_num_threads();
  std::vector<int64_t> used(clips.size());
  for (int64_t b = 0; b < clip_count; ++b) {
    if (clips[b].size == 0 || clips[b].data == nullptr)
      throw InvalidArgument("audio clip " + std::to_string(b) + " is empty");
    used[b] = std::min<int64_t>(static_cast<int64_t>(clips[b].size), n_samples_);
  }
  // The scan reads every sample once, so it runs in parallel too; the first bad clip is reported.
  std::vector<int64_t> bad(clips.size());
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t b = 0; b < clip_count; ++b) bad[b] = first_non_finite(clips[b].data, static_cast<size_t>(used[b]));
  for (int64_t b = 0; b < clip_count; ++b)
    if (bad[b] >= 0)
      throw InvalidArgument("audio clip " + std::to_string(b) + " has a NaN or infinite sample (index " +
                            std::to_string(bad[b]) + ")");
  return used;
}

void WhisperLogMel::frame_mask(std::span<const int64_t> used, int32_t* attention_mask) const {
  const int hop = options_.hop_length, frames = num_frames_;
  for (size_t b = 0; b < used.size(); ++b) {
    const int64_t valid = std::min<int64_t>((used[b] + hop - 1) / hop, frames);
    int32_t* mask = attention_mask + b * frames;
    std::fill(mask, mask + valid, 1);
    std::fill(mask + valid, mask + frames, 0);
  }
}

}  // namespace qwen2audio
