#include "model/quantization.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <nlohmann/json.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include "io/config.h"
#include "kernels/cpu/quantized_gemm.h"
#include "runtime/errors.h"

namespace qwen2audio {
namespace {

using kernels::WeightFormat;

// Names this engine writes into config.json's quantization_config; "bits" 16 means not quantized.
constexpr const char* kQuantMethod = "qwen2audio_weight_only";
constexpr int kFormatVersion = 1;

constexpr std::array<const char*, 7> kDecoderProjections = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                            "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                                            "mlp.down_proj"};
constexpr const char* kDecoderLayers = "language_model.model.layers.";
constexpr const char* kLmHead = "language_model.lm_head";

// Rows of a quantized matrix expanded per Gemm call in prefill: at least 4 MiB of float32, and at
// least kExpandRows rows up to 64 MiB. Each Gemm call re-reads and repacks the whole input and
// narrow products block less well, so few wide calls beat many narrow ones (kernels/cpu/gemm.cpp's
// kWidenBytes has the measurements of the same trade-off).
constexpr int64_t kExpandBytes = int64_t{4} << 20;
constexpr int64_t kExpandMaxBytes = int64_t{64} << 20;
constexpr int64_t kExpandRows = 4096;
// Rows expanded per OpenMP task.
constexpr int64_t kExpandRowsPerTask = 16;

thread_local Buffer<float> tls_expanded_f32;
thread_local Buffer<uint16_t> tls_expanded_bf16;

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

// The source pages of a matrix quantized at load are not read again: dropping them from this
// process's mapping (they stay in the page cache, and would fault back in if touched) keeps the
// resident size at the quantized model's, not bf16 + quantized.
void release_mapped_pages(const void* data, size_t bytes) {
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
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

WeightQuantization quantization_of(const QuantizationConfig& config, const std::string& prefix) {
  if (prefix == kLmHead) return config.lm_head;
  if (config.decoder == WeightQuantization::None || prefix.rfind(kDecoderLayers, 0) != 0)
    return WeightQuantization::None;
  for (const char* projection : kDecoderProjections)
    if (ends_with(prefix, std::string(".") + projection)) return config.decoder;
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
    const WeightQuantization format = prefix.empty() ? WeightQuantization::None : quantization_of(quantization, prefix);
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

kernels::WeightMatrix weight_view(const Matrix& matrix) {
  kernels::WeightMatrix view;
  view.data = matrix.data;
  view.ld = matrix.cols;
  switch (matrix.dtype) {
    case DType::F32:
      view.format = WeightFormat::F32;
      break;
    case DType::BF16:
      view.format = WeightFormat::BF16;
      break;
    case DType::I8:
      view.format = WeightFormat::Int8;
      break;
    case DType::U8:
      view.format = WeightFormat::Int4;
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

bool integer_prefill(const kernels::Gemm& gemm) {
  // AMX multiplies BF16 several times faster than AVX512-VNNI multiplies int8, so there the
  // expansion into the Gemm's BF16 product wins.
  return gemm.options().quantized_prefill && kernels::quantized_gemm_supported(kernels::best_isa()) &&
         !kernels::cpu_features().amx_bf16;
}

void run_linear(kernels::Gemm& gemm, const Linear& layer, const float* x, int64_t rows, int64_t ldx, float* y,
                int64_t ldy, bool accumulate) {
  const Matrix& w = layer.weight;
  const int64_t n = w.rows, k = w.cols;
  if (rows <= kernels::kGemvMaxRows) {
    kernels::GemvOptions options;
    options.round_bf16_inputs = gemm.options().round_bf16_inputs;
    kernels::gemv({rows, n, k, x, ldx, weight_view(w), layer.bias, y, ldy, accumulate}, options);
    return;
  }
  if (!w.quantized()) {
    gemm({rows, n, k, x, ldx, w.data, w.dtype, k, layer.bias, y, ldy, accumulate});
    return;
  }
  const kernels::WeightMatrix view = weight_view(w);
  if (integer_prefill(gemm)) {
    kernels::quantized_gemm({rows, n, k, x, ldx, view, layer.bias, y, ldy, accumulate});
    return;
  }
  // Otherwise expand a block of weight rows, multiply, move on; the block is sized so the
  // expansion stays in cache-friendly scratch and the multiply amortises it.
  // BF16 only where the model computes in BF16 and the Gemm has it natively (AMX, AVX512-BF16);
  // elsewhere float32 is both exact and faster than the Gemm's emulated BF16.
  const bool bf16 = w.expand_dtype == DType::BF16 && gemm.native_bf16();
  const auto rows_in = [&](int64_t bytes) {
    return std::max<int64_t>(64, bytes / (k * 4) / kExpandRowsPerTask * kExpandRowsPerTask);
  };
  const int64_t block = std::max(rows_in(kExpandBytes), std::min({n, rows_in(kExpandMaxBytes), kExpandRows}));
  float* expanded_f32 = bf16 ? nullptr : tls_expanded_f32.reserve(static_cast<size_t>(std::min(block, n) * k));
  uint16_t* expanded_bf16 = bf16 ? tls_expanded_bf16.reserve(static_cast<size_t>(std::min(block, n) * k)) : nullptr;
  for (int64_t begin = 0; begin < n; begin += block) {
    const int64_t width = std::min(block, n - begin);
    const int64_t tasks = (width + kExpandRowsPerTask - 1) / kExpandRowsPerTask;
#pragma omp parallel for schedule(static)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t first = begin + task * kExpandRowsPerTask;
      const int64_t last = std::min(begin + width, first + kExpandRowsPerTask);
      if (bf16)
        kernels::dequantize_rows_bf16(view, k, first, last, expanded_bf16 + (first - begin) * k, k);
      else
        kernels::dequantize_rows(view, k, first, last, expanded_f32 + (first - begin) * k, k);
    }
    gemm({rows, width, k, x, ldx, bf16 ? static_cast<const void*>(expanded_bf16) : expanded_f32,
          bf16 ? DType::BF16 : DType::F32, k, layer.bias ? layer.bias + begin : nullptr, y + begin, ldy, accumulate});
  }
}

}  // namespace qwen2audio
