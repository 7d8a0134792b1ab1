#pragma once

// The seam between the engine and an accelerator backend built as its own shared library
// (libqwen2audio_cuda.so) and opened only when a model is loaded onto a device. Everything here is
// header-only: virtual calls and plain data cross the boundary, so the backend links nothing of
// the engine and the engine links nothing of CUDA.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "io/config.h"
#include "model/interrupt.h"
#include "runtime/dtype.h"
#include "runtime/tensor_view.h"

namespace qwen2audio {

struct DeviceModelSpec {
  Qwen2AudioConfig config;
  // The tensor of that name (exact HF name), BF16 or F32, in host memory (the mmap'd file, or a
  // converted copy kept alive while the backend loads); throws when absent. Called while loading.
  std::function<TensorView(const std::string& name)> tensor;
  int device_index = 0;
};

// One session's keys, values and working memory on the device. Sized for `capacity` tokens per
// row; growth keeps what is stored.
class DeviceState {
 public:
  virtual ~DeviceState() = default;
  virtual void reserve(int64_t capacity, int64_t keep_length) = 0;
  virtual size_t cache_bytes() const = 0;
};

// The model on a device. Thread safety as the CPU model: any number of sessions (each with its own
// DeviceState) may run at once; encoder calls are serialised inside.
class DeviceModel {
 public:
  virtual ~DeviceModel() = default;
  virtual std::string description() const = 0;  // e.g. "cuda:0 (NVIDIA H100 80GB HBM3)"
  virtual size_t weight_bytes() const = 0;      // device memory the weights take

  // The encoder's last hidden state. features: host [clips, mel_bins, input_frames];
  // mel_frames[c]: clip c's valid frames; out: host [clips, output_frames, d_model].
  virtual void encode(const float* features, const int64_t* mel_frames, int64_t clips, float* out,
                      const Interrupt& interrupt) = 0;
  // Encoder and projector: the first counts[c] audio tokens of each clip, clip after clip, as
  // host [sum of counts, hidden_size].
  virtual void audio_embeddings(const float* features, const int64_t* mel_frames, const int64_t* counts, int64_t clips,
                                float* out, const Interrupt& interrupt) = 0;

  virtual std::unique_ptr<DeviceState> make_state(int64_t batch, int64_t capacity) = 0;

  // The decoder over `steps` new tokens per row: embeddings host [batch * steps, hidden] (row
  // b * steps + t), positions host [batch * steps], key_mask host [batch, mask_stride] valid for
  // slots [0, start + steps). Stores the new keys and values in slots [start, start + steps).
  // logits: host float32, [batch * steps, vocab] when all_positions, else the last step of each
  // row, [batch, vocab].
  virtual void decode(DeviceState& state, const float* embeddings, int64_t batch, int64_t steps,
                      const int64_t* positions, const uint8_t* key_mask, int64_t mask_stride, int64_t start,
                      float* logits, bool all_positions, const Interrupt& interrupt) = 0;
};

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

// The backend library's model entry point; it returns a model it allocated (the caller owns it)
// or throws std::runtime_error / std::invalid_argument naming the problem.
#define QWEN2AUDIO_CUDA_ENTRY_POINT "qwen2audio_create_cuda_model"
using CreateDeviceModelFunction = DeviceModel* (*)(const DeviceModelSpec& spec);

}  // namespace qwen2audio
