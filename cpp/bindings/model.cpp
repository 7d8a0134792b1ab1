#include <pybind11/functional.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <chrono>
#include <memory>
#include <optional>

#include "bindings/bindings.h"
#include "generate/decode_batch.h"
#include "generate/session.h"
#include "kernels/cpu/quantized_gemm.h"
#include "model/audio_encoder.h"
#include "model/quantization.h"
#include "model/qwen2_audio.h"
#include "model/ultravox.h"
#include "runtime/errors.h"

namespace qwen2audio::bindings {
namespace {

using IntArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// Ctrl-C sets a flag that only the interpreter acts on; checking it between layers and tokens
// (with the GIL held just for the check) lets KeyboardInterrupt stop a long computation promptly.
// At most every 20 ms: taking the GIL between every layer of a small model starved the Python
// threads that wait for it (a server's event loop, the timer that delivers Ctrl-C in a test).
Interrupt python_interrupt() {
  auto last_check = std::make_shared<std::chrono::steady_clock::time_point>();  // the epoch: check at once
  return [last_check] {
    const auto now = std::chrono::steady_clock::now();
    if (now - *last_check < std::chrono::milliseconds(20)) return;
    *last_check = now;
    py::gil_scoped_acquire acquire;
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
  };
}

TokenBatch token_batch(const IntArray& ids, const std::optional<IntArray>& mask) {
  if (ids.ndim() != 2) throw InvalidArgument("input_ids must be 2-D (batch, sequence)");
  TokenBatch tokens{ids.data(), nullptr, ids.shape(0), ids.shape(1)};
  if (mask) {
    if (mask->ndim() != 2 || mask->shape(0) != ids.shape(0) || mask->shape(1) != ids.shape(1))
      throw InvalidArgument("attention_mask must have the shape of input_ids");
    tokens.attention_mask = mask->data();
  }
  return tokens;
}

std::optional<AudioBatch> audio_batch(const std::optional<FloatArray>& features, const std::optional<IntArray>& mask) {
  if (!features) {
    if (mask) throw InvalidArgument("feature_attention_mask was given without input_features");
    return std::nullopt;
  }
  if (features->ndim() != 3) throw InvalidArgument("input_features must be 3-D (clips, mel_bins, frames)");
  AudioBatch audio{features->data(), nullptr, features->shape(0), features->shape(1), features->shape(2)};
  if (mask) {
    if (mask->ndim() != 2 || mask->shape(0) != audio.clips || mask->shape(1) != audio.frames)
      throw InvalidArgument("feature_attention_mask must have shape (clips, frames) = (" + std::to_string(audio.clips) +
                            ", " + std::to_string(audio.frames) + ")");
    audio.feature_attention_mask = mask->data();
  }
  return audio;
}

// Ultravox's processor gives audio_lens (valid frames per chunk); the models read a frame mask.
void lens_to_mask(AudioBatch& audio, const std::optional<IntArray>& lens, std::vector<int64_t>& mask) {
  if (!lens) return;
  if (audio.feature_attention_mask != nullptr)
    throw InvalidArgument("give audio_lens or feature_attention_mask, not both");
  if (lens->ndim() != 1 || lens->shape(0) != audio.clips)
    throw InvalidArgument("audio_lens must be 1-D with one entry per chunk (" + std::to_string(audio.clips) + ")");
  mask.assign(static_cast<size_t>(audio.clips * audio.frames), 0);
  for (int64_t clip = 0; clip < audio.clips; ++clip) {
    const int64_t valid = lens->data()[clip];
    if (valid < 1 || valid > audio.frames)
      throw InvalidArgument("audio_lens[" + std::to_string(clip) + "] = " + std::to_string(valid) + " is outside 1.." +
                            std::to_string(audio.frames));
    std::fill_n(mask.begin() + clip * audio.frames, valid, 1);
  }
  audio.feature_attention_mask = mask.data();
}

void set_token_starts(AudioBatch& audio, const std::optional<IntArray>& starts) {
  if (!starts) return;
  if (starts->ndim() != 1 || starts->shape(0) != audio.clips)
    throw InvalidArgument("audio_token_start_idx must be 1-D with one entry per chunk (" + std::to_string(audio.clips) +
                          ")");
  audio.audio_token_starts = starts->data();
}

// An Ultravox audio batch: audio_values [chunks, mel_bins, frames], audio_lens [chunks].
AudioBatch ultravox_audio(const FloatArray& values, const std::optional<IntArray>& lens,
                          const std::optional<IntArray>& starts, std::vector<int64_t>& mask) {
  if (values.ndim() != 3) throw InvalidArgument("audio_values must be 3-D (chunks, mel_bins, frames)");
  AudioBatch audio{values.data(), nullptr, values.shape(0), values.shape(1), values.shape(2)};
  lens_to_mask(audio, lens, mask);
  set_token_starts(audio, starts);
  return audio;
}

// The codes and scales of a model's quantized layers as a checkpoint stores them, for save_pretrained:
// views of the model's own (kept alive by `owner`), or copies unpacked from the integer kernels' panels.
py::list quantized_layers_of(const WeightStore& weights, const py::object& owner) {
  py::list layers;
  for (const WeightStore::QuantizedLayer& layer : weights.quantized_layers()) {
    const kernels::WeightMatrix& w = layer.weight;
    const bool int8 = w.format == kernels::WeightFormat::Int8;
    const int64_t code_cols = int8 ? layer.cols : layer.cols / 2;
    const int64_t groups = kernels::scale_groups(layer.cols, w.group_size);
    py::array codes, scales;
    if (w.layout == kernels::WeightLayout::Panels) {
      py::array_t<uint8_t> unpacked_codes({layer.rows, code_cols});
      py::array_t<float> unpacked_scales({layer.rows, groups});
      {
        py::gil_scoped_release release;
        kernels::unpack_panels(w, layer.rows, layer.cols, unpacked_codes.mutable_data(),
                               unpacked_scales.mutable_data());
      }
      codes = int8 ? py::array(unpacked_codes.attr("view")("int8")) : py::array(unpacked_codes);
      scales = unpacked_scales;
    } else {
      codes = numpy_view(TensorView{w.data, int8 ? DType::I8 : DType::U8, {layer.rows, code_cols}}, owner);
      scales = numpy_view(TensorView{w.scales, DType::F32, {layer.rows, groups}}, owner);
    }
    layers.append(py::make_tuple(layer.prefix, int8 ? "int8" : "int4", codes, scales));
  }
  return layers;
}

const char* dtype_label(DType dtype) { return dtype == DType::BF16 ? "bfloat16" : "float32"; }

// Model.load's arguments for every family, parsed here once: the engine reads enums from here on.
LoadOptions load_options(const std::string& dtype, int num_threads, const std::string& kv_cache_dtype,
                         const std::string& device, const std::string& quantization, int64_t quantization_group_size,
                         const std::optional<std::string>& lm_head_quantization, bool integer_kernels,
                         bool round_bf16_inputs = true, bool allow_native_bf16 = true) {
  LoadOptions options;
  options.dtype = parse_dtype_choice(dtype, "dtype");
  options.kv_cache_dtype = parse_dtype_choice(kv_cache_dtype, "kv_cache_dtype");
  options.device = parse_device(device);
  options.num_threads = num_threads;
  options.gemm.round_bf16_inputs = round_bf16_inputs;
  options.gemm.allow_native_bf16 = allow_native_bf16;
  options.gemm.integer_kernels = integer_kernels;
  options.quantization.decoder = parse_quantization(quantization);
  options.quantization.group_size = quantization_group_size;
  if (lm_head_quantization) options.quantization.lm_head = parse_quantization(*lm_head_quantization);
  return options;
}

// A NumPy array that owns `values` (moved, not copied): per-step scores of a long generation at a
// 150k vocabulary run to hundreds of MiB.
py::array owning_array(std::vector<float>&& values, std::vector<int64_t> shape) {
  auto* owned = new std::vector<float>(std::move(values));
  py::capsule release(owned, [](void* pointer) { delete static_cast<std::vector<float>*>(pointer); });
  return py::array_t<float>(std::move(shape), owned->data(), release);
}

}  // namespace

void register_model(py::module_& module) {
  module.def("audio_token_count", &audio_token_count, py::arg("mel_frames"),
             "Audio tokens the encoder yields for a clip with this many valid mel frames.");

  module.def("ultravox_audio_token_count", &ultravox_audio_token_count, py::arg("frames"), py::arg("stack_factor"),
             "Audio tokens of an Ultravox chunk with this many valid mel frames (its audio_lens).");

  py::class_<AudioLanguageModel, std::shared_ptr<AudioLanguageModel>>(
      module, "LanguageModel", "What generation runs on: any model family (Model, UltravoxModel).")
      .def_property_readonly("vocab_size", [](const AudioLanguageModel& self) { return self.text_config().vocab_size; })
      .def_property_readonly("hidden_size",
                             [](const AudioLanguageModel& self) { return self.text_config().hidden_size; })
      .def_property_readonly("max_position_embeddings",
                             [](const AudioLanguageModel& self) { return self.text_config().max_position_embeddings; })
      .def_property_readonly(
          "generation_config_json",
          [](const AudioLanguageModel& self) { return generation_config_to_json(self.generation_config()); })
      .def_property_readonly("workspaces_created", &AudioLanguageModel::workspaces_created,
                             "Scratch workspaces made for encoder passes and forward calls since loading; "
                             "calls one after another reuse one.");

  py::class_<Qwen2AudioModel, AudioLanguageModel, std::shared_ptr<Qwen2AudioModel>>(module, "Model")
      .def_static(
          "load",
          [](const std::filesystem::path& path, const std::string& dtype, int num_threads, bool round_bf16_inputs,
             bool allow_native_bf16, const std::string& quantization, int64_t quantization_group_size,
             const std::optional<std::string>& lm_head_quantization, const std::string& kv_cache_dtype,
             const std::string& device, bool integer_kernels) {
            const LoadOptions options =
                load_options(dtype, num_threads, kv_cache_dtype, device, quantization, quantization_group_size,
                             lm_head_quantization, integer_kernels, round_bf16_inputs, allow_native_bf16);
            py::gil_scoped_release release;
            return Qwen2AudioModel::load(path, options);
          },
          py::arg("path"), py::arg("dtype") = "auto", py::arg("num_threads") = 0, py::arg("round_bf16_inputs") = true,
          py::arg("allow_native_bf16") = true, py::arg("quantization") = "none",
          py::arg("quantization_group_size") = 128, py::arg("lm_head_quantization") = std::nullopt,
          py::arg("kv_cache_dtype") = "auto", py::arg("device") = "cpu", py::arg("integer_kernels") = true)
      .def_property_readonly("device", &Qwen2AudioModel::device)
      .def_property_readonly("device_description", &Qwen2AudioModel::device_description)
      .def_property_readonly("device_weight_bytes", &Qwen2AudioModel::device_weight_bytes)
      .def_property_readonly("quantization_config_json",
                             [](const Qwen2AudioModel& self) -> std::optional<std::string> {
                               if (!self.quantization().enabled()) return std::nullopt;
                               return quantization_config_json(self.quantization());
                             })
      .def_property_readonly("quantized_layers",
                             [](py::object self_object) {
                               return quantized_layers_of(self_object.cast<const Qwen2AudioModel&>().weights(),
                                                          self_object);
                             })
      .def_property_readonly("config_json", [](const Qwen2AudioModel& self) { return config_to_json(self.config()); })
      .def_property_readonly(
          "generation_config_json",
          [](const Qwen2AudioModel& self) { return generation_config_to_json(self.generation_config()); })
      .def_property_readonly("dtype", [](const Qwen2AudioModel& self) { return dtype_label(self.dtype()); })
      .def_property_readonly("kv_cache_dtype",
                             [](const Qwen2AudioModel& self) { return dtype_label(self.kv_cache_dtype()); })
      .def_property("num_threads", &Qwen2AudioModel::num_threads, &Qwen2AudioModel::set_num_threads)
      .def_property_readonly(
          "native_bf16",
          [](const Qwen2AudioModel& self) { return self.cpu_gemm() != nullptr && self.cpu_gemm()->native_bf16(); })
      .def_property_readonly("integer_kernels",
                             [](const Qwen2AudioModel& self) {
                               return self.quantization().enabled() && self.cpu_gemm() != nullptr &&
                                      kernels::integer_kernels(*self.cpu_gemm());
                             })
      .def_property_readonly("copied_weight_bytes", &Qwen2AudioModel::copied_weight_bytes)
      .def_property_readonly("mapped_weight_bytes", &Qwen2AudioModel::mapped_weight_bytes)
      .def(
          "encode",
          [](const Qwen2AudioModel& self, const FloatArray& features, const std::optional<IntArray>& mask) {
            const AudioBatch audio = *audio_batch(features, mask);
            const AudioEncoder& encoder = self.encoder();
            py::array_t<float> out({audio.clips, encoder.output_frames(), encoder.hidden_size()});
            float* data = out.mutable_data();
            {
              py::gil_scoped_release release;
              self.encode(audio, data, python_interrupt());
            }
            return out;
          },
          py::arg("input_features"), py::arg("feature_attention_mask") = std::nullopt)
      .def(
          "audio_embeddings",
          [](const Qwen2AudioModel& self, const FloatArray& features, const std::optional<IntArray>& mask,
             bool full_window) {
            const AudioBatch audio = *audio_batch(features, mask);
            std::vector<float> embeddings;
            {
              py::gil_scoped_release release;
              embeddings = self.audio_embeddings(audio, python_interrupt(), full_window);
            }
            const int64_t hidden = self.config().text.hidden_size;
            py::array_t<float> out({static_cast<int64_t>(embeddings.size()) / hidden, hidden});
            std::copy(embeddings.begin(), embeddings.end(), out.mutable_data());
            return out;
          },
          py::arg("input_features"), py::arg("feature_attention_mask") = std::nullopt, py::arg("full_window") = false)
      .def(
          "audio_token_counts",
          [](const Qwen2AudioModel& self, const FloatArray& features, const std::optional<IntArray>& mask) {
            return self.audio_token_counts(*audio_batch(features, mask));
          },
          py::arg("input_features"), py::arg("feature_attention_mask") = std::nullopt)
      .def(
          "embed_tokens",
          [](const Qwen2AudioModel& self, const IntArray& ids) {
            const int64_t vocab = self.config().text.vocab_size;
            const int64_t hidden = self.config().text.hidden_size;
            const int64_t count = ids.size();
            const int64_t* data = ids.data();
            for (int64_t i = 0; i < count; ++i)
              if (data[i] < 0 || data[i] >= vocab)
                throw InvalidArgument("input_ids holds " + std::to_string(data[i]) + ", outside the vocabulary [0, " +
                                      std::to_string(vocab) + ")");
            std::vector<py::ssize_t> shape(ids.shape(), ids.shape() + ids.ndim());
            shape.push_back(hidden);
            py::array_t<float> out(shape);
            float* result = out.mutable_data();
            {
              py::gil_scoped_release release;
              self.decoder().embed(data, count, result);
            }
            return out;
          },
          py::arg("input_ids"), "Rows of embed_tokens for ids of any shape: [*ids.shape, hidden] float32.")
      .def(
          "forward",
          [](const Qwen2AudioModel& self, const IntArray& ids, const std::optional<IntArray>& mask,
             const std::optional<FloatArray>& features, const std::optional<IntArray>& feature_mask) {
            const TokenBatch tokens = token_batch(ids, mask);
            const std::optional<AudioBatch> audio = audio_batch(features, feature_mask);
            const int64_t vocab = self.config().text.vocab_size;
            self.check_tokens(tokens);
            py::array_t<float> logits({tokens.batch, tokens.steps, vocab});
            float* data = logits.mutable_data();
            {
              py::gil_scoped_release release;
              self.forward(tokens, audio ? &*audio : nullptr, data, python_interrupt());
            }
            return logits;
          },
          py::arg("input_ids"), py::arg("attention_mask") = std::nullopt, py::arg("input_features") = std::nullopt,
          py::arg("feature_attention_mask") = std::nullopt);

  py::class_<UltravoxModel, AudioLanguageModel, std::shared_ptr<UltravoxModel>>(module, "UltravoxModel")
      .def_static(
          "load",
          [](const std::filesystem::path& path, const std::string& dtype, int num_threads,
             const std::string& kv_cache_dtype, const std::string& device, const std::string& quantization,
             int64_t quantization_group_size, const std::optional<std::string>& lm_head_quantization,
             bool integer_kernels) {
            const LoadOptions options = load_options(dtype, num_threads, kv_cache_dtype, device, quantization,
                                                     quantization_group_size, lm_head_quantization, integer_kernels);
            py::gil_scoped_release release;
            return UltravoxModel::load(path, options);
          },
          py::arg("path"), py::arg("dtype") = "auto", py::arg("num_threads") = 0, py::arg("kv_cache_dtype") = "auto",
          py::arg("device") = "cpu", py::arg("quantization") = "none", py::arg("quantization_group_size") = 128,
          py::arg("lm_head_quantization") = std::nullopt, py::arg("integer_kernels") = true)
      .def_property_readonly("quantized_layers",
                             [](py::object self_object) {
                               return quantized_layers_of(self_object.cast<const UltravoxModel&>().weights(),
                                                          self_object);
                             })
      .def_property_readonly("dtype", [](const UltravoxModel& self) { return dtype_label(self.dtype()); })
      .def_property_readonly("kv_cache_dtype",
                             [](const UltravoxModel& self) { return dtype_label(self.kv_cache_dtype()); })
      .def_property("num_threads", &UltravoxModel::num_threads, &UltravoxModel::set_num_threads)
      .def_property_readonly("stack_factor", [](const UltravoxModel& self) { return self.config().stack_factor; })
      .def_property_readonly("device", [](const UltravoxModel&) { return std::string("cpu"); })
      .def(
          "encode",
          [](const UltravoxModel& self, const FloatArray& values, const std::optional<IntArray>& lens) {
            std::vector<int64_t> mask;
            const AudioBatch audio = ultravox_audio(values, lens, std::nullopt, mask);
            py::array_t<float> out({audio.clips, encoder_attended_frames(audio.frames), self.config().audio.d_model});
            float* data = out.mutable_data();
            {
              py::gil_scoped_release release;
              self.encode(audio, data, python_interrupt());
            }
            return out;
          },
          py::arg("audio_values"), py::arg("audio_lens") = std::nullopt,
          "The encoder's last hidden state of every frame: (chunks, ceil(frames / 2), d_model).")
      .def(
          "audio_embeddings",
          [](const UltravoxModel& self, const FloatArray& values, const std::optional<IntArray>& lens, bool all_rows) {
            std::vector<int64_t> mask;
            const AudioBatch audio = ultravox_audio(values, lens, std::nullopt, mask);
            std::vector<float> embeddings;
            {
              py::gil_scoped_release release;
              embeddings = self.audio_embeddings(audio, python_interrupt(), all_rows);
            }
            const int64_t hidden = self.text_config().hidden_size;
            return owning_array(std::move(embeddings), {static_cast<int64_t>(embeddings.size()) / hidden, hidden});
          },
          py::arg("audio_values"), py::arg("audio_lens") = std::nullopt, py::arg("all_rows") = false,
          "Each chunk's audio token rows, chunk after chunk; all_rows: every stacked row of each chunk.")
      .def(
          "audio_token_counts",
          [](const UltravoxModel& self, const FloatArray& values, const std::optional<IntArray>& lens) {
            std::vector<int64_t> mask;
            return self.audio_token_counts(ultravox_audio(values, lens, std::nullopt, mask));
          },
          py::arg("audio_values"), py::arg("audio_lens") = std::nullopt)
      .def(
          "embed",
          [](const UltravoxModel& self, const IntArray& ids, const std::optional<FloatArray>& values,
             const std::optional<IntArray>& lens, const std::optional<IntArray>& starts) {
            const TokenBatch tokens = token_batch(ids, std::nullopt);
            self.check_tokens(tokens);
            std::vector<int64_t> mask;
            std::optional<AudioBatch> audio;
            if (values) audio = ultravox_audio(*values, lens, starts, mask);
            const int64_t hidden = self.text_config().hidden_size;
            py::array_t<float> out({tokens.batch, tokens.steps, hidden});
            float* data = out.mutable_data();
            {
              py::gil_scoped_release release;
              std::vector<float> rows;
              if (audio) rows = self.audio_embeddings(*audio, python_interrupt());
              self.embed(tokens, audio ? &*audio : nullptr, rows.data(), static_cast<int64_t>(rows.size()) / hidden,
                         data);
            }
            return out;
          },
          py::arg("input_ids"), py::arg("audio_values") = std::nullopt, py::arg("audio_lens") = std::nullopt,
          py::arg("audio_token_start_idx") = std::nullopt, "The merged inputs_embeds (batch, steps, hidden).")
      .def(
          "forward",
          [](const UltravoxModel& self, const IntArray& ids, const std::optional<IntArray>& attention_mask,
             const std::optional<FloatArray>& values, const std::optional<IntArray>& lens,
             const std::optional<IntArray>& starts) {
            const TokenBatch tokens = token_batch(ids, attention_mask);
            self.check_tokens(tokens);
            std::vector<int64_t> mask;
            std::optional<AudioBatch> audio;
            if (values)
              audio = ultravox_audio(*values, lens, starts, mask);
            else if (lens || starts)
              throw InvalidArgument("audio_lens and audio_token_start_idx need audio_values");
            py::array_t<float> logits({tokens.batch, tokens.steps, self.text_config().vocab_size});
            float* data = logits.mutable_data();
            {
              py::gil_scoped_release release;
              self.forward(tokens, audio ? &*audio : nullptr, data, python_interrupt());
            }
            return logits;
          },
          py::arg("input_ids"), py::arg("attention_mask") = std::nullopt, py::arg("audio_values") = std::nullopt,
          py::arg("audio_lens") = std::nullopt, py::arg("audio_token_start_idx") = std::nullopt);

  py::class_<Session>(module, "Session")
      .def(py::init([](std::shared_ptr<AudioLanguageModel> model, int64_t batch) {
             return std::make_unique<Session>(std::move(model), batch);
           }),
           py::arg("model"), py::arg("batch_size") = 1)
      .def_property_readonly("batch_size", &Session::batch)
      .def_property_readonly("length", &Session::length)
      .def("tokens", &Session::tokens)
      .def(
          "append",
          [](Session& self, const IntArray& ids, const std::optional<IntArray>& mask,
             const std::optional<FloatArray>& features, const std::optional<IntArray>& feature_mask,
             const std::optional<IntArray>& audio_lens, const std::optional<IntArray>& audio_token_start_idx) {
            const TokenBatch tokens = token_batch(ids, mask);
            std::optional<AudioBatch> audio = audio_batch(features, feature_mask);
            std::vector<int64_t> lens_mask;
            if (!audio && (audio_lens || audio_token_start_idx))
              throw InvalidArgument("audio_lens and audio_token_start_idx need input_features");
            if (audio) {
              lens_to_mask(*audio, audio_lens, lens_mask);
              set_token_starts(*audio, audio_token_start_idx);
            }
            py::gil_scoped_release release;
            self.append(tokens, audio ? &*audio : nullptr, python_interrupt());
          },
          py::arg("input_ids"), py::arg("attention_mask") = std::nullopt, py::arg("input_features") = std::nullopt,
          py::arg("feature_attention_mask") = std::nullopt, py::arg("audio_lens") = std::nullopt,
          py::arg("audio_token_start_idx") = std::nullopt)
      .def(
          "generate",
          [](Session& self, int64_t max_new_tokens, int64_t min_new_tokens, bool do_sample, double temperature,
             int64_t top_k, double top_p, double repetition_penalty, std::optional<uint64_t> seed,
             std::vector<int64_t> eos_token_ids, int64_t pad_token_id, std::optional<py::function> on_tokens,
             bool output_scores, bool output_logits, bool output_logprobs) {
            GenerationOptions options;
            options.max_new_tokens = max_new_tokens;
            options.min_new_tokens = min_new_tokens;
            options.sampling = {do_sample, temperature, top_k, top_p, repetition_penalty};
            options.eos_token_ids = std::move(eos_token_ids);
            options.pad_token_id = pad_token_id;
            options.seed = seed;
            options.output_scores = output_scores;
            options.output_logits = output_logits;
            options.output_logprobs = output_logprobs;
            TokenCallback callback;
            if (on_tokens) {
              // The callback may return row indices to finish (stop strings matched in Python).
              callback = [&on_tokens](const int64_t* tokens, int64_t batch, uint8_t* finish) {
                py::gil_scoped_acquire acquire;
                py::array_t<int64_t> row(batch);
                std::copy_n(tokens, batch, row.mutable_data());
                const py::object rows = (*on_tokens)(row);
                if (!rows.is_none()) {
                  for (const py::handle item : rows) {
                    const auto index = item.cast<int64_t>();
                    if (index < 0 || index >= batch)
                      throw InvalidArgument("the token callback asked to finish row " + std::to_string(index) +
                                            " of a batch of " + std::to_string(batch));
                    finish[index] = 1;
                  }
                }
                if (PyErr_CheckSignals() != 0) throw py::error_already_set();
              };
            }
            std::vector<int64_t> generated;
            GenerationRecord record;
            const bool recording = output_scores || output_logits || output_logprobs;
            {
              py::gil_scoped_release release;
              generated = self.generate(options, callback, python_interrupt(), recording ? &record : nullptr);
            }
            const int64_t batch = self.batch();
            const int64_t steps = static_cast<int64_t>(generated.size()) / batch;
            py::array_t<int64_t> out({batch, steps});
            std::copy(generated.begin(), generated.end(), out.mutable_data());
            if (!recording) return py::object(out);
            const int64_t vocab = self.model().text_config().vocab_size;
            auto per_step = [&](std::vector<float>& values, bool wanted) -> py::object {
              if (!wanted) return py::none();
              return owning_array(std::move(values), {steps, batch, vocab});
            };
            py::object logprobs = py::none();
            if (output_logprobs) logprobs = owning_array(std::move(record.logprobs), {batch, steps});
            return py::object(py::make_tuple(out, per_step(record.scores, output_scores),
                                             per_step(record.logits, output_logits), logprobs));
          },
          py::arg("max_new_tokens"), py::arg("min_new_tokens") = 0, py::arg("do_sample") = false,
          py::arg("temperature") = 1.0, py::arg("top_k") = 0, py::arg("top_p") = 1.0,
          py::arg("repetition_penalty") = 1.0, py::arg("seed") = std::nullopt,
          py::arg("eos_token_ids") = std::vector<int64_t>{}, py::arg("pad_token_id") = 0,
          py::arg("on_tokens") = std::nullopt, py::arg("output_scores") = false, py::arg("output_logits") = false,
          py::arg("output_logprobs") = false,
          "Returns the new tokens [batch, steps]; with any output_* flag, a tuple (tokens, scores [steps, batch, "
          "vocab] or None, logits [steps, batch, vocab] or None, logprobs [batch, steps] or None).")
      .def("truncate", &Session::truncate, py::arg("length"))
      .def("reset", &Session::reset);

  py::class_<DecodeBatch>(module, "DecodeBatch",
                          "Continuous batching: slots of their own length decoded together (generate/decode_batch.h).")
      .def(py::init([](std::shared_ptr<AudioLanguageModel> model, int64_t slots, int64_t capacity) {
             return std::make_unique<DecodeBatch>(std::move(model), slots, capacity);
           }),
           py::arg("model"), py::arg("slots"), py::arg("capacity"))
      .def_property_readonly("slots", &DecodeBatch::slots)
      .def_property_readonly("capacity", &DecodeBatch::capacity)
      .def_property_readonly("taken", &DecodeBatch::taken)
      .def_property_readonly("stepping", &DecodeBatch::stepping)
      .def_property_readonly("free_slot", &DecodeBatch::free_slot)
      .def(
          "admit",
          [](DecodeBatch& self, Session& session, int64_t max_new_tokens, bool do_sample, double temperature,
             int64_t top_k, double top_p, double repetition_penalty, uint64_t seed,
             std::vector<int64_t> eos_token_ids) {
            SlotOptions options;
            options.max_new_tokens = max_new_tokens;
            options.sampling = {do_sample, temperature, top_k, top_p, repetition_penalty};
            options.eos_token_ids = std::move(eos_token_ids);
            options.seed = seed;
            py::gil_scoped_release release;
            return self.admit(session, options);
          },
          py::arg("session"), py::arg("max_new_tokens"), py::arg("do_sample") = false, py::arg("temperature") = 1.0,
          py::arg("top_k") = 0, py::arg("top_p") = 1.0, py::arg("repetition_penalty") = 1.0, py::arg("seed") = 0,
          py::arg("eos_token_ids") = std::vector<int64_t>{},
          "Moves a prefilled session into a free slot and picks its first token; returns the slot.")
      .def(
          "step",
          [](DecodeBatch& self) {
            std::vector<SlotToken> tokens;
            {
              py::gil_scoped_release release;
              self.step(tokens, python_interrupt());
            }
            py::list out;
            for (const SlotToken& token : tokens) out.append(py::make_tuple(token.slot, token.token, token.finished));
            return out;
          },
          "Decodes one token for every stepping slot: a list of (slot, token, finished).")
      .def("finish", &DecodeBatch::finish, py::arg("slot"))
      .def(
          "release",
          [](DecodeBatch& self, int64_t slot, Session* into) {
            py::gil_scoped_release release;
            self.release(slot, into);
          },
          py::arg("slot"), py::arg("into") = nullptr)
      .def("tokens", &DecodeBatch::tokens, py::arg("slot"))
      .def("generated", &DecodeBatch::generated, py::arg("slot"));
}

}  // namespace qwen2audio::bindings
