#include "text/tokenizer.h"

#include <algorithm>
#include <climits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "io/config.h"
#include "io/json_limits.h"
#include "runtime/errors.h"
#include "text/byte_level.h"
#include "text/unicode_normalize.h"
#include "text/utf8.h"
#include "text/word_cache.h"

namespace qwen2audio::text {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

// Real files are far smaller (Qwen2: tokenizer.json 7 MB, vocab.json 2.8 MB, merges.txt 1.7 MB);
// the limits only stop a wrong file from being read whole into memory.
constexpr size_t kMaxModelFileBytes = size_t{512} << 20;
constexpr size_t kMaxConfigFileBytes = size_t{64} << 20;
constexpr int64_t kMaxTokenId = (1 << 24) - 1;
// Words longer than this are rare and mostly unique (long runs of CJK text): not worth caching.
constexpr size_t kMaxCachedWordBytes = 64;
// 64 Ki words of 64 bytes: 8 MiB of slots at the table's half load; real text repeats far fewer words.
constexpr size_t kWordCacheCapacity = size_t{1} << 16;

// GPT-2's pattern, for tokenizer.json files whose ByteLevel pre-tokenizer does the splitting.
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

json parse_json_file(const fs::path& path, size_t max_bytes, const char* what) {
  const std::string text = read_text_file(path, max_bytes, what);
  try {
    return json::parse(text, json_depth_limit<ConfigError>(path.string()));
  } catch (const json::exception& error) {
    throw ConfigError(path.string() + ": not valid JSON: " + error.what());
  }
}

bool get_bool(const json& object, const char* key, bool fallback, const std::string& origin) {
  const auto found = object.find(key);
  if (found == object.end() || found->is_null()) return fallback;
  if (!found->is_boolean()) throw ConfigError(origin + ": '" + key + "' must be true or false, got " + found->dump());
  return found->get<bool>();
}

int32_t get_token_id(const json& value, const std::string& origin) {
  if (!value.is_number_integer()) throw ConfigError(origin + ": token id must be an integer, got " + value.dump());
  if (value.is_number_unsigned() ? value.get<uint64_t>() > static_cast<uint64_t>(kMaxTokenId)
                                 : (value.get<int64_t>() < 0 || value.get<int64_t>() > kMaxTokenId))
    throw ConfigError(origin + ": token id " + value.dump() + " is outside [0, " + std::to_string(kMaxTokenId) + "]");
  return static_cast<int32_t>(value.get<int64_t>());
}

AddedToken parse_added_token(const json& entry, int32_t id, const std::string& origin) {
  if (!entry.is_object()) throw ConfigError(origin + ": an added token must be an object, got " + entry.dump());
  const auto content = entry.find("content");
  if (content == entry.end() || !content->is_string() || content->get_ref<const std::string&>().empty())
    throw ConfigError(origin + ": added token " + std::to_string(id) + " needs a non-empty string 'content'");
  AddedToken token;
  token.id = id;
  token.content = content->get<std::string>();
  token.special = get_bool(entry, "special", false, origin);
  token.single_word = get_bool(entry, "single_word", false, origin);
  token.lstrip = get_bool(entry, "lstrip", false, origin);
  token.rstrip = get_bool(entry, "rstrip", false, origin);
  // HF's default: special tokens match the raw text, others the normalized text.
  token.normalized = get_bool(entry, "normalized", !token.special, origin);
  return token;
}

std::pair<std::string, std::string> split_merge_line(std::string_view line, const std::string& where) {
  const size_t space = line.find(' ');
  if (space == std::string_view::npos || space == 0 || space + 1 == line.size() ||
      line.find(' ', space + 1) != std::string_view::npos)
    throw ConfigError(where + ": a merge must be two tokens separated by one space, got '" + std::string(line) + "'");
  return {std::string(line.substr(0, space)), std::string(line.substr(space + 1))};
}

std::vector<std::pair<std::string, std::string>> read_merges_txt(const fs::path& path) {
  const std::string text = read_text_file(path, kMaxModelFileBytes, "merges");
  if (const size_t bad = find_invalid_utf8(text); bad != std::string::npos)
    throw ConfigError(path.string() + ": not valid UTF-8 (byte " + std::to_string(bad) + ")");
  std::vector<std::pair<std::string, std::string>> merges;
  size_t line_number = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_number == 1 && line.starts_with("#version"))) continue;
    merges.push_back(split_merge_line(line, path.string() + " line " + std::to_string(line_number)));
  }
  return merges;
}

