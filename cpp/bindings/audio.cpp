#include <omp.h>
#include <pybind11/stl.h>

#include <optional>

#include "audio/device_log_mel.h"
#include "audio/log_mel.h"
#include "bindings/bindings.h"
#include "io/audio_file.h"
#include "runtime/errors.h"

namespace qwen2audio::bindings {
namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

std::vector<AudioSamples> clip_views(const std::vector<FloatArray>& clips) {
  std::vector<AudioSamples> views;
  views.reserve(clips.size());
  for (size_t index = 0; index < clips.size(); ++index) {
    if (clips[index].ndim() != 1)
      throw InvalidArgument("audio clip " + std::to_string(index) + " must be 1-D, got " +
                            std::to_string(clips[index].ndim()) + " dimensions");
    views.push_back({clips[index].data(), static_cast<size_t>(clips[index].size())});
  }
  return views;
}

py::array_t<float> to_numpy(std::vector<float>&& samples) {
  // The vector moves into a capsule that owns the memory the array views: no copy of the audio.
  auto* owned = new std::vector<float>(std::move(samples));
  py::capsule owner(owned, [](void* pointer) { delete static_cast<std::vector<float>*>(pointer); });
  return py::array_t<float>({static_cast<py::ssize_t>(owned->size())}, owned->data(), owner);
}

py::array_t<double> filters_to_numpy(const std::vector<double>& filters, int rows, int columns) {
  py::array_t<double> array({rows, columns});
  std::copy(filters.begin(), filters.end(), array.mutable_data());
  return array;
}

kernels::DftPrecision parse_precision(const std::string& name) {
  if (name == "double") return kernels::DftPrecision::kDouble;
  if (name == "float") return kernels::DftPrecision::kFloat;
  throw InvalidArgument("precision must be 'double' or 'float', got '" + name + "'");
}

// The spectral kernels come in three vector widths, named for the instructions of each.
const char* width_name(kernels::Isa isa) {
  return isa >= kernels::Isa::Avx512 ? "avx512" : isa >= kernels::Isa::Avx2 ? "avx2" : "sse";
}

// "auto" (the kernels' tier, QWEN2AUDIO_MAX_ISA honoured) or a width this CPU has; asking for a
// wider one than the CPU offers is refused, since its code would fault.
kernels::Isa parse_isa(const std::string& name) {
  if (name == "auto") return kernels::best_isa();
  for (const kernels::Isa isa : {kernels::Isa::Scalar, kernels::Isa::Avx2, kernels::Isa::Avx512}) {
    if (name != width_name(isa)) continue;
    if (!kernels::isa_supported(isa))
      throw InvalidArgument(std::string("this CPU does not support ") + name +
                            " (best: " + width_name(kernels::widest_isa()) + ")");
    return isa;
  }
  throw InvalidArgument("isa must be 'auto', 'avx512', 'avx2' or 'sse', got '" + name + "'");
}

AudioLoadOptions load_options(int sampling_rate, int64_t max_samples) {
  AudioLoadOptions options;
  options.sampling_rate = sampling_rate;
  options.max_samples = max_samples;
  return options;
}

}  // namespace

