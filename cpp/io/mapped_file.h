#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace qwen2audio {

// A whole file mapped read-only. Weights are used in place from this mapping, so the page cache
// holds the only copy of a checkpoint; shared_ptr keeps it mapped while any view is alive.
class MappedFile {
 public:
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size) : path_(std::move(path)), data_(data), size_(size) {}
  std::string path_;
  const uint8_t* data_;
  size_t size_;
};

}  // namespace qwen2audio
