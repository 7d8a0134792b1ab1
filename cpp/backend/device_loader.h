#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "backend/device_log_mel.h"
#include "backend/ops.h"

namespace qwen2audio {

// Where a model runs: the CPU, or CUDA device `index`.
struct DeviceName {
  bool cuda = false;
  int index = 0;
  std::string str() const { return cuda ? "cuda:" + std::to_string(index) : "cpu"; }
};

// "cpu", "cuda", "cuda:N" (torch's spelling); throws InvalidArgument otherwise.
DeviceName parse_device(const std::string& device);

// Opens the CUDA backend library and makes its ops on CUDA device `index`. The library is looked
// for at $QWEN2AUDIO_CUDA_LIBRARY, then beside the binary holding the engine (the Python module's
// folder, where the build puts it), then on the loader's path. Throws DeviceError saying what is
// missing: the library (a build without nvcc), the CUDA runtime, or a device.
std::unique_ptr<backend::Ops> load_cuda_ops(int index);
// Runs `work` (a model's setup over a device's ops), translating the backend's errors as loading
// does: bad requests to InvalidArgument, device failures (out of memory, CUDA errors) to DeviceError.
void run_on_device(const std::function<void()>& work, int index);
std::unique_ptr<DeviceLogMel> load_cuda_log_mel(const DeviceLogMelSpec& spec);

}  // namespace qwen2audio
