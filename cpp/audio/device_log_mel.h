#pragma once

#include <memory>
#include <span>
#include <string>

#include "audio/log_mel.h"
#include "backend/device_log_mel.h"

namespace qwen2audio {

// WhisperLogMel's features computed on a GPU (the CUDA backend, opened on first use): same
// settings, same padding/truncation to chunk_length, same frame mask, same errors for empty clips
// and NaN samples. Calls are serialised; make one per thread for parallel feature extraction.
class DeviceWhisperLogMel {
 public:
  // device: "cuda" or "cuda:N". Throws DeviceError without a usable GPU or backend.
  DeviceWhisperLogMel(const WhisperFeatureOptions& options, const std::string& device);
  ~DeviceWhisperLogMel();

  const WhisperLogMel& reference() const { return *host_; }
  void compute(std::span<const AudioSamples> clips, float* features, int32_t* attention_mask) const;

 private:
  std::unique_ptr<WhisperLogMel> host_;  // settings and filters, shared with the CPU path
  std::unique_ptr<DeviceLogMel> device_;
};

}  // namespace qwen2audio
