#pragma once

// Device memory owned RAII-style, the error check every CUDA runtime call goes through, and the
// device check every backend object starts with.

#include <cuda_runtime.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>

namespace qwen2audio::cuda_backend {

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("CUDA error while ") + what + ": " + cudaGetErrorString(status));
}

// Checks that CUDA device `index` exists and makes it current; throws runtime_error when no GPU is
// usable (no driver, too old a driver, none present) and invalid_argument for an index past the last.
inline int usable_device(int index) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0)
    throw std::runtime_error(std::string("no CUDA device is usable: ") +
                             (status == cudaSuccess ? "none found" : cudaGetErrorString(status)));
  if (index < 0 || index >= count)
    throw std::invalid_argument("device cuda:" + std::to_string(index) + " asked for, but this machine has " +
                                std::to_string(count) + " CUDA device(s)");
  check(cudaSetDevice(index), "selecting the CUDA device");
  return index;
}

template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { release(); }

  // Exactly `count` elements, contents undefined; `what` names the use in an out-of-memory error.
  void allocate(size_t count, const char* what) {
    release();
    if (count == 0) return;
    void* pointer = nullptr;
    const cudaError_t status = cudaMalloc(&pointer, count * sizeof(T));
    if (status != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free error so later calls are not blamed for it
      throw std::runtime_error("CUDA could not allocate " + std::to_string(count * sizeof(T) >> 20) + " MiB for " +
                               what + ": " + cudaGetErrorString(status));
    }
    data_ = static_cast<T*>(pointer);
    size_ = count;
  }

  // At least `count` elements; grows (dropping the contents) only when the buffer is smaller, so a
  // buffer reused across calls allocates only for a larger call.
  T* reserve(size_t count, const char* what) {
    if (count > size_) allocate(count, what);
    return data_;
  }

  T* data() const { return data_; }
  size_t size() const { return size_; }
  size_t bytes() const { return size_ * sizeof(T); }

 private:
  void release() {
    if (data_ != nullptr) cudaFree(data_);
    data_ = nullptr;
    size_ = 0;
  }

  T* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace qwen2audio::cuda_backend
