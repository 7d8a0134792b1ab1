#include "model/quantization.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <nlohmann/json.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include "io/config.h"
#include "runtime/errors.h"

namespace qwen2audio {
namespace {

using kernels::WeightFormat;

// Names this engine writes into config.json's quantization_config; "bits" 16 means not quantized.
constexpr const char* kQuantMethod = "qwen2audio_weight_only";
constexpr int kFormatVersion = 1;

int bits_of(WeightQuantization quantization) {
  switch (quantization) {
    case WeightQuantization::None:
      return 16;
    case WeightQuantization::Int8:
      return 8;
    case WeightQuantization::Int4:
      return 4;
  }
  return 16;
}

WeightQuantization from_bits(int64_t bits, const std::string& origin, const char* key) {
  if (bits == 16) return WeightQuantization::None;
  if (bits == 8) return WeightQuantization::Int8;
  if (bits == 4) return WeightQuantization::Int4;
  throw CheckpointError(origin + ": quantization_config." + key + " must be 4, 8 or 16, got " + std::to_string(bits));
}

WeightFormat format_of(WeightQuantization quantization) {
  return quantization == WeightQuantization::Int8 ? WeightFormat::Int8 : WeightFormat::Int4;
}

DType codes_dtype(WeightQuantization quantization) {
  return quantization == WeightQuantization::Int8 ? DType::I8 : DType::U8;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

void check_group_size(int64_t group_size) {
  if (group_size <= 0 || group_size % 32 != 0)
    throw InvalidArgument("quantization_group_size must be a positive multiple of 32, got " +
                          std::to_string(group_size));
}

// The default format of the output head for a decoder quantization (see the header).
WeightQuantization lm_head_default(WeightQuantization decoder) {
  return decoder == WeightQuantization::None ? WeightQuantization::None : WeightQuantization::Int8;
}

}  // namespace

void release_mapped_pages(const void* data, size_t bytes) {
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

const char* quantization_name(WeightQuantization quantization) {
  switch (quantization) {
    case WeightQuantization::None:
      return "none";
    case WeightQuantization::Int8:
      return "int8";
    case WeightQuantization::Int4:
      return "int4";
  }
  return "none";
}

WeightQuantization parse_quantization(const std::string& name) {
  if (name.empty() || name == "none") return WeightQuantization::None;
  if (name == "int8") return WeightQuantization::Int8;
  if (name == "int4") return WeightQuantization::Int4;
  throw InvalidArgument("quantization must be None, 'int8' or 'int4', got '" + name + "'");
}

QuantizationConfig stored_quantization(const Checkpoint& checkpoint) {
  QuantizationConfig config;
  const std::filesystem::path path = checkpoint.directory() / "config.json";
  std::error_code error;
  if (!std::filesystem::is_regular_file(path, error)) return config;
  const std::string origin = path.string();
  nlohmann::json parsed;
  try {
    parsed = nlohmann::json::parse(read_text_file(path, 16u << 20, "config.json"));
  } catch (const nlohmann::json::exception& parse_error) {
    throw CheckpointError(origin + ": invalid JSON: " + parse_error.what());
  }
  if (!parsed.is_object() || !parsed.contains("quantization_config") || parsed["quantization_config"].is_null())
    return config;
  const nlohmann::json& entry = parsed["quantization_config"];
  if (!entry.is_object()) throw CheckpointError(origin + ": quantization_config must be an object");
  const std::string method = entry.value("quant_method", std::string());
  if (method != kQuantMethod)
    throw CheckpointError(
        origin + ": quantization_config.quant_method '" + method +
        "' is not supported; qwen2audio reads the weight-only int8/int4 checkpoints it saves itself ('" + kQuantMethod +
        "')");
  auto integer = [&](const char* key) -> int64_t {
    if (!entry.contains(key) || !entry[key].is_number_integer())
      throw CheckpointError(origin + ": quantization_config." + key + " must be an integer");
    return entry[key].get<int64_t>();
  };
  if (integer("format_version") != kFormatVersion)
    throw CheckpointError(origin + ": quantization_config.format_version " + std::to_string(integer("format_version")) +
                          " is not supported (this build reads version " + std::to_string(kFormatVersion) + ")");
  config.decoder = from_bits(integer("bits"), origin, "bits");
  config.lm_head = from_bits(integer("lm_head_bits"), origin, "lm_head_bits");
  config.group_size = integer("group_size");
  if (config.group_size <= 0 || config.group_size % 32 != 0)
    throw CheckpointError(origin + ": quantization_config.group_size must be a positive multiple of 32, got " +
                          std::to_string(config.group_size));
  config.stored = config.enabled();
  return config;
}

QuantizationConfig resolve_quantization(const Checkpoint& checkpoint, const QuantizationRequest& request) {
  check_group_size(request.group_size);
  QuantizationConfig stored = stored_quantization(checkpoint);
  if (stored.stored) {
    const bool same = (request.decoder == WeightQuantization::None && !request.lm_head) ||
                      (request.decoder == stored.decoder && request.group_size == stored.group_size &&
                       request.lm_head.value_or(stored.lm_head) == stored.lm_head);
    if (!same)
      throw InvalidArgument("the checkpoint at " + checkpoint.directory().string() + " is already quantized to " +
                            quantization_name(stored.decoder) + " with group size " +
                            std::to_string(stored.group_size) + "; load it with quantization=None (or '" +
                            quantization_name(stored.decoder) +
                            "' and quantization_group_size=" + std::to_string(stored.group_size) + ")");
    return stored;
  }
  QuantizationConfig config;
  config.decoder = request.decoder;
  config.lm_head = request.lm_head.value_or(lm_head_default(request.decoder));
  config.group_size = request.group_size;
  return config;
}

std::string quantization_config_json(const QuantizationConfig& config) {
  nlohmann::json entry = {
      {"quant_method", kQuantMethod},
      {"format_version", kFormatVersion},
      {"bits", bits_of(config.decoder)},
      {"lm_head_bits", bits_of(config.lm_head)},
      {"group_size", config.group_size},
      {"symmetric", true},
      {"scale_dtype", "float32"},
      {"modules",
       {"language_model.model.layers.*.self_attn.{q,k,v,o}_proj",
        "language_model.model.layers.*.mlp.{gate,up,down}_proj", "language_model.lm_head (lm_head_bits)"}},
      {"int4_packing",
       "per 32-element block, byte j = element j (low nibble) | element j+16 (high nibble), code = "
       "level + 8"},
  };
  return entry.dump();
}

WeightQuantization quantization_of(const QuantizationConfig& config, QuantizationRole role) {
  switch (role) {
    case QuantizationRole::DecoderProjection:
      return config.decoder;
    case QuantizationRole::OutputHead:
      return config.lm_head;
    case QuantizationRole::Never:
      break;
  }
  return WeightQuantization::None;
}

std::vector<ExpectedTensor> quantized_layout(const QuantizationConfig& quantization,
                                             std::vector<ExpectedTensor> tensors) {
  if (!quantization.stored) return tensors;
  std::vector<ExpectedTensor> result;
  result.reserve(tensors.size() + 64);
  for (ExpectedTensor& tensor : tensors) {
    const std::string suffix = ".weight";
    const std::string prefix =
        ends_with(tensor.name, suffix) ? tensor.name.substr(0, tensor.name.size() - suffix.size()) : std::string();
    const WeightQuantization format =
        prefix.empty() ? WeightQuantization::None : quantization_of(quantization, tensor.quantization_role);
    if (format == WeightQuantization::None || tensor.shape.size() != 2) {
      result.push_back(std::move(tensor));
      continue;
    }
    const int64_t rows = tensor.shape[0], cols = tensor.shape[1];
    const int64_t code_cols = format == WeightQuantization::Int8 ? cols : (cols + 1) / 2;
    result.push_back({prefix + ".qweight", {rows, code_cols}, codes_dtype(format)});
    result.push_back({prefix + ".scales", {rows, kernels::scale_groups(cols, quantization.group_size)}, DType::F32});
  }
  return result;
}

QuantizedWeight load_quantized_weight(const Checkpoint& checkpoint, const QuantizationConfig& config,
                                      const std::string& prefix, WeightQuantization quantization) {
  QuantizedWeight result;
  Matrix& matrix = result.matrix;
  matrix.dtype = codes_dtype(quantization);
  matrix.group_size = config.group_size;
  if (config.stored) {
    // Shapes and dtypes were checked against quantized_layout() when the model was opened.
    const TensorView codes = checkpoint.tensor(prefix + ".qweight");
    const TensorView scales = checkpoint.tensor(prefix + ".scales");
    matrix.rows = codes.dim(0);
    matrix.cols = quantization == WeightQuantization::Int8 ? codes.dim(1) : codes.dim(1) * 2;
    matrix.data = codes.data;
    result.mapped_bytes += codes.nbytes();
    if (reinterpret_cast<uintptr_t>(scales.data) % alignof(float) == 0) {
      matrix.scales = scales.as<float>();
      result.mapped_bytes += scales.nbytes();
    } else {
      float* copy = reinterpret_cast<float*>(result.scales.reserve(scales.nbytes()));
      std::memcpy(copy, scales.data, scales.nbytes());
      matrix.scales = copy;
      result.copied_bytes += scales.nbytes();
    }
    return result;
  }
  const TensorView weight = checkpoint.tensor(prefix + ".weight");
  if (weight.rank() != 2) throw CheckpointError("tensor '" + prefix + ".weight' should be a matrix");
  matrix.rows = weight.dim(0);
  matrix.cols = weight.dim(1);
  if (matrix.cols % 32 != 0)
    throw InvalidArgument(std::string(quantization_name(quantization)) + " quantization needs in_features to be a " +
                          "multiple of 32; " + prefix + " has " + std::to_string(matrix.cols));
  const WeightFormat format = format_of(quantization);
  const int64_t groups = kernels::scale_groups(matrix.cols, config.group_size);
  const size_t code_bytes = static_cast<size_t>(matrix.rows * kernels::weight_row_bytes(format, matrix.cols));
  const size_t scale_bytes = static_cast<size_t>(matrix.rows * groups) * sizeof(float);
  uint8_t* codes = result.codes.reserve(code_bytes);
  auto* scales = reinterpret_cast<float*>(result.scales.reserve(scale_bytes));
  kernels::quantize_rows(weight.data, weight.dtype, matrix.cols, matrix.rows, matrix.cols, format, config.group_size,
                         codes, scales);
  release_mapped_pages(weight.data, weight.nbytes());  // checkpoints are memory-mapped (io/mapped_file.h)
  matrix.data = codes;
  matrix.scales = scales;
  result.copied_bytes = code_bytes + scale_bytes;
  return result;
}

}  // namespace qwen2audio
