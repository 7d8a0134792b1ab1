#include "io/checkpoint.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "io/json_limits.h"
#include "runtime/errors.h"

namespace qwen2audio {
namespace fs = std::filesystem;
namespace {

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";
// An index lists names and file names only; the 7B index is ~60 KB.
constexpr uintmax_t kMaxIndexBytes = 64u << 20;

// The index maps tensor name -> shard file name, and nothing else is trusted from it.
std::map<std::string, std::string> read_weight_map(const fs::path& index_path) {
  const std::string origin = index_path.string();
  std::error_code error;
  const auto size = fs::file_size(index_path, error);
  if (error) throw CheckpointError(origin + ": cannot read: " + error.message());
  if (size > kMaxIndexBytes) throw CheckpointError(origin + ": index file is absurdly large");
  std::ifstream stream(index_path);
  nlohmann::json index;
  try {
    index = nlohmann::json::parse(stream, json_depth_limit<CheckpointError>(origin));
  } catch (const nlohmann::json::exception& parse_error) {
    throw CheckpointError(origin + ": invalid JSON: " + parse_error.what());
  }
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    throw CheckpointError(origin + ": no 'weight_map' object");
  std::map<std::string, std::string> weight_map;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    if (!shard.is_string()) throw CheckpointError(origin + ": shard of tensor '" + name + "' is not a string");
    const auto& shard_name = shard.get_ref<const std::string&>();
    const fs::path shard_path(shard_name);
    // A shard is a sibling file; anything else could point the loader anywhere on disk.
    if (shard_name.empty() || shard_path.has_parent_path() || shard_path.is_absolute() || shard_name == "." ||
        shard_name == "..")
      throw CheckpointError(origin + ": shard '" + shard_name + "' of tensor '" + name +
                            "' is not a file name in the checkpoint folder");
    weight_map.emplace(name, shard_name);
  }
  if (weight_map.empty()) throw CheckpointError(origin + ": weight_map lists no tensors");
  return weight_map;
}

}  // namespace

std::shared_ptr<Checkpoint> Checkpoint::open(const fs::path& path) {
  auto checkpoint = std::shared_ptr<Checkpoint>(new Checkpoint());
  std::error_code error;
  if (!fs::exists(path, error)) throw CheckpointError(path.string() + ": no such file or folder");

  if (fs::is_regular_file(path)) {
    checkpoint->directory_ = path.parent_path();
    checkpoint->add_file(SafetensorsFile::open(path.string()));
  } else {
    checkpoint->directory_ = path;
    const fs::path index_path = path / kIndexFile;
    if (fs::exists(index_path)) {
      const auto weight_map = read_weight_map(index_path);
      std::map<std::string, std::string> first_tensor_of_shard;
      for (const auto& [name, shard] : weight_map) first_tensor_of_shard.emplace(shard, name);
      for (const auto& [shard, example_tensor] : first_tensor_of_shard) {
        const fs::path shard_path = path / shard;
        if (!fs::exists(shard_path))
          throw CheckpointError(index_path.string() + ": shard file '" + shard + "' (holding '" + example_tensor +
                                "') is missing");
        checkpoint->add_file(SafetensorsFile::open(shard_path.string()));
      }
      for (const auto& [name, shard] : weight_map) {
        auto found = checkpoint->locations_.find(name);
        if (found == checkpoint->locations_.end())
          throw CheckpointError(index_path.string() + ": tensor '" + name + "' is listed for shard '" + shard +
                                "' but absent from it");
        const std::string actual = fs::path(found->second.file->path()).filename().string();
        if (actual != shard)
          throw CheckpointError(index_path.string() + ": tensor '" + name + "' is listed for shard '" + shard +
                                "' but stored in '" + actual + "'");
      }
      for (const auto& [name, location] : checkpoint->locations_)
        if (!weight_map.count(name))
          throw CheckpointError(location.file->path() + ": tensor '" + name + "' is not listed in " + kIndexFile);
    } else if (fs::exists(path / kSingleFile)) {
      checkpoint->add_file(SafetensorsFile::open((path / kSingleFile).string()));
    } else {
      throw CheckpointError(path.string() + ": no " + kSingleFile + " or " + kIndexFile + " in this folder");
    }
  }

  const fs::path config_path = checkpoint->directory_ / "config.json";
  // config() stays Qwen2-Audio's; an Ultravox folder keeps its own (ultravox_config()).
  if (fs::exists(config_path)) {
    checkpoint->model_type_ = read_model_type(config_path);
    if (checkpoint->model_type_ == "ultravox")
      checkpoint->ultravox_config_ = load_ultravox_config(config_path);
    else
      checkpoint->config_ = load_qwen2audio_config(config_path);
  }
  const fs::path generation_path = checkpoint->directory_ / "generation_config.json";
  if (fs::exists(generation_path)) {
    checkpoint->generation_config_ = load_generation_config(generation_path);
    checkpoint->has_generation_config_ = true;
  } else if (checkpoint->config_) {
    checkpoint->generation_config_ = GenerationConfig::from_model_config(checkpoint->config_->text);
  } else if (checkpoint->ultravox_config_) {
    checkpoint->generation_config_ = GenerationConfig::from_model_config(checkpoint->ultravox_config_->text);
  }
  return checkpoint;
}

void Checkpoint::add_file(std::shared_ptr<SafetensorsFile> file) {
  for (const TensorRecord& record : file->tensors()) {
    auto [existing, inserted] = locations_.emplace(record.name, Location{file.get(), &record});
    if (!inserted)
      throw CheckpointError("duplicate tensor '" + record.name + "' in " + existing->second.file->path() + " and " +
                            file->path());
  }
  files_.push_back(std::move(file));
}

const Qwen2AudioConfig& Checkpoint::config() const {
  if (!config_ && !model_type_.empty())
    throw ConfigError(directory_.string() + ": config.json is a '" + model_type_ + "' model, not Qwen2-Audio");
  if (!config_) throw ConfigError(directory_.string() + ": no config.json in the checkpoint folder");
  return *config_;
}

std::vector<std::string> Checkpoint::tensor_names() const {
  std::vector<std::string> names;
  names.reserve(locations_.size());
  for (const auto& entry : locations_) names.push_back(entry.first);
  return names;
}

const TensorRecord& Checkpoint::record(const std::string& name) const {
  auto found = locations_.find(name);
  if (found == locations_.end())
    throw CheckpointError("tensor '" + name + "' is not in the checkpoint at " + directory_.string());
  return *found->second.record;
}

TensorView Checkpoint::tensor(const std::string& name) const {
  const TensorRecord& found = record(name);
  return locations_.at(name).file->view(found);
}

const std::string& Checkpoint::file_of(const std::string& name) const {
  record(name);
  return locations_.at(name).file->path();
}

std::vector<std::string> Checkpoint::files() const {
  std::vector<std::string> paths;
  for (const auto& file : files_) paths.push_back(file->path());
  return paths;
}

size_t Checkpoint::total_bytes() const {
  size_t total = 0;
  for (const auto& entry : locations_) total += entry.second.record->end - entry.second.record->begin;
  return total;
}

}  // namespace qwen2audio
