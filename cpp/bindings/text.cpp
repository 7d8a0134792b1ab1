#include "bindings/bindings.h"

namespace qwen2audio::bindings {

void register_text(py::module_& module) {}

}  // namespace qwen2audio::bindings
