#include "backend/device_loader.h"

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "runtime/errors.h"

namespace qwen2audio {
namespace {

constexpr const char* kLibraryName = "libqwen2audio_cuda.so";

// The folder of the binary this function was linked into (the _core module, a test executable).
std::filesystem::path engine_folder() {
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&engine_folder), &info) == 0 || info.dli_fname == nullptr) return {};
  std::error_code error;
  const std::filesystem::path binary = std::filesystem::canonical(info.dli_fname, error);
  return error ? std::filesystem::path{} : binary.parent_path();
}

// The library stays loaded for the life of the process: models built from it may outlive any one
// caller, and unloading code that other threads may still run is never safe.
void* open_backend() {
  static std::mutex mutex;
  static void* library = nullptr;
  std::lock_guard<std::mutex> lock(mutex);
  if (library != nullptr) return library;

  std::vector<std::string> candidates;
  if (const char* path = std::getenv("QWEN2AUDIO_CUDA_LIBRARY"); path != nullptr && *path != '\0')
    candidates.emplace_back(path);
  else {
    const std::filesystem::path folder = engine_folder();
    if (!folder.empty()) candidates.push_back((folder / kLibraryName).string());
    candidates.emplace_back(kLibraryName);
  }
  std::string failures;
  for (const std::string& candidate : candidates) {
    const bool bare_name = candidate.find('/') == std::string::npos;
    if (!bare_name && !std::filesystem::exists(candidate)) {
      failures += "\n  " + candidate + ": no such file";
      continue;
    }
    void* handle = dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      const char* reason = dlerror();
      failures += "\n  " + candidate + ": " + (reason ? reason : "dlopen failed");
      continue;
    }
    auto* entry = reinterpret_cast<backend::CreateOpsFunction>(dlsym(handle, QWEN2AUDIO_CUDA_OPS_ENTRY_POINT));
    if (entry == nullptr) {
      failures += "\n  " + candidate + ": not a qwen2audio CUDA backend (no " QWEN2AUDIO_CUDA_OPS_ENTRY_POINT ")";
      continue;
    }
    library = handle;
    return library;
  }
  throw DeviceError("device='cuda' needs qwen2audio's CUDA backend (" + std::string(kLibraryName) +
                    "), which could not be loaded. It is built when nvcc is found at build time (CMake option "
                    "QWEN2AUDIO_CUDA); its CUDA libraries (cuBLAS, cuFFT) must be on the loader's path. Tried:" +
                    failures);
}

template <typename Function>
Function entry_point(const char* name) {
  auto* entry = reinterpret_cast<Function>(dlsym(open_backend(), name));
  if (entry == nullptr) throw DeviceError(std::string("the CUDA backend library lacks ") + name + " (an older build?)");
  return entry;
}

// Backend failures arrive as standard exceptions: bad requests as invalid_argument, CUDA and
// cuBLAS errors (no device, out of device memory) as runtime_error.
template <typename Result, typename Make>
std::unique_ptr<Result> create_on_device(Make make, int device_index) {
  try {
    return std::unique_ptr<Result>(make());
  } catch (const DeviceError&) {
    throw;
  } catch (const CheckpointError&) {  // the engine's own errors, raised while setting up on the device
    throw;
  } catch (const ConfigError&) {
    throw;
  } catch (const std::invalid_argument& error) {
    throw InvalidArgument(error.what());
  } catch (const std::bad_alloc&) {
    throw DeviceError("out of host memory while setting up cuda:" + std::to_string(device_index));
  } catch (const std::exception& error) {
    throw DeviceError(error.what());
  }
}

}  // namespace

DeviceName parse_device(const std::string& device) {
  if (device == "cpu") return {};
  if (device == "cuda") return {true, 0};
  if (device.rfind("cuda:", 0) == 0 && device.size() > 5 && device.size() <= 8) {
    int index = 0;
    for (size_t i = 5; i < device.size(); ++i) {
      if (device[i] < '0' || device[i] > '9') index = -1;
      if (index >= 0) index = index * 10 + (device[i] - '0');
    }
    if (index >= 0) return {true, index};
  }
  throw InvalidArgument("device must be 'cpu', 'cuda' or 'cuda:N', got '" + device + "'");
}

std::unique_ptr<backend::Ops> load_cuda_ops(int index) {
  auto create = entry_point<backend::CreateOpsFunction>(QWEN2AUDIO_CUDA_OPS_ENTRY_POINT);
  return create_on_device<backend::Ops>([&] { return create(index); }, index);
}

void run_on_device(const std::function<void()>& work, int index) {
  create_on_device<int>(
      [&]() -> int* {
        work();
        return nullptr;
      },
      index);
}

std::unique_ptr<DeviceLogMel> load_cuda_log_mel(const DeviceLogMelSpec& spec) {
  auto create = entry_point<CreateDeviceLogMelFunction>(QWEN2AUDIO_CUDA_LOG_MEL_ENTRY_POINT);
  return create_on_device<DeviceLogMel>([&] { return create(spec); }, spec.device_index);
}

}  // namespace qwen2audio
