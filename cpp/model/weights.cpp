#include "model/weights.h"

#include <cstring>

#include "model/quantization.h"
#include "runtime/errors.h"

namespace qwen2audio {
namespace {

float element_as_float(const TensorView& view, int64_t index) {
  switch (view.dtype) {
    case DType::F32:
      return view.as<float>()[index];
    case DType::BF16:
      return bf16_to_float(view.as<uint16_t>()[index]);
    case DType::F16:
      return f16_to_float(view.as<uint16_t>()[index]);
    default:
      throw CheckpointError("unsupported weight dtype " + std::string(dtype_name(view.dtype)));
  }
}

bool aligned_for(const void* data, DType dtype) { return reinterpret_cast<uintptr_t>(data) % dtype_size(dtype) == 0; }

}  // namespace

WeightStore::WeightStore(std::shared_ptr<const Checkpoint> checkpoint, DType matrix_dtype)
    : checkpoint_(std::move(checkpoint)),
      matrix_dtype_(matrix_dtype),
      quantization_(std::make_shared<QuantizationConfig>()) {
  if (matrix_dtype != DType::F32 && matrix_dtype != DType::BF16)
    throw InvalidArgument("weights can be computed in float32 or bfloat16 only");
}

WeightStore::WeightStore(DType matrix_dtype)
    : matrix_dtype_(matrix_dtype), quantization_(std::make_shared<QuantizationConfig>()), recording_(true) {}

kernels::WeightMatrix weight_view(const Matrix& matrix) {
  kernels::WeightMatrix view;
  view.data = matrix.data;
  view.ld = matrix.cols;
  switch (matrix.dtype) {
    case DType::F32:
      view.format = kernels::WeightFormat::F32;
      break;
    case DType::BF16:
      view.format = kernels::WeightFormat::BF16;
      break;
    case DType::I8:
      view.format = kernels::WeightFormat::Int8;
      break;
    case DType::U8:
      view.format = kernels::WeightFormat::Int4;
      break;
    default:
      throw InvalidArgument("no kernel reads weights stored as " + std::string(dtype_name(matrix.dtype)));
  }
  if (matrix.quantized()) {
    view.scales = matrix.scales;
    view.group_size = matrix.group_size;
    view.scales_ld = kernels::scale_groups(matrix.cols, matrix.group_size);
  }
  return view;
}

Matrix WeightStore::matrix(const std::string& name, const std::vector<int64_t>& shape) {
  if (recording_) {
    requested_.push_back({name, shape});
    int64_t cols = 1;
    for (size_t i = 1; i < shape.size(); ++i) cols *= shape[i];
    return {nullptr, matrix_dtype_, shape.empty() ? 0 : shape[0], cols};
  }
  const TensorView view = checkpoint_->tensor(name);
  if (view.rank() < 2)
    throw CheckpointError("tensor '" + name + "' should be a matrix, has shape " + shape_to_string(view.shape));
  Matrix matrix{nullptr, matrix_dtype_, view.dim(0), view.numel() / view.dim(0)};
  if (view.dtype == matrix_dtype_ && aligned_for(view.data, view.dtype)) {
    matrix.data = view.data;
    mapped_bytes_ += view.nbytes();
    return matrix;
  }
  const int64_t count = view.numel();
  Buffer<uint8_t>& owned = owned_.emplace_back(static_cast<size_t>(count) * dtype_size(matrix_dtype_));
  if (view.dtype == matrix_dtype_) {
    std::memcpy(owned.data(), view.data, view.nbytes());
  } else if (matrix_dtype_ == DType::F32) {
    auto* destination = reinterpret_cast<float*>(owned.data());
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; ++i) destination[i] = element_as_float(view, i);
  } else {
    auto* destination = reinterpret_cast<uint16_t*>(owned.data());
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < count; ++i) destination[i] = float_to_bf16(element_as_float(view, i));
  }
  copied_bytes_ += static_cast<size_t>(count) * dtype_size(matrix_dtype_);
  matrix.data = owned.data();
  return matrix;
}

const float* WeightStore::floats(const std::string& name, const std::vector<int64_t>& shape) {
  if (recording_) {
    requested_.push_back({name, shape});
    return nullptr;
  }
  const TensorView view = checkpoint_->tensor(name);
  const int64_t count = view.numel();
  Buffer<uint8_t>& owned = owned_.emplace_back(static_cast<size_t>(count) * sizeof(float));
  auto* destination = reinterpret_cast<float*>(owned.data());
  for (int64_t i = 0; i < count; ++i) destination[i] = element_as_float(view, i);
  copied_bytes_ += static_cast<size_t>(count) * sizeof(float);
  return destination;
}

Linear WeightStore::linear(const std::string& prefix, bool has_bias, const std::vector<int64_t>& weight_shape,
                           QuantizationRole role) {
  const std::vector<int64_t> bias_shape{weight_shape.empty() ? 0 : weight_shape[0]};
  Matrix weight;
  const WeightQuantization quantization = recording_ ? WeightQuantization::None : quantization_of(*quantization_, role);
  if (quantization == WeightQuantization::None) {
    weight = matrix(prefix + ".weight", weight_shape);
    if (recording_) requested_.back().quantization_role = role;
  } else {
    QuantizedWeight quantized = load_quantized_weight(*checkpoint_, *quantization_, prefix, quantization);
    weight = quantized.matrix;
    if (panels_) {
      // The codes as stored (or as just quantized) are read once more, into panels; a stored
      // checkpoint's pages are then dropped from this process like a quantized-at-load source's.
      kernels::PackedPanels& packed =
          packed_.emplace_back(kernels::pack_panels(weight_view(weight), weight.rows, weight.cols));
      copied_bytes_ += packed.bytes();
      if (quantized.mapped_bytes > 0)
        release_mapped_pages(weight.data, static_cast<size_t>(weight.rows) *
                                              kernels::weight_row_bytes(weight_view(weight).format, weight.cols));
      Linear linear = linear_of(weight, has_bias ? floats(prefix + ".bias", bias_shape) : nullptr);
      linear.weight = packed.view;
      quantized_layers_.push_back({prefix, packed.view, weight.rows, weight.cols});
      return linear;
    }
    if (quantized.codes.capacity() > 0) owned_.push_back(std::move(quantized.codes));
    if (quantized.scales.capacity() > 0) owned_.push_back(std::move(quantized.scales));
    copied_bytes_ += quantized.copied_bytes;
    mapped_bytes_ += quantized.mapped_bytes;
    quantized_layers_.push_back({prefix, weight_view(weight), weight.rows, weight.cols});
  }
  return linear_of(weight, has_bias ? floats(prefix + ".bias", bias_shape) : nullptr);
}

Linear WeightStore::linear_of(const Matrix& matrix, const float* bias) const {
  Linear linear;
  linear.weight = weight_view(matrix);
  linear.out_features = matrix.rows;
  linear.in_features = matrix.cols;
  linear.bias = bias;
  linear.widen_to_bf16 = matrix_dtype_ == DType::BF16;
  return linear;
}

Norm WeightStore::norm(const std::string& prefix, bool has_bias, int64_t width) {
  Norm norm;
  norm.weight = floats(prefix + ".weight", {width});
  if (has_bias) norm.bias = floats(prefix + ".bias", {width});
  return norm;
}

void WeightStore::set_quantization(const QuantizationConfig& config, bool panels) {
  quantization_ = std::make_shared<QuantizationConfig>(config);
  panels_ = panels;
}

}  // namespace qwen2audio
