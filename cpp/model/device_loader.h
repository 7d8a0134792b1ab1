#pragma once

#include <memory>
#include <optional>
#include <string>

#include "model/device_model.h"

namespace qwen2audio {

// Where a model runs: the CPU, or CUDA device `index`.
struct DeviceName {
  bool cuda = false;
  int index = 0;
  std::string str() const { return cuda ? "cuda:" + std::to_string(index) : "cpu"; }
};

// "cpu", "cuda", "cuda:N" (torch's spelling); throws InvalidArgument otherwise.
DeviceName parse_device(const std::string& device);

// Opens the CUDA backend library and builds the model on device spec.device_index. The library is
// looked for at $QWEN2AUDIO_CUDA_LIBRARY, then beside the binary holding the engine (the Python
// module's folder, where the build puts it), then on the loader's path. Throws DeviceError saying
// what is missing: the library (a build without nvcc), the CUDA runtime, or a device.
std::unique_ptr<DeviceModel> load_cuda_model(const DeviceModelSpec& spec);
std::unique_ptr<DeviceLogMel> load_cuda_log_mel(const DeviceLogMelSpec& spec);

}  // namespace qwen2audio