// The vocabulary and merges of a BPE model, read straight off the JSON parser's events: a DOM of
// 150k entries would cost more than the rest of loading together.
struct ModelTables {
  std::vector<std::pair<std::string, int32_t>> vocab;
  std::vector<std::pair<std::string, std::string>> merges;
  bool has_vocab = false;
  bool has_merges = false;
};

// SAX handler that builds the DOM of a JSON file except for two containers, named by their keys
// from the root: the vocabulary (an object of spelling -> id) and the merges (an array of "a b" or
// ["a", "b"]), whose entries go to ModelTables. Errors throw ConfigError naming `origin`.
class ModelJsonReader : public nlohmann::json_sax<json> {
 public:
  using Path = std::optional<std::vector<std::string>>;  // nullopt: no such container
  ModelJsonReader(ModelTables& tables, Path vocab_path, Path merges_path, std::string origin)
      : tables_(tables),
        vocab_path_(std::move(vocab_path)),
        merges_path_(std::move(merges_path)),
        origin_(std::move(origin)) {}

  json take_root() { return std::move(root_); }

  bool null() override { return value(json()); }
  bool boolean(bool flag) override { return value(json(flag)); }
  bool number_integer(number_integer_t number) override { return value(json(number)); }
  bool number_unsigned(number_unsigned_t number) override { return value(json(number)); }
  bool number_float(number_float_t number, const string_t&) override { return value(json(number)); }
  bool string(string_t& text) override {
    if (mode_ == Mode::Merges) {
      tables_.merges.push_back(split_merge_line(text, merge_origin()));
      return true;
    }
    if (mode_ == Mode::MergePair) {
      if (pair_.size() == 2) fail_merge();
      pair_.push_back(std::move(text));
      return true;
    }
    return value(json(std::move(text)));
  }
  bool binary(binary_t&) override { return value(json()); }

  bool key(string_t& key) override {
    pending_key_ = std::move(key);
    return true;
  }

  bool start_object(std::size_t) override {
    if (mode_ == Mode::Vocab) throw ConfigError(origin_ + ": vocabulary ids must be integers, got an object");
    if (mode_ != Mode::Dom) fail_merge();
    if (matches(vocab_path_)) {
      tables_.has_vocab = true;
      mode_ = Mode::Vocab;
      return true;
    }
    if (matches(merges_path_)) throw ConfigError(origin_ + ": 'merges' must be an array");
    return open(json::object());
  }
  bool end_object() override {
    if (mode_ == Mode::Vocab) {
      mode_ = Mode::Dom;
      return true;
    }
    return close();
  }
  bool start_array(std::size_t) override {
    if (mode_ == Mode::Vocab) throw ConfigError(origin_ + ": vocabulary ids must be integers, got an array");
    if (mode_ == Mode::Merges) {
      mode_ = Mode::MergePair;
      pair_.clear();
      return true;
    }
    if (mode_ == Mode::MergePair) fail_merge();
    if (matches(merges_path_)) {
      tables_.has_merges = true;
      mode_ = Mode::Merges;
      return true;
    }
    if (matches(vocab_path_)) throw ConfigError(origin_ + ": the vocabulary must be an object of token -> id");
    return open(json::array());
  }
  bool end_array() override {
    if (mode_ == Mode::MergePair) {
      if (pair_.size() != 2) fail_merge();
      tables_.merges.emplace_back(std::move(pair_[0]), std::move(pair_[1]));
      mode_ = Mode::Merges;
      return true;
    }
    if (mode_ == Mode::Merges) {
      mode_ = Mode::Dom;
      return true;
    }
    return close();
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& error) override {
    throw ConfigError(origin_ + ": not valid JSON: " + error.what());
  }

