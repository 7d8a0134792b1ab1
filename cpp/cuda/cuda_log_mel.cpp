// Whisper's log-mel front end on the GPU behind the DeviceLogMel interface (backend/device_log_mel.h):
// the caller pads or truncates each clip; this uploads it, runs kernels/cuda/log_mel and brings the
// features back.

#include <cuda_runtime.h>

#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

#include "backend/device_log_mel.h"
#include "cuda/device_buffer.h"
#include "kernels/cuda/log_mel.h"

namespace qwen2audio::cuda_backend {
namespace {

class CudaLogMel final : public DeviceLogMel {
 public:
  explicit CudaLogMel(const DeviceLogMelSpec& spec) : spec_(spec) {
    usable_device(spec.device_index);
    if (static_cast<int64_t>(spec.filters.size()) != spec.mel_bins * (spec.n_fft / 2 + 1))
      throw std::invalid_argument("mel filters do not match mel_bins x (n_fft / 2 + 1)");
    check(cudaSetDevice(spec.device_index), "selecting the CUDA device");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "creating a CUDA stream");
    log_mel_ = std::make_unique<kernels::cuda::LogMel>(spec.filters.data(), spec.mel_bins, spec.n_fft, spec.hop_length,
                                                       spec.n_samples);
    frames_ = kernels::cuda::LogMel::frames(spec.n_samples, spec.hop_length);
    samples_.allocate(static_cast<size_t>(spec.n_samples), "audio samples");
    features_.allocate(static_cast<size_t>(spec.mel_bins * frames_), "log-mel features");
  }
  ~CudaLogMel() override {
    if (stream_) cudaStreamDestroy(stream_);
  }

  void compute(const float* samples, int64_t clips, float* out) override {
    std::lock_guard<std::mutex> lock(mutex_);
    check(cudaSetDevice(spec_.device_index), "selecting the CUDA device");
    const size_t per_clip = static_cast<size_t>(spec_.mel_bins * frames_);
    for (int64_t clip = 0; clip < clips; ++clip) {
      check(cudaMemcpyAsync(samples_.data(), samples + clip * spec_.n_samples,
                            static_cast<size_t>(spec_.n_samples) * sizeof(float), cudaMemcpyHostToDevice, stream_),
            "copying audio to the device");
      log_mel_->compute(samples_.data(), spec_.n_samples, features_.data(), stream_);
      check(cudaMemcpyAsync(out + clip * per_clip, features_.data(), per_clip * sizeof(float), cudaMemcpyDeviceToHost,
                            stream_),
            "copying log-mel features to the host");
    }
    check(cudaStreamSynchronize(stream_), "computing log-mel features");
  }

 private:
  DeviceLogMelSpec spec_;
  int64_t frames_ = 0;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<kernels::cuda::LogMel> log_mel_;
  DeviceBuffer<float> samples_, features_;
  std::mutex mutex_;
};

}  // namespace
}  // namespace qwen2audio::cuda_backend

extern "C" __attribute__((visibility("default"))) qwen2audio::DeviceLogMel* qwen2audio_create_cuda_log_mel(
    const qwen2audio::DeviceLogMelSpec& spec) {
  return new qwen2audio::cuda_backend::CudaLogMel(spec);
}
