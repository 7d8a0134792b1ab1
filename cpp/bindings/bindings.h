#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "runtime/tensor_view.h"

// One registration function per engine area, each in its own file, so the areas grow without
// touching each other.
namespace qwen2audio::bindings {

namespace py = pybind11;

void register_errors(py::module_& module);
void register_checkpoint(py::module_& module);
void register_audio(py::module_& module);
void register_text(py::module_& module);
void register_model(py::module_& module);
void register_kernels(py::module_& module);

// Zero-copy, read-only NumPy view of `view`; `owner` keeps the memory alive. BF16 and FP8 have no
// NumPy dtype, so their raw bits come back as uint16 / uint8.
py::array numpy_view(const TensorView& view, py::handle owner);

}  // namespace qwen2audio::bindings
