#include "bindings/bindings.h"

PYBIND11_MODULE(_core, module) {
  module.doc() = "qwen2audio C++ engine";
  qwen2audio::bindings::register_errors(module);
  qwen2audio::bindings::register_checkpoint(module);
}
