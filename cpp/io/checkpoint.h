#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/config.h"
#include "io/safetensors.h"

namespace qwen2audio {

// A Hugging Face checkpoint as published: a folder with config.json and either model.safetensors
// or model.safetensors.index.json plus its shards (a lone .safetensors file is accepted too).
// Every shard stays memory-mapped for the checkpoint's lifetime and tensors are views into it.
class Checkpoint {
 public:
  static std::shared_ptr<Checkpoint> open(const std::filesystem::path& path);

  const std::filesystem::path& directory() const { return directory_; }
  bool has_config() const { return config_.has_value(); }
  const Qwen2AudioConfig& config() const;  // throws ConfigError when the folder has no Qwen2-Audio config.json
  // config.json's model_type, empty without one.
  const std::string& model_type() const { return model_type_; }
  // An Ultravox folder's config.json (model_type "ultravox"); null for other folders.
  const UltravoxConfig* ultravox_config() const { return ultravox_config_ ? &*ultravox_config_ : nullptr; }
  const GenerationConfig& generation_config() const { return generation_config_; }
  bool has_generation_config() const { return has_generation_config_; }

  std::vector<std::string> tensor_names() const;  // sorted
  size_t size() const { return locations_.size(); }
  bool contains(const std::string& name) const { return locations_.count(name) != 0; }
  // Throws CheckpointError naming the tensor and folder when absent.
  TensorView tensor(const std::string& name) const;
  const TensorRecord& record(const std::string& name) const;
  const std::string& file_of(const std::string& name) const;
  std::vector<std::string> files() const;
  size_t total_bytes() const;  // of all tensor data

 private:
  struct Location {
    const SafetensorsFile* file;
    const TensorRecord* record;
  };
  void add_file(std::shared_ptr<SafetensorsFile> file);

  std::filesystem::path directory_;
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, Location> locations_;
  std::optional<Qwen2AudioConfig> config_;
  std::optional<UltravoxConfig> ultravox_config_;
  std::string model_type_;
  GenerationConfig generation_config_;
  bool has_generation_config_ = false;
};

}  // namespace qwen2audio
