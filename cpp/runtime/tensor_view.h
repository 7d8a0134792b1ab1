#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/dtype.h"

namespace qwen2audio {

// A non-owning, read-only view of a contiguous row-major tensor (for example one tensor inside a
// memory-mapped checkpoint). Whoever hands it out keeps the memory alive.
struct TensorView {
  const void* data = nullptr;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;

  int64_t numel() const {
    int64_t count = 1;
    for (int64_t extent : shape) count *= extent;
    return count;
  }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  int64_t dim(size_t axis) const { return shape.at(axis); }
  size_t rank() const { return shape.size(); }

  template <typename T>
  const T* as() const {
    return static_cast<const T*>(data);
  }
};

std::string shape_to_string(const std::vector<int64_t>& shape);

}  // namespace qwen2audio