 private:
  enum class Mode { Dom, Vocab, Merges, MergePair };

  // Whether a container opened now sits at `path`: every enclosing container an object entered
  // through the path's keys.
  bool matches(const Path& path) const {
    if (!path || path->size() != stack_.size()) return false;
    if (path->empty()) return true;  // the root itself
    for (size_t index = 0; index < stack_.size(); ++index)
      if (!stack_[index]->is_object()) return false;
    for (size_t index = 1; index < stack_.size(); ++index)
      if (keys_[index] != (*path)[index - 1]) return false;
    return pending_key_ == path->back();
  }

  [[noreturn]] void fail_merge() const { throw ConfigError(merge_origin() + ": must be \"a b\" or [\"a\", \"b\"]"); }
  std::string merge_origin() const { return origin_ + " merge " + std::to_string(tables_.merges.size() + 1); }

  bool value(json item) {
    if (mode_ == Mode::Vocab) {
      tables_.vocab.emplace_back(pending_key_, get_token_id(item, origin_ + " token '" + pending_key_ + "'"));
      return true;
    }
    if (mode_ != Mode::Dom) fail_merge();
    place(std::move(item));
    return true;
  }
  json* place(json item) {
    if (stack_.empty()) {
      root_ = std::move(item);
      return &root_;
    }
    json& parent = *stack_.back();
    if (parent.is_object()) return &(parent[pending_key_] = std::move(item));
    parent.push_back(std::move(item));
    return &parent.back();
  }
  bool open(json container) {
    if (stack_.size() >= static_cast<size_t>(kMaxJsonDepth))
      throw ConfigError(origin_ + ": JSON nested more than " + std::to_string(kMaxJsonDepth) + " levels deep");
    // Children are appended only after a container closes, so these pointers stay valid.
    const bool keyed = !stack_.empty() && stack_.back()->is_object();
    keys_.push_back(keyed ? pending_key_ : std::string());
    stack_.push_back(place(std::move(container)));
    return true;
  }
  bool close() {
    stack_.pop_back();
    keys_.pop_back();
    return true;
  }

  ModelTables& tables_;
  Path vocab_path_;
  Path merges_path_;
  std::string origin_;
  json root_;
  std::vector<json*> stack_;       // open containers of the DOM
  std::vector<std::string> keys_;  // the key that entered each open container ("" for the root or under an array)
  std::string pending_key_;
  Mode mode_ = Mode::Dom;
  std::vector<std::string> pair_;
};

json read_model_json(const fs::path& path, size_t max_bytes, const char* what, ModelTables& tables,
                     ModelJsonReader::Path vocab_path, ModelJsonReader::Path merges_path) {
  const std::string text = read_text_file(path, max_bytes, what);
  ModelJsonReader reader(tables, std::move(vocab_path), std::move(merges_path), path.string());
  try {
    json::sax_parse(text, &reader);
  } catch (const json::exception& error) {
    throw ConfigError(path.string() + ": not valid JSON: " + error.what());
  }
  return reader.take_root();
}

bool is_unset(const json& object, const char* key) {
  const auto found = object.find(key);
  return found == object.end() || found->is_null() ||
         (found->is_string() && found->get_ref<const std::string&>().empty());
}

// Reads tokenizer.json's normalizer: NFC or none are what byte-level BPE models ship.
bool parse_normalizer(const json& normalizer, const std::string& origin) {
  if (normalizer.is_null()) return false;
  if (!normalizer.is_object()) throw ConfigError(origin + ": 'normalizer' must be an object or null");
  const std::string type = normalizer.value("type", "");
  if (type == "NFC") return true;
  if (type == "Sequence" && normalizer.contains("normalizers") && normalizer["normalizers"].is_array()) {
    const json& list = normalizer["normalizers"];
    if (list.empty()) return false;
    if (list.size() == 1) return parse_normalizer(list[0], origin);
  }
  throw ConfigError(origin + ": normalizer " + normalizer.dump() + " is not supported (only NFC or none)");
}

