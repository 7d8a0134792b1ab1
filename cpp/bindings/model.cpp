#include "bindings/bindings.h"

namespace qwen2audio::bindings {

void register_model(py::module_& module) {}

}  // namespace qwen2audio::bindings
