#pragma once

// Reads the shared reference's .npy files (numpy.save, little-endian, C order) in the GPU tests.

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace qwen2audio::testing {

template <typename T>
constexpr const char* npy_type() {
  if constexpr (std::is_same_v<T, float>) return "'<f4'";
  if constexpr (std::is_same_v<T, int32_t>) return "'<i4'";
  return "'<i8'";
}

template <typename T>
std::vector<T> read_npy(const std::filesystem::path& path, std::vector<int64_t>* shape = nullptr) {
  std::ifstream stream(path, std::ios::binary);
  if (!stream) throw std::runtime_error("cannot open " + path.string());
  char magic[8];
  stream.read(magic, 8);
  if (!stream || std::memcmp(magic, "\x93NUMPY", 6) != 0) throw std::runtime_error(path.string() + ": not .npy");
  uint32_t header_length = 0;
  unsigned char bytes[4] = {0, 0, 0, 0};
  stream.read(reinterpret_cast<char*>(bytes), magic[6] == 1 ? 2 : 4);
  header_length = bytes[0] | (bytes[1] << 8) | (bytes[2] << 16) | (static_cast<uint32_t>(bytes[3]) << 24);
  std::string header(header_length, '\0');
  stream.read(header.data(), header_length);
  if (header.find(npy_type<T>()) == std::string::npos || header.find("'fortran_order': True") != std::string::npos)
    throw std::runtime_error(path.string() + ": unexpected header " + header);
  const size_t open = header.find('(', header.find("'shape'")), close = header.find(')', open);
  std::string dimensions = header.substr(open + 1, close - open - 1);
  for (char& c : dimensions)
    if (c == ',') c = ' ';
  std::istringstream parts(dimensions);
  std::vector<int64_t> extents;
  size_t count = 1;
  for (int64_t value; parts >> value;) {
    extents.push_back(value);
    count *= static_cast<size_t>(value);
  }
  std::vector<T> values(count);
  stream.read(reinterpret_cast<char*>(values.data()), static_cast<std::streamsize>(count * sizeof(T)));
  if (!stream) throw std::runtime_error(path.string() + ": truncated");
  if (shape) *shape = extents;
  return values;
}

}  // namespace qwen2audio::testing