// Reads tokenizer.json's pre_tokenizer into one splitting regex: a Split with an isolated regex
// (Qwen2) followed by ByteLevel without its own regex, or ByteLevel with GPT-2's regex.
std::string parse_pre_tokenizer(const json& pre_tokenizer, const std::string& origin) {
  if (!pre_tokenizer.is_object()) throw ConfigError(origin + ": 'pre_tokenizer' must be an object");
  std::vector<const json*> steps;
  if (pre_tokenizer.value("type", "") == "Sequence") {
    const auto list = pre_tokenizer.find("pretokenizers");
    if (list == pre_tokenizer.end() || !list->is_array())
      throw ConfigError(origin + ": pre_tokenizer Sequence needs a 'pretokenizers' array");
    for (const json& step : *list) steps.push_back(&step);
  } else {
    steps.push_back(&pre_tokenizer);
  }
  std::optional<std::string> pattern;
  bool byte_level = false;
  for (const json* step : steps) {
    if (!step->is_object()) throw ConfigError(origin + ": pre_tokenizer step must be an object");
    const std::string type = step->value("type", "");
    if (type == "Split") {
      if (pattern) throw ConfigError(origin + ": more than one Split pre-tokenizer is not supported");
      if (step->value("behavior", "") != "Isolated" || get_bool(*step, "invert", false, origin))
        throw ConfigError(origin + ": only Split with behavior 'Isolated' and invert false is supported, got " +
                          step->dump());
      const auto spec = step->find("pattern");
      if (spec == step->end() || !spec->is_object())
        throw ConfigError(origin + ": Split pre-tokenizer needs a 'pattern' object");
      if (spec->contains("Regex") && (*spec)["Regex"].is_string()) {
        pattern = (*spec)["Regex"].get<std::string>();
      } else if (spec->contains("String") && (*spec)["String"].is_string()) {
        pattern = "\\Q" + (*spec)["String"].get<std::string>() + "\\E";
      } else {
        throw ConfigError(origin + ": Split pattern must hold a 'Regex' or 'String', got " + spec->dump());
      }
    } else if (type == "ByteLevel") {
      if (get_bool(*step, "add_prefix_space", false, origin))
        throw ConfigError(origin + ": ByteLevel add_prefix_space=true is not supported");
      byte_level = true;
      if (get_bool(*step, "use_regex", true, origin)) {
        if (pattern) throw ConfigError(origin + ": a Split followed by ByteLevel with use_regex=true is not supported");
        pattern = std::string(kGpt2Pattern);
      }
    } else {
      throw ConfigError(origin + ": pre-tokenizer '" + type + "' is not supported");
    }
  }
  if (!byte_level)
    throw ConfigError(origin + ": the pre-tokenizer has no ByteLevel step; only byte-level BPE is supported");
  if (!pattern) throw ConfigError(origin + ": the pre-tokenizer has no splitting regex");
  return *pattern;
}

std::vector<std::string> special_token_contents(const json& config) {
  std::vector<std::string> contents;
  const auto add = [&](const json& value) {
    if (value.is_string()) contents.push_back(value.get<std::string>());
    if (value.is_object() && value.contains("content") && value["content"].is_string())
      contents.push_back(value["content"].get<std::string>());
  };
  for (const char* key : {"bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token"})
    if (config.contains(key)) add(config[key]);
  if (config.contains("additional_special_tokens") && config["additional_special_tokens"].is_array())
    for (const json& value : config["additional_special_tokens"]) add(value);
  return contents;
}

}  // namespace

TokenizerFiles TokenizerFiles::in_directory(const fs::path& directory) {
  std::error_code error;
  if (!fs::is_directory(directory, error))
    throw ConfigError(directory.string() + ": not a directory (expected a tokenizer or checkpoint folder)");
  TokenizerFiles files;
  const auto pick = [&](const char* name) {
    const fs::path path = directory / name;
    return fs::is_regular_file(path, error) ? path : fs::path();
  };
  files.tokenizer_json = pick("tokenizer.json");
  files.vocab_json = pick("vocab.json");
  files.merges_txt = pick("merges.txt");
  files.tokenizer_config_json = pick("tokenizer_config.json");
  files.added_tokens_json = pick("added_tokens.json");
  if (files.tokenizer_json.empty() && (files.vocab_json.empty() || files.merges_txt.empty()))
    throw ConfigError(directory.string() + ": no tokenizer here (needs tokenizer.json, or vocab.json and merges.txt)");
  return files;
}

