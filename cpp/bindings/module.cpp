#include "bindings/bindings.h"

PYBIND11_MODULE(_core, module) {
  module.doc() = "qwen2audio C++ engine";
  qwen2audio::bindings::register_errors(module);
  qwen2audio::bindings::register_checkpoint(module);
  qwen2audio::bindings::register_audio(module);
  qwen2audio::bindings::register_text(module);
  qwen2audio::bindings::register_model(module);
  qwen2audio::bindings::register_kernels(module);
}
