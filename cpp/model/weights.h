#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "io/checkpoint.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/quantized_gemm.h"
#include "model/weight_layout.h"
#include "runtime/buffer.h"
#include "runtime/dtype.h"

namespace qwen2audio {

struct QuantizationConfig;

// A weight matrix [rows, cols], row-major: either a view into the memory-mapped checkpoint or a
// converted copy owned by the WeightStore that handed it out.
struct Matrix {
  const void* data = nullptr;
  DType dtype = DType::F32;  // F32, BF16; I8 (int8 codes) or U8 (packed int4 codes) when quantized
  int64_t rows = 0;
  int64_t cols = 0;
  // Weight-only quantization (model/quantization.h): float32 scales [rows, groups of group_size].
  const float* scales = nullptr;
  int64_t group_size = 0;
  bool quantized() const { return scales != nullptr; }
};

// The kernels' view of a matrix of any storage.
kernels::WeightMatrix weight_view(const Matrix& matrix);

// nn.Linear for the kernels (kernels/cpu/linear.h): every projection of the model is one.
using Linear = kernels::Linear;

struct Norm {
  const float* weight = nullptr;
  const float* bias = nullptr;  // LayerNorm only
};

// Hands out the checkpoint's tensors in the form the kernels take. Matrices come in the compute
// dtype (F32 or BF16), zero-copy whenever the checkpoint already stores them so; everything small
// (norms, biases, positional table) comes as float32 copies.
//
// Modules ask for their tensors by name and with the shape their config gives them. A store made
// without a checkpoint hands out nothing (null data, the asked shapes) and records every request:
// a family's modules built over it give the tensors its checkpoints must hold (requested(), what
// check_weights compares with what a checkpoint has), so no second list of names exists.
class WeightStore {
 public:
  WeightStore(std::shared_ptr<const Checkpoint> checkpoint, DType matrix_dtype);
  explicit WeightStore(DType matrix_dtype);  // records requests
  const std::vector<ExpectedTensor>& requested() const { return requested_; }

  DType matrix_dtype() const { return matrix_dtype_; }
  // A tensor of rank >= 2 viewed as [shape[0], product of the rest] (Conv1d weights included).
  Matrix matrix(const std::string& name, const std::vector<int64_t>& shape);
  const float* floats(const std::string& name, const std::vector<int64_t>& shape);
  // weight_shape: the weight's, [out_features, in_features] (or a convolution's [out, in, kernel]).
  // Quantized (model/quantization.h) where set_quantization()'s config applies to `role`.
  Linear linear(const std::string& prefix, bool has_bias, const std::vector<int64_t>& weight_shape,
                QuantizationRole role = QuantizationRole::Never);
  // A Linear over a matrix already handed out (the output head tied to the embedding).
  Linear linear_of(const Matrix& matrix, const float* bias = nullptr) const;
  Norm norm(const std::string& prefix, bool has_bias, int64_t width);

  // `panels`: quantized layers are repacked into the panel layout of the integer kernels
  // (kernels/cpu/quantized_gemm.h) once loaded.
  void set_quantization(const QuantizationConfig& config, bool panels = false);
  const QuantizationConfig& quantization() const { return *quantization_; }
  // Every quantized layer handed out so far, by prefix, as the kernels read it (save_pretrained
  // writes them, in the Rows layout a checkpoint stores).
  struct QuantizedLayer {
    std::string prefix;
    kernels::WeightMatrix weight;
    int64_t rows = 0;
    int64_t cols = 0;
  };
  const std::vector<QuantizedLayer>& quantized_layers() const { return quantized_layers_; }

  size_t copied_bytes() const { return copied_bytes_; }
  size_t mapped_bytes() const { return mapped_bytes_; }

 private:
  std::shared_ptr<const Checkpoint> checkpoint_;
  DType matrix_dtype_;
  std::vector<Buffer<uint8_t>> owned_;
  size_t copied_bytes_ = 0;
  size_t mapped_bytes_ = 0;
  std::shared_ptr<const QuantizationConfig> quantization_;
  std::vector<QuantizedLayer> quantized_layers_;
  bool panels_ = false;
  std::vector<kernels::PackedPanels> packed_;
  bool recording_ = false;
  std::vector<ExpectedTensor> requested_;
};

}  // namespace qwen2audio
