#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <nlohmann/json.hpp>

#include "bindings/bindings.h"
#include "io/checkpoint.h"
#include "model/ultravox.h"
#include "model/weight_layout.h"

namespace qwen2audio::bindings {
namespace {

// Checked against the tensors the folder's own family asks for, from its config.json.
WeightCheck check_family_weights(const Checkpoint& checkpoint) {
  if (const UltravoxConfig* ultravox = checkpoint.ultravox_config())
    return check_weights(ultravox_expected_tensors(*ultravox), ultravox->text, checkpoint);
  return check_weights(checkpoint.config(), checkpoint);
}

// The sizes an Ultravox config.json resolves to (its audio tower's and decoder's may come from
// defaults or an embedded config), as `qwen2audio inspect` prints them.
py::dict ultravox_sizes(const UltravoxConfig& config) {
  py::dict audio, projector, text;
  audio["d_model"] = config.audio.d_model;
  audio["encoder_layers"] = config.audio.encoder_layers;
  audio["encoder_attention_heads"] = config.audio.encoder_attention_heads;
  audio["encoder_ffn_dim"] = config.audio.encoder_ffn_dim;
  projector["stack_factor"] = config.stack_factor;
  projector["hidden_size"] = config.projector_hidden_size;
  projector["act"] = config.projector_act;
  text["hidden_size"] = config.text.hidden_size;
  text["num_hidden_layers"] = config.text.num_hidden_layers;
  text["num_attention_heads"] = config.text.num_attention_heads;
  text["num_key_value_heads"] = config.text.num_key_value_heads;
  text["vocab_size"] = config.text.vocab_size;
  py::dict sizes;
  sizes["audio_config"] = audio;
  sizes["projector"] = projector;
  sizes["text_config"] = text;
  return sizes;
}

py::dtype numpy_dtype(DType dtype) {
  switch (dtype) {
    case DType::Bool:
      return py::dtype("bool");
    case DType::U8:
    case DType::F8_E4M3:
    case DType::F8_E5M2:
      return py::dtype("uint8");
    case DType::I8:
      return py::dtype("int8");
    case DType::I16:
      return py::dtype("int16");
    case DType::U16:
    case DType::BF16:
      return py::dtype("uint16");
    case DType::F16:
      return py::dtype("float16");
    case DType::I32:
      return py::dtype("int32");
    case DType::U32:
      return py::dtype("uint32");
    case DType::F32:
      return py::dtype("float32");
    case DType::I64:
      return py::dtype("int64");
    case DType::U64:
      return py::dtype("uint64");
    case DType::F64:
      return py::dtype("float64");
  }
  throw std::logic_error("unknown dtype");
}

}  // namespace

py::array numpy_view(const TensorView& view, py::handle owner) {
  std::vector<py::ssize_t> shape(view.shape.begin(), view.shape.end());
  std::vector<py::ssize_t> strides(shape.size());
  py::ssize_t stride = static_cast<py::ssize_t>(dtype_size(view.dtype));
  for (size_t axis = shape.size(); axis-- > 0;) {
    strides[axis] = stride;
    stride *= std::max<py::ssize_t>(shape[axis], 1);
  }
  py::array array(numpy_dtype(view.dtype), shape, strides, view.data, owner);
  // The mapping is PROT_READ: a write through this array would fault, so NumPy must refuse it.
  array.attr("setflags")(py::arg("write") = false);
  return array;
}

void register_checkpoint(py::module_& module) {
  py::class_<Checkpoint, std::shared_ptr<Checkpoint>>(module, "Checkpoint")
      .def(py::init([](const std::filesystem::path& path) {
             py::gil_scoped_release release;
             return Checkpoint::open(path);
           }),
           py::arg("path"))
      .def_property_readonly("directory", [](const Checkpoint& self) { return self.directory().string(); })
      .def_property_readonly("files", &Checkpoint::files)
      .def_property_readonly("has_config", &Checkpoint::has_config)
      .def_property_readonly("model_type", &Checkpoint::model_type)
      .def_property_readonly("ultravox_sizes",
                             [](const Checkpoint& self) -> std::optional<py::dict> {
                               if (const UltravoxConfig* config = self.ultravox_config())
                                 return ultravox_sizes(*config);
                               return std::nullopt;
                             })
      .def_property_readonly("config_json", [](const Checkpoint& self) { return config_to_json(self.config()); })
      .def_property_readonly("has_generation_config", &Checkpoint::has_generation_config)
      .def_property_readonly("generation_config_json",
                             [](const Checkpoint& self) { return generation_config_to_json(self.generation_config()); })
      .def_property_readonly("total_bytes", &Checkpoint::total_bytes)
      .def("tensor_names", &Checkpoint::tensor_names)
      .def("__len__", &Checkpoint::size)
      .def("__contains__", &Checkpoint::contains)
      .def("dtype", [](const Checkpoint& self,
                       const std::string& name) { return std::string(dtype_name(self.record(name).dtype)); })
      .def("shape", [](const Checkpoint& self, const std::string& name) { return self.record(name).shape; })
      .def("file_of", &Checkpoint::file_of)
      .def("byte_range",
           [](const Checkpoint& self, const std::string& name) {
             const TensorRecord& record = self.record(name);
             return std::make_pair(record.begin, record.end);
           })
      .def("view",
           [](py::object self, const std::string& name) {
             return numpy_view(self.cast<const Checkpoint&>().tensor(name), self);
           })
      .def("check_weights",
           [](const Checkpoint& self) {
             const WeightCheck check = check_family_weights(self);
             py::dict result;
             result["missing"] = check.missing;
             result["unexpected"] = check.unexpected;
             result["wrong_shape"] = check.wrong_shape;
             result["unsupported_dtype"] = check.unsupported_dtype;
             return result;
           })
      .def("require_weights", [](const Checkpoint& self) { require_weights(check_family_weights(self), self); });

  module.def("parse_config",
             [](const std::string& text) { return config_to_json(parse_qwen2audio_config(text, "<string>")); });
  // What a checkpoint of that config.json must hold, the family picked by its model_type: the tensors
  // the family's modules ask for (benchmarks and the demo write synthetic checkpoints from it).
  module.def("expected_tensors", [](const std::string& config_text) {
    const nlohmann::json json = nlohmann::json::parse(config_text, nullptr, /*allow_exceptions=*/false);
    const bool ultravox = json.is_object() && json.value("model_type", "") == "ultravox";
    const std::vector<ExpectedTensor> tensors =
        ultravox ? ultravox_expected_tensors(parse_ultravox_config(config_text, "<string>"))
                 : expected_tensors(parse_qwen2audio_config(config_text, "<string>"));
    std::vector<std::pair<std::string, std::vector<int64_t>>> result;
    for (const ExpectedTensor& tensor : tensors) result.emplace_back(tensor.name, tensor.shape);
    return result;
  });
  module.def("parse_generation_config", [](const std::string& text) {
    return generation_config_to_json(parse_generation_config(text, "<string>"));
  });
}

}  // namespace qwen2audio::bindings
