#pragma once

#include <stdexcept>
#include <string>

namespace qwen2audio {

// Each maps to a Python exception class deriving from ValueError (see cpp/bindings), so callers
// can catch precisely or broadly.
struct CheckpointError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// An accelerator that cannot be used: no CUDA backend in this build, no device, out of device
// memory. Surfaces as qwen2audio.DeviceError (a RuntimeError): the input is fine, the machine is not.
struct DeviceError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Bad arguments from the caller (shapes, ranges, counts): surfaces as a plain ValueError.
struct InvalidArgument : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

}  // namespace qwen2audio
