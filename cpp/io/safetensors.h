#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/mapped_file.h"
#include "runtime/tensor_view.h"

namespace qwen2audio {

struct TensorRecord {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  size_t begin;  // byte offsets into the data section, which follows the header
  size_t end;
};

// The safetensors header caps this size in its own reference implementation; a larger one is a
// corrupt or hostile file, and refusing it keeps a bad length from driving a huge allocation.
inline constexpr size_t kMaxSafetensorsHeaderBytes = 100u << 20;

struct SafetensorsHeader {
  std::vector<TensorRecord> tensors;  // in file order of their data offsets
  std::map<std::string, std::string> metadata;
  size_t data_offset = 0;  // where the data section starts in the file
};

// Parses and validates a complete safetensors image held in memory. Every offset is checked
// against `size`, so a view built from a record never reaches outside the buffer. `origin` names
// the file in error messages.
SafetensorsHeader parse_safetensors(const uint8_t* data, size_t size, const std::string& origin);

class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  const std::vector<TensorRecord>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const TensorRecord* find(const std::string& name) const;
  TensorView view(const TensorRecord& record) const;
  const std::shared_ptr<MappedFile>& mapping() const { return file_; }

 private:
  SafetensorsFile(std::shared_ptr<MappedFile> file, SafetensorsHeader header);
  std::shared_ptr<MappedFile> file_;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_by_name_;
};

}  // namespace qwen2audio
