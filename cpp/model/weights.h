#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/checkpoint.h"
#include "runtime/buffer.h"
#include "runtime/dtype.h"

namespace qwen2audio {

// A weight matrix [rows, cols], row-major: either a view into the memory-mapped checkpoint or a
// converted copy owned by the WeightStore that handed it out.
struct Matrix {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
};

// nn.Linear: y = x W^T + b, with W [out_features, in_features].
struct Linear {
  Matrix weight;
  const float* bias = nullptr;  // null when the layer has none
  int64_t out_features() const { return weight.rows; }
  int64_t in_features() const { return weight.cols; }
};

struct Norm {
  const float* weight = nullptr;
  const float* bias = nullptr;  // LayerNorm only
};

// Hands out the checkpoint's tensors in the form the kernels take. Matrices come in the compute
// dtype (F32 or BF16), zero-copy whenever the checkpoint already stores them so; everything small
// (norms, biases, positional table) comes as float32 copies.
class WeightStore {
 public:
  WeightStore(std::shared_ptr<const Checkpoint> checkpoint, DType matrix_dtype);

  DType matrix_dtype() const { return matrix_dtype_; }
  // A tensor of rank >= 2 viewed as [shape[0], product of the rest] (Conv1d weights included).
  Matrix matrix(const std::string& name);
  const float* floats(const std::string& name);
  Linear linear(const std::string& prefix, bool has_bias);
  Norm norm(const std::string& prefix, bool has_bias);

  size_t copied_bytes() const { return copied_bytes_; }
  size_t mapped_bytes() const { return mapped_bytes_; }

 private:
  std::shared_ptr<const Checkpoint> checkpoint_;
  DType matrix_dtype_;
  std::vector<Buffer<uint8_t>> owned_;
  size_t copied_bytes_ = 0;
  size_t mapped_bytes_ = 0;
};

}  // namespace qwen2audio
