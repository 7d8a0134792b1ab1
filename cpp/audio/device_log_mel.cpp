#include "audio/device_log_mel.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "model/device_loader.h"
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
  const int hop = host_->options().hop_length;
  const int frames = host_->num_frames();
  std::vector<float> padded(clips.size() * static_cast<size_t>(total), 0.0f);
  for (size_t b = 0; b < clips.size(); ++b) {
    if (clips[b].size == 0 || clips[b].data == nullptr)
      throw InvalidArgument("audio clip " + std::to_string(b) + " is empty");
    const int64_t used = std::min<int64_t>(static_cast<int64_t>(clips[b].size), total);
    for (int64_t i = 0; i < used; ++i)
      if (!std::isfinite(clips[b].data[i]))
        throw InvalidArgument("audio clip " + std::to_string(b) + " has a NaN or infinite sample (index " +
                              std::to_string(i) + ")");
    std::copy_n(clips[b].data, used, padded.begin() + static_cast<int64_t>(b) * total);
    if (attention_mask) {
      const int64_t valid = std::min<int64_t>((used + hop - 1) / hop, frames);
      std::fill_n(attention_mask + b * frames, frames, 0);
      std::fill_n(attention_mask + b * frames, valid, 1);
    }
  }
  device_->compute(padded.data(), static_cast<int64_t>(clips.size()), features);
}

}  // namespace qwen2audio