struct Tokenizer::Parts {
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  bool nfc = true;
  std::string model_source;
  std::vector<AddedToken> added;
};

std::shared_ptr<const Tokenizer> Tokenizer::from_directory(const fs::path& directory) {
  return load(TokenizerFiles::in_directory(directory));
}

std::shared_ptr<const Tokenizer> Tokenizer::load(const TokenizerFiles& files) {
  Parts parts;
  std::map<int32_t, AddedToken> added;  // by id; the first mention of an id wins
  const auto add_token = [&](AddedToken token) { added.emplace(token.id, std::move(token)); };

  if (!files.tokenizer_json.empty()) {
    const std::string origin = files.tokenizer_json.string();
    ModelTables tables;
    const json root =
        read_model_json(files.tokenizer_json, kMaxModelFileBytes, "tokenizer.json", tables,
                        std::vector<std::string>{"model", "vocab"}, std::vector<std::string>{"model", "merges"});
    if (!root.is_object()) throw ConfigError(origin + ": must hold a JSON object");
    const auto model = root.find("model");
    if (model == root.end() || !model->is_object()) throw ConfigError(origin + ": no 'model' object");
    const std::string type = model->value("type", "BPE");
    if (type != "BPE") throw ConfigError(origin + ": model type '" + type + "' is not supported (only BPE)");
    if (!is_unset(*model, "dropout") &&
        !(model->at("dropout").is_number() && model->at("dropout").get<double>() == 0.0))
      throw ConfigError(origin + ": BPE dropout is not supported at inference");
    if (!is_unset(*model, "continuing_subword_prefix") || !is_unset(*model, "end_of_word_suffix"))
      throw ConfigError(origin + ": BPE subword prefixes/suffixes are not supported (not byte-level BPE)");
    if (!tables.has_vocab || !tables.has_merges) throw ConfigError(origin + ": 'model' needs 'vocab' and 'merges'");
    parts.model = std::make_unique<BpeModel>(std::move(tables.vocab), tables.merges, origin,
                                             get_bool(*model, "ignore_merges", false, origin));
    parts.model_source = "tokenizer.json";
    parts.nfc = parse_normalizer(root.contains("normalizer") ? root["normalizer"] : json(), origin);
    if (!root.contains("pre_tokenizer") || root["pre_tokenizer"].is_null())
      throw ConfigError(origin + ": no 'pre_tokenizer'; only byte-level BPE is supported");
    parts.pre_tokenizer = std::make_unique<PreTokenizer>(parse_pre_tokenizer(root["pre_tokenizer"], origin), origin);
    if (root.contains("added_tokens") && !root["added_tokens"].is_null()) {
      const json& list = root["added_tokens"];
      if (!list.is_array()) throw ConfigError(origin + ": 'added_tokens' must be an array");
      for (const json& entry : list) {
        if (!entry.is_object() || !entry.contains("id"))
          throw ConfigError(origin + ": each added token needs an 'id', got " + entry.dump());
        add_token(parse_added_token(entry, get_token_id(entry["id"], origin + " added token"), origin));
      }
    }
  } else {
    if (files.vocab_json.empty() || files.merges_txt.empty())
      throw ConfigError("tokenizer needs tokenizer.json, or both vocab.json and merges.txt");
    const std::string origin = files.vocab_json.string();
    ModelTables tables;
    read_model_json(files.vocab_json, kMaxModelFileBytes, "vocab", tables, std::vector<std::string>{}, std::nullopt);
    if (!tables.has_vocab) throw ConfigError(origin + ": the vocabulary must be an object of token -> id");
    parts.model = std::make_unique<BpeModel>(std::move(tables.vocab), read_merges_txt(files.merges_txt),
                                             files.vocab_json.string() + " + " + files.merges_txt.string());
    parts.model_source = "vocab.json+merges.txt";
    parts.nfc = true;  // Qwen2Tokenizer normalizes to NFC before splitting
    parts.pre_tokenizer = std::make_unique<PreTokenizer>(std::string(kQwen2Pattern));
  }

  json config;
  if (!files.tokenizer_config_json.empty()) {
    const std::string origin = files.tokenizer_config_json.string();
    config = parse_json_file(files.tokenizer_config_json, kMaxConfigFileBytes, "tokenizer_config.json");
    if (!config.is_object()) throw ConfigError(origin + ": must hold a JSON object");
    if (config.contains("added_tokens_decoder") && !config["added_tokens_decoder"].is_null()) {
      const json& decoder = config["added_tokens_decoder"];
      if (!decoder.is_object()) throw ConfigError(origin + ": 'added_tokens_decoder' must map ids to tokens");
      for (const auto& [key, entry] : decoder.items()) {
        int64_t id = -1;
        try {
          size_t used = 0;
          id = std::stoll(key, &used);
          if (used != key.size()) id = -1;
        } catch (const std::exception&) {
        }
        if (id < 0 || id > kMaxTokenId)
          throw ConfigError(origin + ": added_tokens_decoder key '" + key + "' is not a token id in [0, " +
                            std::to_string(kMaxTokenId) + "]");
        add_token(parse_added_token(entry, static_cast<int32_t>(id), origin));
      }
    }
  }
  if (!files.added_tokens_json.empty()) {
    // The older slow-tokenizer file: content -> id. Entries already known are skipped; the rest are
    // special when tokenizer_config.json lists them among its special tokens, as transformers does.
    const std::string origin = files.added_tokens_json.string();
    const json list = parse_json_file(files.added_tokens_json, kMaxConfigFileBytes, "added_tokens.json");
    if (!list.is_object()) throw ConfigError(origin + ": must map token contents to ids");
    const std::vector<std::string> specials =
        config.is_object() ? special_token_contents(config) : std::vector<std::string>{};
    for (const auto& [content, id_value] : list.items()) {
      const int32_t id = get_token_id(id_value, origin + " token '" + content + "'");
      if (content.empty()) throw ConfigError(origin + ": an added token has empty content");
      const bool known = std::any_of(added.begin(), added.end(), [&, &content = content](const auto& item) {
        return item.second.content == content;
      });
      if (known || added.count(id)) continue;
      AddedToken token;
      token.id = id;
      token.content = content;
      token.special = std::find(specials.begin(), specials.end(), content) != specials.end();
      token.normalized = !token.special;
      add_token(std::move(token));
    }
  }
  for (auto& [id, token] : added) parts.added.push_back(std::move(token));
  return std::shared_ptr<const Tokenizer>(new Tokenizer(std::move(parts)));
}

