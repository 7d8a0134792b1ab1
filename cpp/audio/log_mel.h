#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "kernels/cpu/real_dft.h"

namespace qwen2audio {

namespace kernels {
class LogFilterbank;
}  // namespace kernels

// transformers' audio_utils.mel_filter_bank with norm="slaney", mel_scale="slaney", computed in
// double as transformers does. Row-major [num_mel_filters][num_frequency_bins], i.e. the transpose
// of what transformers returns (the orientation the features are computed in).
std::vector<double> slaney_mel_filter_bank(int num_frequency_bins, int num_mel_filters, double min_frequency,
                                           double max_frequency, int sampling_rate);

// The settings of transformers' WhisperFeatureExtractor that shape the features (the names of its
// preprocessor_config.json); the defaults are Qwen2-Audio's.
struct WhisperFeatureOptions {
  int feature_size = 128;
  int sampling_rate = 16000;
  int hop_length = 160;
  int chunk_length = 30;  // seconds: every clip is padded or truncated to this
  int n_fft = 400;
  // Set (> 0): every clip is padded to this many samples instead of chunk_length seconds (Ultravox's
  // processor pads a batch to its longest clip, rounded up to a hop).
  int64_t padded_samples = 0;
};

struct AudioSamples {
  const float* data = nullptr;
  size_t size = 0;
};

// Whisper's log-mel front end, equal to transformers' WhisperFeatureExtractor as
// Qwen2AudioProcessor calls it (padding="max_length", truncation): each clip is zero-padded or
// truncated to chunk_length seconds; periodic Hann window, centered STFT with reflect padding,
// power spectrum, the last STFT frame dropped; slaney mel bank; log10 floored at 1e-10; per clip
// max(x, clip max - 8); (x + 4) / 4.
//
// Frames lying wholly in the zero padding have an all-zero spectrum, hence the floor value: their
// DFT is skipped, which is exact. Clips and frame groups run in parallel (OpenMP).
class WhisperLogMel {
 public:
  // `precision` and `isa` choose the DFT kernel's arithmetic and vector width (tests compare them).
  explicit WhisperLogMel(const WhisperFeatureOptions& options = {},
                         kernels::DftPrecision precision = kernels::DftPrecision::kDouble,
                         kernels::Isa isa = kernels::best_isa());
  ~WhisperLogMel();
  WhisperLogMel(const WhisperLogMel&) = delete;
  WhisperLogMel& operator=(const WhisperLogMel&) = delete;

  const WhisperFeatureOptions& options() const { return options_; }
  int64_t n_samples() const { return n_samples_; }
  int num_frames() const { return num_frames_; }
  int num_mel_bins() const { return options_.feature_size; }
  int num_frequency_bins() const { return options_.n_fft / 2 + 1; }
  // [num_mel_bins][num_frequency_bins], double as transformers computes it; the features use it
  // rounded to float, as transformers' torch path does.
  const std::vector<double>& mel_filters() const { return mel_filters_; }

  // features: [clips][num_mel_bins][num_frames] float32; attention_mask (may be null):
  // [clips][num_frames], 1 for the frames holding audio (ceil(min(size, n_samples) / hop_length)).
  // num_threads <= 0: OpenMP's default. Throws InvalidArgument for an empty clip or a NaN/Inf
  // sample within the first n_samples.
  void compute(std::span<const AudioSamples> clips, float* features, int32_t* attention_mask,
               int num_threads = 0) const;

  // The samples of each clip the features use (min(size, n_samples)), after checking that none is
  // empty or holds a NaN/Inf there (InvalidArgument naming the clip and index).
  std::vector<int64_t> checked_lengths(std::span<const AudioSamples> clips, int num_threads = 0) const;
  // attention_mask [clips][num_frames]: 1 for the frames holding audio, from checked_lengths().
  void frame_mask(std::span<const int64_t> used, int32_t* attention_mask) const;

 private:
  WhisperFeatureOptions options_;
  int64_t n_samples_;
  int num_frames_;
  std::vector<double> mel_filters_;
  std::unique_ptr<kernels::RealDftPower> dft_;
  std::unique_ptr<kernels::LogFilterbank> filterbank_;
};

}  // namespace qwen2audio
