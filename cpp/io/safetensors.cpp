#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "runtime/errors.h"

namespace qwen2audio {
namespace {

using json = nlohmann::json;

// A well-formed header is an object of objects holding flat arrays: depth 3.
constexpr int kMaxHeaderJsonDepth = 4;

[[noreturn]] void fail(const std::string& origin, const std::string& what) {
  throw CheckpointError(origin + ": " + what);
}

json parse_header_json(const char* begin, const char* end, const std::string& origin) {
  // nlohmann keeps the last of duplicate keys silently; a checkpoint naming one tensor twice is
  // ambiguous, so the parser callback rejects it, and caps the depth the parser will build.
  std::set<std::string> top_level_keys;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth > kMaxHeaderJsonDepth) fail(origin, "header JSON is nested too deeply");
    if (event == json::parse_event_t::key && depth == 1) {
      const auto& key = parsed.get_ref<const std::string&>();
      if (!top_level_keys.insert(key).second) fail(origin, "duplicate tensor name '" + key + "' in header");
    }
    return true;
  };
  try {
    return json::parse(begin, end, callback);
  } catch (const json::exception& error) {
    fail(origin, std::string("invalid JSON header: ") + error.what());
  }
}

uint64_t read_u64_le(const uint8_t* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

size_t non_negative_size(const json& value, const std::string& origin, const std::string& what) {
  if (!value.is_number_integer() ||
      (value.is_number_integer() && !value.is_number_unsigned() && value.get<int64_t>() < 0))
    fail(origin, what + " must be a non-negative integer");
  const auto number = value.get<uint64_t>();
  if (number > std::numeric_limits<size_t>::max() / 2) fail(origin, what + " is absurdly large");
  return static_cast<size_t>(number);
}

TensorRecord parse_record(const std::string& name, const json& entry, const std::string& origin) {
  const std::string where = "tensor '" + name + "'";
  if (!entry.is_object()) fail(origin, where + " entry is not an object");
  auto field = [&](const char* key) -> const json& {
    auto found = entry.find(key);
    if (found == entry.end()) fail(origin, where + " has no '" + key + "'");
    return *found;
  };
  const json& dtype_json = field("dtype");
  if (!dtype_json.is_string()) fail(origin, where + " dtype is not a string");
  const auto dtype = dtype_from_name(dtype_json.get_ref<const std::string&>());
  if (!dtype) fail(origin, where + " has unknown dtype '" + dtype_json.get<std::string>() + "'");

  const json& shape_json = field("shape");
  if (!shape_json.is_array()) fail(origin, where + " shape is not an array");
  TensorRecord record{name, *dtype, {}, 0, 0};
  size_t byte_size = dtype_size(*dtype);
  for (const json& extent_json : shape_json) {
    const size_t extent = non_negative_size(extent_json, origin, where + " shape entry");
    if (extent != 0 && __builtin_mul_overflow(byte_size, extent, &byte_size))
      fail(origin, where + " shape " + shape_json.dump() + " overflows the addressable size");
    if (extent == 0) byte_size = 0;
    record.shape.push_back(static_cast<int64_t>(extent));
  }
  if (byte_size != 0)
    for (int64_t extent : record.shape)
      if (extent == 0) byte_size = 0;

  const json& offsets = field("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2) fail(origin, where + " data_offsets must be [begin, end]");
  record.begin = non_negative_size(offsets[0], origin, where + " data_offsets begin");
  record.end = non_negative_size(offsets[1], origin, where + " data_offsets end");
  if (record.end < record.begin) fail(origin, where + " data_offsets end is before begin");
  if (record.end - record.begin != byte_size)
    fail(origin, where + " holds " + std::to_string(record.end - record.begin) + " bytes but dtype " +
                     std::string(dtype_name(*dtype)) + " and shape " + shape_to_string(record.shape) + " need " +
                     std::to_string(byte_size));
  return record;
}

}  // namespace

SafetensorsHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& origin) {
  if (size < 8) fail(origin, "file is " + std::to_string(size) + " bytes, too small to be safetensors");
  const uint64_t header_length = read_u64_le(data);
  if (header_length > size - 8)
    fail(origin, "header length " + std::to_string(header_length) + " runs past the end of the file (" +
                     std::to_string(size) + " bytes)");
  if (header_length > kMaxSafetensorsHeaderBytes)
    fail(origin, "header length " + std::to_string(header_length) + " exceeds the " +
                     std::to_string(kMaxSafetensorsHeaderBytes) + "-byte limit");
  const char* header_begin = reinterpret_cast<const char*>(data + 8);
  const json header = parse_header_json(header_begin, header_begin + header_length, origin);
  if (!header.is_object()) fail(origin, "header is not a JSON object");

  SafetensorsHeader result;
  result.data_offset = 8 + static_cast<size_t>(header_length);
  const size_t data_size = size - result.data_offset;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(origin, "__metadata__ is not an object");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) fail(origin, "__metadata__ value for '" + key + "' is not a string");
        result.metadata[key] = value.get<std::string>();
      }
      continue;
    }
    TensorRecord record = parse_record(name, entry, origin);
    if (record.end > data_size)
      fail(origin, "tensor '" + name + "' data_offsets [" + std::to_string(record.begin) + ", " +
                       std::to_string(record.end) + "] run past the data section (" + std::to_string(data_size) +
                       " bytes)");
    result.tensors.push_back(std::move(record));
  }

  std::sort(result.tensors.begin(), result.tensors.end(), [](const TensorRecord& a, const TensorRecord& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const TensorRecord* previous = nullptr;
  for (const TensorRecord& record : result.tensors) {
    if (record.begin == record.end) continue;  // empty tensors occupy no bytes
    if (previous != nullptr && record.begin < previous->end)
      fail(origin, "tensors '" + previous->name + "' and '" + record.name + "' overlap in the data section");
    previous = &record;
  }
  return result;
}

SafetensorsFile::SafetensorsFile(std::shared_ptr<MappedFile> file, SafetensorsHeader header)
    : file_(std::move(file)), header_(std::move(header)) {
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_by_name_.emplace(header_.tensors[i].name, i);
}

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto file = MappedFile::open(path);
  auto header = parse_safetensors(file->data(), file->size(), path);
  return std::shared_ptr<SafetensorsFile>(new SafetensorsFile(std::move(file), std::move(header)));
}

const TensorRecord* SafetensorsFile::find(const std::string& name) const {
  auto found = index_by_name_.find(name);
  return found == index_by_name_.end() ? nullptr : &header_.tensors[found->second];
}

TensorView SafetensorsFile::view(const TensorRecord& record) const {
  return TensorView{file_->data() + header_.data_offset + record.begin, record.dtype, record.shape};
}

}  // namespace qwen2audio