struct Tokenizer::SharedWordCache {
  mutable std::shared_mutex mutex;
  WordCache words;
};

Tokenizer::Tokenizer(Parts parts)
    : model_(std::move(parts.model)),
      pre_tokenizer_(std::move(parts.pre_tokenizer)),
      nfc_(parts.nfc),
      model_source_(std::move(parts.model_source)),
      added_(std::move(parts.added)),
      cache_(std::make_unique<SharedWordCache>()) {
  const auto raw = [](const AddedToken& token) { return !token.normalized; };
  const auto normalized = [](const AddedToken& token) { return token.normalized; };
  raw_all_ = AddedTokenMatcher(added_, raw);
  raw_plain_ = AddedTokenMatcher(added_, [&](const AddedToken& token) { return raw(token) && !token.special; });
  normalized_all_ = AddedTokenMatcher(added_, normalized);
  normalized_plain_ =
      AddedTokenMatcher(added_, [&](const AddedToken& token) { return normalized(token) && !token.special; });

  int32_t limit = model_->id_limit();
  for (const AddedToken& token : added_) limit = std::max(limit, token.id + 1);
  entries_.assign(static_cast<size_t>(limit), TokenEntry{0, 0, 0, 0});
  std::vector<const std::string*> spelling(static_cast<size_t>(limit), nullptr);
  for (int32_t id = 0; id < model_->id_limit(); ++id)
    if (model_->has_id(id)) {
      entries_[id].valid = 1;
      spelling[id] = &model_->id_to_token(id);
    }
  size_with_added_ = model_->size();
  for (const AddedToken& token : added_) {
    // An added token shadows a vocabulary entry with the same id, as in HF's id_to_token.
    entries_[token.id].valid = 1;
    entries_[token.id].special = token.special;
    spelling[token.id] = &token.content;
    if (model_->token_to_id(token.content) < 0 && !added_ids_.contains(token.content)) ++size_with_added_;
    added_ids_[token.content] = token.id;
  }
  for (int32_t id = 0; id < limit; ++id) {
    if (spelling[id] == nullptr) continue;
    const std::string bytes = token_text_to_bytes(*spelling[id]);
    if (bytes.size() > UINT16_MAX || byte_arena_.size() + bytes.size() > UINT32_MAX)
      throw ConfigError("token " + std::to_string(id) + " is too long to decode (over 64 KiB)");
    entries_[id].offset = static_cast<uint32_t>(byte_arena_.size());
    entries_[id].length = static_cast<uint16_t>(bytes.size());
    byte_arena_ += bytes;
  }
}

