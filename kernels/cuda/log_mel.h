#pragma once

// Whisper's log-mel spectrogram on the GPU, the same computation as cpp/audio/log_mel (and
// Hugging Face's WhisperFeatureExtractor): reflect-padded centred STFT (periodic Hann window,
// n_fft 400, hop 160) through cuFFT, power spectrum, mel filterbank (a GEMM), log10 clamped at
// 1e-10, floor at (clip maximum - 8), then (x + 4) / 4. The last STFT frame is dropped, so a clip
// of N samples gives N / hop frames.

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

namespace qwen2audio::kernels::cuda {

class LogMel {
 public:
  // filters: host float32 [mel_bins, n_fft / 2 + 1] (cpp/audio's filterbank). max_samples bounds
  // the clips compute() accepts; device buffers are sized for it once.
  LogMel(const float* filters, int64_t mel_bins, int64_t n_fft, int64_t hop_length, int64_t max_samples);
  ~LogMel();
  LogMel(const LogMel&) = delete;
  LogMel& operator=(const LogMel&) = delete;

  int64_t mel_bins() const;
  static int64_t frames(int64_t samples, int64_t hop_length) { return samples / hop_length; }

  // waveform: device float32 [samples] (samples <= max_samples, >= n_fft / 2 + 1 for the reflect
  // padding); out: device float32 [mel_bins, frames(samples)], row-major.
  void compute(const float* waveform, int64_t samples, float* out, cudaStream_t stream);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace qwen2audio::kernels::cuda
