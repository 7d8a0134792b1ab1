#include "bindings/bindings.h"
#include "runtime/errors.h"

namespace qwen2audio::bindings {

void register_errors(py::module_& module) {
  // Both derive from ValueError: bad files are bad input, and callers who catch ValueError keep working.
  py::register_exception<CheckpointError>(module, "CheckpointError", PyExc_ValueError);
  py::register_exception<ConfigError>(module, "ConfigError", PyExc_ValueError);
}

}  // namespace qwen2audio::bindings