Tokenizer::~Tokenizer() = default;

struct Tokenizer::CallState {
  CallState(std::vector<int32_t>& ids, const WordCache& shared) : ids(ids), shared(shared) {}
  std::vector<int32_t>& ids;
  const WordCache& shared;
  WordCache fresh;  // words first met in this call
  std::vector<TextSpan> spans;
  std::vector<TextSpan> normalized_spans;
  std::vector<Piece> pieces;
  std::string normalized_storage;
  BpeScratch scratch;
  std::vector<std::string>* words = nullptr;  // pre_tokenize collects words instead of ids
};

void Tokenizer::encode_words(std::string_view text, CallState& state) const {
  state.pieces.clear();
  pre_tokenizer_->split(text, state.pieces);
  for (const Piece& piece : state.pieces) {
    const std::string_view word = text.substr(piece.offset, piece.length);
    if (state.words != nullptr) {
      state.words->emplace_back(word);
      continue;
    }
    if (word.size() > kMaxCachedWordBytes) {
      model_->encode_word(word, state.ids, state.scratch);
      continue;
    }
    const uint64_t hash = WordCache::hash(word);
    uint32_t count = 0;
    const int32_t* known = state.shared.find(word, hash, count);
    if (known == nullptr) known = state.fresh.find(word, hash, count);
    if (known != nullptr) {
      state.ids.insert(state.ids.end(), known, known + count);
      continue;
    }
    const size_t before = state.ids.size();
    model_->encode_word(word, state.ids, state.scratch);
    state.fresh.insert(word, hash, state.ids.data() + before, static_cast<uint32_t>(state.ids.size() - before));
  }
}

void Tokenizer::encode_segment(std::string_view text, bool split_special_tokens, CallState& state) const {
  const std::string_view normalized = nfc_ ? normalize_nfc(text, state.normalized_storage) : text;
  const AddedTokenMatcher& matcher = split_special_tokens ? normalized_plain_ : normalized_all_;
  if (matcher.empty()) {
    encode_words(normalized, state);
    return;
  }
  state.normalized_spans.clear();
  matcher.split(normalized, state.normalized_spans);
  for (const TextSpan& span : state.normalized_spans) {
    const std::string_view part = normalized.substr(span.offset, span.length);
    if (span.token_id < 0) {
      encode_words(part, state);
    } else if (state.words != nullptr) {
      state.words->emplace_back(part);
    } else {
      state.ids.push_back(span.token_id);
    }
  }
}