void register_audio(py::module_& module) {
  module.def(
      "mel_filter_bank",
      [](int num_frequency_bins, int num_mel_filters, double min_frequency, double max_frequency, int sampling_rate) {
        return filters_to_numpy(
            slaney_mel_filter_bank(num_frequency_bins, num_mel_filters, min_frequency, max_frequency, sampling_rate),
            num_mel_filters, num_frequency_bins);
      },
      py::arg("num_frequency_bins"), py::arg("num_mel_filters"), py::arg("min_frequency"), py::arg("max_frequency"),
      py::arg("sampling_rate"),
      "Slaney mel filter bank (norm and scale), float64 [num_mel_filters, num_frequency_bins].");

  module.def(
      "cpu_lane_isa", []() { return width_name(kernels::widest_isa()); },
      "The widest vector ISA the spectral kernels use on this CPU: 'avx512', 'avx2' or 'sse'.");

  py::class_<DeviceWhisperLogMel>(module, "DeviceWhisperLogMel")
      .def(py::init([](int feature_size, int sampling_rate, int hop_length, int chunk_length, int n_fft,
                       const std::string& device) {
             const WhisperFeatureOptions options{feature_size, sampling_rate, hop_length, chunk_length, n_fft, 0};
             py::gil_scoped_release release;
             return std::make_unique<DeviceWhisperLogMel>(options, device);
           }),
           py::arg("feature_size") = 128, py::arg("sampling_rate") = 16000, py::arg("hop_length") = 160,
           py::arg("chunk_length") = 30, py::arg("n_fft") = 400, py::arg("device") = "cuda")
      .def(
          "__call__",
          [](const DeviceWhisperLogMel& self, const std::vector<FloatArray>& clips) {
            const std::vector<AudioSamples> views = clip_views(clips);
            const WhisperLogMel& reference = self.reference();
            const auto count = static_cast<py::ssize_t>(clips.size());
            py::array_t<float> features({count, static_cast<py::ssize_t>(reference.num_mel_bins()),
                                         static_cast<py::ssize_t>(reference.num_frames())});
            py::array_t<int32_t> mask({count, static_cast<py::ssize_t>(reference.num_frames())});
            float* features_data = features.mutable_data();
            int32_t* mask_data = mask.mutable_data();
            {
              py::gil_scoped_release release;
              self.compute(views, features_data, mask_data);
            }
            return py::make_tuple(features, mask);
          },
          py::arg("clips"), "As WhisperLogMel.__call__, computed on the GPU.");

  py::class_<WhisperLogMel>(module, "WhisperLogMel")
      .def(py::init([](int feature_size, int sampling_rate, int hop_length, int chunk_length, int n_fft,
                       const std::string& precision, const std::string& isa, int64_t padded_samples) {
             const WhisperFeatureOptions options{feature_size, sampling_rate, hop_length,
                                                 chunk_length, n_fft,         padded_samples};
             return std::make_unique<WhisperLogMel>(options, parse_precision(precision), parse_isa(isa));
           }),
           py::arg("feature_size") = 128, py::arg("sampling_rate") = 16000, py::arg("hop_length") = 160,
           py::arg("chunk_length") = 30, py::arg("n_fft") = 400, py::arg("precision") = "double",
           py::arg("isa") = "auto", py::arg("padded_samples") = 0)
      .def_property_readonly("n_samples", &WhisperLogMel::n_samples)
      .def_property_readonly("num_frames", &WhisperLogMel::num_frames)
      .def_property_readonly("num_mel_bins", &WhisperLogMel::num_mel_bins)
      .def_property_readonly("mel_filters",
                             [](const WhisperLogMel& self) {
                               return filters_to_numpy(self.mel_filters(), self.num_mel_bins(),
                                                       self.num_frequency_bins());
                             })
      .def(
          "__call__",
          [](const WhisperLogMel& self, const std::vector<FloatArray>& clips, std::optional<int> num_threads) {
            const std::vector<AudioSamples> views = clip_views(clips);
            const auto count = static_cast<py::ssize_t>(clips.size());
            py::array_t<float> features(
                {count, static_cast<py::ssize_t>(self.num_mel_bins()), static_cast<py::ssize_t>(self.num_frames())});
            py::array_t<int32_t> mask({count, static_cast<py::ssize_t>(self.num_frames())});
            float* features_data = features.mutable_data();
            int32_t* mask_data = mask.mutable_data();
            if (num_threads.has_value() && *num_threads < 1)
              throw InvalidArgument("num_threads must be positive, got " + std::to_string(*num_threads));
            {
              py::gil_scoped_release release;
              self.compute(views, features_data, mask_data, num_threads.value_or(0));
            }
            return py::make_tuple(features, mask);
          },
          py::arg("clips"), py::arg("num_threads") = py::none(),
          "Log-mel features [clips, num_mel_bins, num_frames] float32 and the frame mask [clips, num_frames] "
          "int32 of a list of 1-D float32 clips.");

  module.def(
      "load_audio_file",
      [](const std::string& path, int sampling_rate, int64_t max_samples) {
        std::vector<float> samples;
        {
          py::gil_scoped_release release;
          samples = load_audio_file(path, load_options(sampling_rate, max_samples));
        }
        return to_numpy(std::move(samples));
      },
      py::arg("path"), py::arg("sampling_rate"), py::arg("max_samples"));
  module.def(
      "load_audio_bytes",
      [](const py::bytes& data, int sampling_rate, int64_t max_samples, const std::string& name) {
        const std::string_view view = data;
        std::vector<float> samples;
        {
          py::gil_scoped_release release;
          samples = load_audio_memory(view.data(), view.size(), load_options(sampling_rate, max_samples), name);
        }
        return to_numpy(std::move(samples));
      },
      py::arg("data"), py::arg("sampling_rate"), py::arg("max_samples"), py::arg("name") = "<bytes>");
}

}  // namespace qwen2audio::bindings
