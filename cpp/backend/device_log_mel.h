#pragma once

// The seam between the engine's feature extraction and an accelerator's log-mel front end, built
// into the backend library (libqwen2audio_cuda.so) and opened only when a device is asked for.
// Header-only: virtual calls and plain data cross the boundary, so the backend links nothing of
// the engine and the engine links nothing of CUDA. (The model's own ops cross at backend/ops.h.)

#include <cstdint>
#include <vector>

namespace qwen2audio {

// Whisper's log-mel front end on a device (the processor's feature extraction).
struct DeviceLogMelSpec {
  std::vector<float> filters;  // [mel_bins, n_fft / 2 + 1], as cpp/audio's WhisperLogMel uses them
  int64_t mel_bins = 128;
  int64_t n_fft = 400;
  int64_t hop_length = 160;
  int64_t n_samples = 480000;  // every clip, padded or truncated by the caller
  int device_index = 0;
};

class DeviceLogMel {
 public:
  virtual ~DeviceLogMel() = default;
  // samples: host [clips, n_samples]; out: host [clips, mel_bins, n_samples / hop_length].
  virtual void compute(const float* samples, int64_t clips, float* out) = 0;
};

#define QWEN2AUDIO_CUDA_LOG_MEL_ENTRY_POINT "qwen2audio_create_cuda_log_mel"
using CreateDeviceLogMelFunction = DeviceLogMel* (*)(const DeviceLogMelSpec& spec);

}  // namespace qwen2audio