void Tokenizer::encode_into(std::string_view text, std::vector<int32_t>& ids, bool split_special_tokens,
                            bool known_valid_utf8) const {
  if (text.size() > static_cast<size_t>(INT32_MAX))
    throw InvalidArgument("text of " + std::to_string(text.size()) + " bytes is too long to encode (limit 2 GiB)");
  // PCRE2 runs without its own UTF-8 check below, so invalid input must never get that far.
  if (!known_valid_utf8)
    if (const size_t bad = find_invalid_utf8(text); bad != std::string_view::npos)
      throw InvalidArgument("text is not valid UTF-8 (byte " + std::to_string(bad) + ")");
  {
    std::shared_lock lock(cache_->mutex);
    CallState state(ids, cache_->words);
    const AddedTokenMatcher& matcher = split_special_tokens ? raw_plain_ : raw_all_;
    if (matcher.empty()) {
      encode_segment(text, split_special_tokens, state);
    } else {
      matcher.split(text, state.spans);
      for (const TextSpan& span : state.spans) {
        if (span.token_id >= 0)
          ids.push_back(span.token_id);
        else
          encode_segment(text.substr(span.offset, span.length), split_special_tokens, state);
      }
    }
    lock.unlock();
    if (state.fresh.empty()) return;
    std::unique_lock writer(cache_->mutex, std::try_to_lock);
    if (!writer.owns_lock()) return;
    cache_->words.absorb(state.fresh, kWordCacheCapacity);
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool split_special_tokens, bool known_valid_utf8) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 8);
  encode_into(text, ids, split_special_tokens, known_valid_utf8);
  return ids;
}

std::vector<std::string> Tokenizer::pre_tokenize(std::string_view text, bool split_special_tokens) const {
  if (const size_t bad = find_invalid_utf8(text); bad != std::string_view::npos)
    throw InvalidArgument("text is not valid UTF-8 (byte " + std::to_string(bad) + ")");
  std::vector<int32_t> unused;
  std::vector<std::string> words;
  CallState state(unused, cache_->words);
  state.words = &words;
  const AddedTokenMatcher& matcher = split_special_tokens ? raw_plain_ : raw_all_;
  matcher.split(text, state.spans);
  for (const TextSpan& span : state.spans) {
    const std::string_view part = text.substr(span.offset, span.length);
    if (span.token_id >= 0)
      words.emplace_back(part);
    else
      encode_segment(part, split_special_tokens, state);
  }
  return words;
}

void Tokenizer::check_id(int64_t id) const {
  if (!has_id(id))
    throw InvalidArgument("token id " + std::to_string(id) + " is not in the vocabulary (ids run from 0 to " +
                          std::to_string(id_limit() - 1) + ")");
}

std::string Tokenizer::decode(std::span<const int64_t> ids, bool skip_special_tokens) const {
  size_t total = 0;
  for (const int64_t id : ids) {
    check_id(id);
    total += entries_[id].length;
  }
  std::string bytes;
  bytes.reserve(total);
  for (const int64_t id : ids) {
    const TokenEntry& entry = entries_[id];
    if (skip_special_tokens && entry.special) continue;
    bytes.append(byte_arena_.data() + entry.offset, entry.length);
  }
  // Well-formed output (nearly always) needs no second pass.
  if (find_invalid_utf8(bytes) == std::string::npos) return bytes;
  std::string text;
  text.reserve(bytes.size() + 16);
  append_utf8_lossy(text, bytes);
  return text;
}

int32_t Tokenizer::token_to_id(std::string_view token) const {
  if (const auto found = added_ids_.find(token); found != added_ids_.end()) return found->second;
  return model_->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int64_t id) const {
  if (!has_id(id)) return std::nullopt;
  const auto found = std::lower_bound(added_.begin(), added_.end(), id,
                                      [](const AddedToken& token, int64_t value) { return token.id < value; });
  if (found != added_.end() && found->id == id) return found->content;
  return model_->id_to_token(static_cast<int32_t>(id));
}

size_t Tokenizer::cached_words() const {
  std::shared_lock lock(cache_->mutex);
  return cache_->words.size();
}

}  // namespace qwen2audio::text
