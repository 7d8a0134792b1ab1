#include <cstring>

#include "bindings/bindings.h"
#include "runtime/errors.h"

namespace qwen2audio::bindings {
namespace {

// Messages may quote bytes of a hostile file that are not UTF-8 (a JSON parser's "last read: ..."):
// pybind11's own translators pass them to PyErr_SetString, which then loses the whole message. These
// decode them with backslash escapes instead.
void set_error(PyObject* type, const std::exception& error) {
  const char* what = error.what();
  PyObject* message = PyUnicode_DecodeUTF8(what, static_cast<Py_ssize_t>(std::strlen(what)), "backslashreplace");
  if (message == nullptr) {
    PyErr_Clear();
    PyErr_SetString(type, "(message not decodable)");
    return;
  }
  PyErr_SetObject(type, message);
  Py_DECREF(message);
}

}  // namespace

void register_errors(py::module_& module) {
  // Both derive from ValueError: bad files are bad input, and callers who catch ValueError keep working.
  static py::exception<CheckpointError> checkpoint_error(module, "CheckpointError", PyExc_ValueError);
  static py::exception<ConfigError> config_error(module, "ConfigError", PyExc_ValueError);
  static py::exception<DeviceError> device_error(module, "DeviceError", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr pointer) {
    try {
      if (pointer) std::rethrow_exception(pointer);
    } catch (const CheckpointError& error) {
      set_error(checkpoint_error.ptr(), error);
    } catch (const ConfigError& error) {
      set_error(config_error.ptr(), error);
    } catch (const DeviceError& error) {
      set_error(device_error.ptr(), error);
    } catch (const InvalidArgument& error) {
      set_error(PyExc_ValueError, error);
    }
  });
}

}  // namespace qwen2audio::bindings
