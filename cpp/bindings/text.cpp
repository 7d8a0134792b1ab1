#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <exception>
#include <span>

#include "bindings/bindings.h"
#include "runtime/errors.h"
#include "text/incremental_decoder.h"
#include "text/tokenizer.h"

namespace qwen2audio::bindings {
namespace {

using text::IncrementalDecoder;
using text::Tokenizer;
// pybind11 holders cannot point to const; the tokenizer is immutable after loading anyway.
using TokenizerPtr = std::shared_ptr<Tokenizer>;
using IdArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

py::list to_list(const std::vector<int32_t>& ids) {
  py::list list(ids.size());
  for (size_t index = 0; index < ids.size(); ++index) PyList_SET_ITEM(list.ptr(), index, PyLong_FromLong(ids[index]));
  return list;
}

// The UTF-8 that CPython keeps with a str: no copy, always well formed (CPython refuses lone
// surrogates here), and valid while the str lives (the caller holds it), so it can be read with the
// GIL released.
std::string_view utf8_of(const py::handle& text) {
  if (!PyUnicode_Check(text.ptr()))
    throw InvalidArgument(std::string("text must be a str, got ") + Py_TYPE(text.ptr())->tp_name);
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(text.ptr(), &size);
  if (data == nullptr) {
    PyErr_Clear();
    throw InvalidArgument("text cannot be encoded as UTF-8 (it holds a lone surrogate code point)");
  }
  return {data, static_cast<size_t>(size)};
}

// Ids from a list or tuple of Python (or NumPy) integers, read directly: NumPy's own conversion
// of a long list costs more than decoding it.
std::vector<int64_t> ids_from_sequence(const py::handle& sequence) {
  PyObject* items = PySequence_Fast(sequence.ptr(), "token ids must be a sequence of integers");
  if (items == nullptr) throw py::error_already_set();
  const py::object owner = py::reinterpret_steal<py::object>(items);
  const Py_ssize_t size = PySequence_Fast_GET_SIZE(items);
  PyObject** elements = PySequence_Fast_ITEMS(items);
  std::vector<int64_t> ids(static_cast<size_t>(size));
  for (Py_ssize_t index = 0; index < size; ++index) {
    PyObject* item = elements[index];
    long long value = 0;
    if (PyLong_CheckExact(item)) {
      value = PyLong_AsLongLong(item);
    } else {
      PyObject* number = PyNumber_Index(item);  // NumPy integers, bool, anything with __index__
      if (number == nullptr) {
        PyErr_Clear();
        if (PySequence_Check(item) && !PyUnicode_Check(item) && !PyBytes_Check(item))
          throw InvalidArgument(
              "decode takes one sequence of token ids, got a nested sequence; use batch_decode for several");
        throw InvalidArgument(std::string("token ids must be integers, got ") + Py_TYPE(item)->tp_name);
      }
      value = PyLong_AsLongLong(number);
      Py_DECREF(number);
    }
    if (value == -1 && PyErr_Occurred()) {
      PyErr_Clear();
      throw InvalidArgument("token id " + py::repr(item).cast<std::string>() + " is not in the vocabulary");
    }
    ids[static_cast<size_t>(index)] = value;
  }
  return ids;
}

// One sequence of ids from a list, tuple or integer array, held for reading without the GIL.
struct IdSequence {
  std::vector<int64_t> listed;
  IdArray array;
  std::span<const int64_t> span;
};

std::span<const int64_t> id_span(const IdArray& ids);

IdSequence read_ids(const py::handle& ids) {
  IdSequence sequence;
  if (PyList_Check(ids.ptr()) || PyTuple_Check(ids.ptr())) {
    sequence.listed = ids_from_sequence(ids);
    sequence.span = sequence.listed;
    return sequence;
  }
  if (py::isinstance<py::array>(ids)) {
    const char kind = py::reinterpret_borrow<py::array>(ids).dtype().kind();
    if (kind != 'i' && kind != 'u') throw InvalidArgument("token ids must be integers, got an array of another type");
  }
  sequence.array = py::reinterpret_borrow<py::object>(ids).cast<IdArray>();
  sequence.span = id_span(sequence.array);
  return sequence;
}

std::span<const int64_t> id_span(const IdArray& ids) {
  if (ids.ndim() > 1)
    throw InvalidArgument("token ids must be one-dimensional, got " + std::to_string(ids.ndim()) + " dimensions");
  return {ids.data(), static_cast<size_t>(ids.size())};
}

py::dict added_token_dict(const text::AddedToken& token) {
  py::dict entry;
  entry["id"] = token.id;
  entry["content"] = token.content;
  entry["special"] = token.special;
  entry["single_word"] = token.single_word;
  entry["lstrip"] = token.lstrip;
  entry["rstrip"] = token.rstrip;
  entry["normalized"] = token.normalized;
  return entry;
}

}  // namespace

void register_text(py::module_& module) {
  py::class_<Tokenizer, TokenizerPtr>(module, "Tokenizer",
                                      "Qwen2 byte-level BPE tokenizer (added tokens, NFC, PCRE2 pre-tokenizer, BPE)")
      .def_static(
          "from_directory",
          [](const std::filesystem::path& directory) {
            py::gil_scoped_release release;
            return std::const_pointer_cast<Tokenizer>(Tokenizer::from_directory(directory));
          },
          py::arg("directory"))
      .def_static(
          "from_files",
          [](std::optional<std::filesystem::path> tokenizer_json, std::optional<std::filesystem::path> vocab_json,
             std::optional<std::filesystem::path> merges_txt,
             std::optional<std::filesystem::path> tokenizer_config_json,
             std::optional<std::filesystem::path> added_tokens_json) {
            text::TokenizerFiles files;
            files.tokenizer_json = tokenizer_json.value_or(std::filesystem::path());
            files.vocab_json = vocab_json.value_or(std::filesystem::path());
            files.merges_txt = merges_txt.value_or(std::filesystem::path());
            files.tokenizer_config_json = tokenizer_config_json.value_or(std::filesystem::path());
            files.added_tokens_json = added_tokens_json.value_or(std::filesystem::path());
            py::gil_scoped_release release;
            return std::const_pointer_cast<Tokenizer>(Tokenizer::load(files));
          },
          py::arg("tokenizer_json") = py::none(), py::arg("vocab_json") = py::none(),
          py::arg("merges_txt") = py::none(), py::arg("tokenizer_config_json") = py::none(),
          py::arg("added_tokens_json") = py::none())
      .def(
          "encode",
          [](const Tokenizer& self, const py::str& text, bool split_special_tokens) {
            const std::string_view view = utf8_of(text);
            std::vector<int32_t> ids;
            {
              py::gil_scoped_release release;
              ids = self.encode(view, split_special_tokens, /*known_valid_utf8=*/true);
            }
            return to_list(ids);
          },
          py::arg("text"), py::arg("split_special_tokens") = false)
      .def(
          "encode_batch",
          [](const Tokenizer& self, const py::list& items, bool split_special_tokens) {
            std::vector<std::string_view> texts;
            texts.reserve(items.size());
            for (const py::handle item : items) texts.push_back(utf8_of(item));
            std::vector<std::vector<int32_t>> batch(texts.size());
            {
              py::gil_scoped_release release;
              // Threads only pay off for large batches; the word cache is shared safely.
              size_t total_bytes = 0;
              for (const auto& text : texts) total_bytes += text.size();
              std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic) if (texts.size() > 1 && total_bytes > (size_t{1} << 16))
              for (size_t index = 0; index < texts.size(); ++index) {
                try {
                  batch[index] = self.encode(texts[index], split_special_tokens, /*known_valid_utf8=*/true);
                } catch (...) {
#pragma omp critical(qwen2audio_encode_batch_failure)
                  if (!failure) failure = std::current_exception();
                }
              }
              if (failure) std::rethrow_exception(failure);
            }
            py::list result(batch.size());
            for (size_t index = 0; index < batch.size(); ++index)
              PyList_SET_ITEM(result.ptr(), index, to_list(batch[index]).release().ptr());
            return result;
          },
          py::arg("texts"), py::arg("split_special_tokens") = false)
      .def(
          "pre_tokenize",
          [](const Tokenizer& self, const py::str& text, bool split_special_tokens) {
            const std::string_view view = utf8_of(text);
            std::vector<std::string> words;
            {
              py::gil_scoped_release release;
              words = self.pre_tokenize(view, split_special_tokens);
            }
            py::list result(words.size());
            for (size_t index = 0; index < words.size(); ++index)
              PyList_SET_ITEM(result.ptr(), index, py::bytes(words[index]).release().ptr());
            return result;
          },
          py::arg("text"), py::arg("split_special_tokens") = false,
          "The words BPE encodes, as bytes (after added-token splitting, NFC and the regex).")
      .def(
          "decode",
          [](const Tokenizer& self, const py::object& ids, bool skip_special_tokens) {
            const IdSequence sequence = read_ids(ids);
            std::string text;
            {
              py::gil_scoped_release release;
              text = self.decode(sequence.span, skip_special_tokens);
            }
            return py::str(text);
          },
          py::arg("ids"), py::arg("skip_special_tokens") = false)
      .def(
          "decode_batch",
          [](const Tokenizer& self, const py::list& batch, bool skip_special_tokens) {
            std::vector<IdSequence> sequences;
            sequences.reserve(batch.size());
            for (const py::handle ids : batch) sequences.push_back(read_ids(ids));
            std::vector<std::string> texts(sequences.size());
            {
              py::gil_scoped_release release;
              for (size_t index = 0; index < sequences.size(); ++index)
                texts[index] = self.decode(sequences[index].span, skip_special_tokens);
            }
            py::list result(texts.size());
            for (size_t index = 0; index < texts.size(); ++index)
              PyList_SET_ITEM(result.ptr(), index, py::str(texts[index]).release().ptr());
            return result;
          },
          py::arg("batch"), py::arg("skip_special_tokens") = false)
      .def(
          "token_to_id",
          [](const Tokenizer& self, const std::string& token) -> std::optional<int32_t> {
            const int32_t id = self.token_to_id(token);
            return id < 0 ? std::nullopt : std::optional<int32_t>(id);
          },
          py::arg("token"))
      .def(
          "id_to_token",
          [](const Tokenizer& self, int64_t id) -> std::optional<py::str> {
            const auto token = self.id_to_token(id);
            if (!token) return std::nullopt;
            return py::str(*token);
          },
          py::arg("id"))
      .def(
          "token_bytes",
          [](const Tokenizer& self, int64_t id) {
            self.check_id(id);
            return py::bytes(std::string(self.token_bytes(static_cast<int32_t>(id))));
          },
          py::arg("id"), "The bytes a token decodes to.")
      .def("has_id", &Tokenizer::has_id, py::arg("id"))
      .def(
          "is_special",
          [](const Tokenizer& self, int64_t id) {
            return self.has_id(id) && self.is_special(static_cast<int32_t>(id));
          },
          py::arg("id"))
      .def(
          "model_vocab",
          [](const Tokenizer& self) {
            py::dict vocab;
            const text::BpeModel& model = self.model();
            for (int32_t id = 0; id < model.id_limit(); ++id)
              if (model.has_id(id)) vocab[py::str(model.id_to_token(id))] = id;
            return vocab;
          },
          "The BPE vocabulary (spelling -> id), without added tokens.")
      .def(
          "merges",
          [](const Tokenizer& self) {
            const auto& merges = self.model().merges();
            py::list result(merges.size());
            for (size_t index = 0; index < merges.size(); ++index) {
              py::tuple pair = py::make_tuple(py::str(self.model().id_to_token(merges[index].first)),
                                              py::str(self.model().id_to_token(merges[index].second)));
              PyList_SET_ITEM(result.ptr(), index, pair.release().ptr());
            }
            return result;
          },
          "Merges in rank order, as (left, right) spellings.")
      .def("added_tokens",
           [](const Tokenizer& self) {
             py::list result;
             for (const auto& token : self.added_tokens()) result.append(added_token_dict(token));
             return result;
           })
      .def_property_readonly("vocab_size", [](const Tokenizer& self) { return self.model().size(); })
      .def("__len__", &Tokenizer::size_with_added)
      .def_property_readonly("id_limit", &Tokenizer::id_limit)
      .def_property_readonly("normalizes_nfc", &Tokenizer::normalizes_nfc)
      .def_property_readonly("pattern", &Tokenizer::pattern)
      .def_property_readonly("model_source", &Tokenizer::model_source)
      .def_property_readonly("ignore_merges", [](const Tokenizer& self) { return self.model().ignore_merges(); })
      .def_property_readonly("cached_words", &Tokenizer::cached_words)
      .def(
          "incremental_decoder",
          [](const TokenizerPtr& self, bool skip_special_tokens) {
            return std::make_unique<IncrementalDecoder>(self, skip_special_tokens);
          },
          py::arg("skip_special_tokens") = true);

  py::class_<IncrementalDecoder>(module, "IncrementalDecoder",
                                 "Streaming detokenizer: add() returns only whole characters; flush() the rest")
      .def("add", &IncrementalDecoder::add, py::arg("token_id"))
      .def("flush", &IncrementalDecoder::flush)
      .def_property_readonly("pending_bytes", &IncrementalDecoder::pending_bytes)
      .def_property_readonly("skip_special_tokens", &IncrementalDecoder::skip_special_tokens);
}

}  // namespace qwen2audio::bindings
