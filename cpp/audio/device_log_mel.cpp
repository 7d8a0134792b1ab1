#include "audio/device_log_mel.h"

#include <algorithm>
#include <vector>

#include "backend/device_loader.h"
#include "runtime/errors.h"

namespace qwen2audio {

DeviceWhisperLogMel::DeviceWhisperLogMel(const WhisperFeatureOptions& options, const std::string& device)
    : host_(std::make_unique<WhisperLogMel>(options)) {
  const DeviceName name = parse_device(device);
  if (!name.cuda) throw InvalidArgument("DeviceWhisperLogMel runs on 'cuda' or 'cuda:N', got '" + device + "'");
  DeviceLogMelSpec spec;
  spec.mel_bins = host_->num_mel_bins();
  spec.n_fft = options.n_fft;
  spec.hop_length = options.hop_length;
  spec.n_samples = host_->n_samples();
  spec.device_index = name.index;
  // Rounded to float as the CPU path (and transformers' torch path) use them.
  spec.filters.assign(host_->mel_filters().begin(), host_->mel_filters().end());
  device_ = load_cuda_log_mel(spec);
}

DeviceWhisperLogMel::~DeviceWhisperLogMel() = default;

void DeviceWhisperLogMel::compute(std::span<const AudioSamples> clips, float* features, int32_t* attention_mask) const {
  const int64_t total = host_->n_samples();
  const std::vector<int64_t> used = host_->checked_lengths(clips);
  std::vector<float> padded(clips.size() * static_cast<size_t>(total), 0.0f);
  for (size_t b = 0; b < clips.size(); ++b)
    std::copy_n(clips[b].data, used[b], padded.begin() + static_cast<int64_t>(b) * total);
  if (attention_mask) host_->frame_mask(used, attention_mask);
  device_->compute(padded.data(), static_cast<int64_t>(clips.size()), features);
}

}  // namespace qwen2audio
