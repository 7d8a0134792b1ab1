// Kernel-level entry points for benchmarks and tools: CPU features, a memory read-bandwidth probe,
// weight-only quantization and the decode gemv on NumPy arrays.
#include <pybind11/stl.h>

#include <optional>

#include "bindings/bindings.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/gemv.h"
#include "kernels/cpu/memory_bandwidth.h"
#include "runtime/errors.h"
#include "runtime/threads.h"

namespace qwen2audio::bindings {
namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

kernels::WeightFormat format_from_name(const std::string& name) {
  for (kernels::WeightFormat format : {kernels::WeightFormat::F32, kernels::WeightFormat::BF16,
                                       kernels::WeightFormat::Int8, kernels::WeightFormat::Int4})
    if (name == kernels::weight_format_name(format)) return format;
  throw InvalidArgument("weight format must be 'float32', 'bfloat16', 'int8' or 'int4', got '" + name + "'");
}

kernels::Isa isa_from(const std::optional<std::string>& name) {
  if (!name) return kernels::best_isa();
  const std::optional<kernels::Isa> isa = kernels::isa_from_name(*name);
  if (!isa)
    throw InvalidArgument(
        "isa must be 'scalar', 'avx2', 'avx2_vnni', 'avx512', 'avx512_vnni', 'avx512_bf16' or 'amx', got '" + *name +
        "'");
  return *isa;
}

}  // namespace

void register_kernels(py::module_& module) {
  module.def("cpu_info", [] {
    const kernels::CpuFeatures& f = kernels::cpu_features();
    py::dict info;
    info["description"] = kernels::cpu_description();
    info["vendor"] = f.vendor;
    info["brand"] = f.brand;
    info["isa"] = kernels::isa_name(kernels::best_isa());
    info["physical_cores"] = kernels::physical_core_count();
    info["avx2"] = f.avx2;
    info["avx_vnni"] = f.avx_vnni;
    info["avx512f"] = f.avx512f;
    info["avx512_vnni"] = f.avx512_vnni;
    info["avx512_bf16"] = f.avx512_bf16;
    info["amx_bf16"] = f.amx_bf16;
    info["amx_int8"] = f.amx_int8;
    return info;
  });
  module.def(
      "read_bandwidth",
      [](size_t bytes, int repeats, int threads) {
        py::gil_scoped_release release;
        ScopedNumThreads scoped(threads > 0 ? checked_num_threads(threads) : default_num_threads());
        return kernels::measure_read_bandwidth(bytes, repeats);
      },
      py::arg("bytes") = size_t{1} << 30, py::arg("repeats") = 5, py::arg("threads") = 0,
      "Best streaming read bandwidth in GB/s over a buffer of `bytes` (use one much larger than the last-level "
      "cache).");
  py::class_<kernels::ReadProbe>(module, "ReadProbe",
                                 "A buffer read again and again, to pair each timed call with a read right after it.")
      .def(py::init([](size_t bytes) {
             py::gil_scoped_release release;
             return std::make_unique<kernels::ReadProbe>(bytes);
           }),
           py::arg("bytes") = size_t{512} << 20)
      .def_property_readonly("bytes", &kernels::ReadProbe::bytes)
      .def(
          "read_gbs",
          [](kernels::ReadProbe& self, int threads) {
            py::gil_scoped_release release;
            ScopedNumThreads scoped(threads > 0 ? checked_num_threads(threads) : default_num_threads());
            return self.read_gbs();
          },
          py::arg("threads") = 0, "GB/s of one streaming read of the buffer on `threads` threads.");
  module.def(
      "quantize_weight",
      [](const FloatArray& weight, const std::string& format_name, int64_t group_size) {
        const kernels::WeightFormat format = format_from_name(format_name);
        if (weight.ndim() != 2) throw InvalidArgument("weight must be 2-D [out_features, in_features]");
        const int64_t n = weight.shape(0), k = weight.shape(1);
        const int64_t row_bytes = kernels::weight_row_bytes(format, k);
        py::array_t<uint8_t> codes({n, row_bytes});
        py::array_t<float> scales({n, kernels::scale_groups(k, group_size)});
        uint8_t* code_data = codes.mutable_data();
        float* scale_data = scales.mutable_data();
        {
          py::gil_scoped_release release;
          kernels::quantize_rows(weight.data(), DType::F32, k, n, k, format, group_size, code_data, scale_data);
        }
        return py::make_tuple(codes, scales);
      },
      py::arg("weight"), py::arg("format"), py::arg("group_size") = 128,
      "Weight-only quantization of a float32 [n, k] matrix: (codes [n, row bytes] uint8, scales [n, groups]).");
  module.def(
      "gemv",
      [](const FloatArray& x, const py::array& weight, const std::string& format_name,
         const std::optional<FloatArray>& scales, int64_t group_size, const std::optional<FloatArray>& bias,
         const std::optional<std::string>& isa, bool round_bf16_inputs, int threads) {
        const kernels::WeightFormat format = format_from_name(format_name);
        if (x.ndim() != 2 || weight.ndim() != 2) throw InvalidArgument("x and weight must be 2-D");
        const int64_t m = x.shape(0), k = x.shape(1), n = weight.shape(0);
        if (!(weight.flags() & py::array::c_style)) throw InvalidArgument("weight must be C-contiguous");
        const int64_t expected_bytes = kernels::weight_row_bytes(format, k);
        if (weight.shape(1) * static_cast<int64_t>(weight.itemsize()) != expected_bytes)
          throw InvalidArgument("weight rows hold " + std::to_string(weight.shape(1) * weight.itemsize()) + " bytes; " +
                                format_name + " rows of " + std::to_string(k) + " need " +
                                std::to_string(expected_bytes));
        if (bias && (bias->ndim() != 1 || bias->shape(0) != n)) throw InvalidArgument("bias must have shape (n,)");
        kernels::WeightMatrix w{format, weight.data(), k, nullptr, 0, group_size};
        if (scales) {
          if (scales->ndim() != 2 || scales->shape(0) != n) throw InvalidArgument("scales must have shape (n, groups)");
          w.scales = scales->data();
          w.scales_ld = scales->shape(1);
        }
        py::array_t<float> y({m, n});
        kernels::GemvArgs args{m, n, k, x.data(), k, w, bias ? bias->data() : nullptr, y.mutable_data(), n, false};
        kernels::GemvOptions options{round_bf16_inputs, isa_from(isa)};
        {
          py::gil_scoped_release release;
          ScopedNumThreads scoped(threads > 0 ? threads : default_num_threads());
          kernels::gemv(args, options);
        }
        return y;
      },
      py::arg("x"), py::arg("weight"), py::arg("format"), py::arg("scales") = std::nullopt, py::arg("group_size") = 0,
      py::arg("bias") = std::nullopt, py::arg("isa") = std::nullopt, py::arg("round_bf16_inputs") = true,
      py::arg("threads") = 0,
      "y = x W^T (+ bias) through the decode kernels. weight: float32 [n, k], BF16 bits uint16 [n, k], int8 "
      "codes [n, k] or packed int4 codes uint8 [n, k / 2].");
}

}  // namespace qwen2audio::bindings
