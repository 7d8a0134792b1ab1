#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <utility>

namespace qwen2audio {

// Configuration and tokenizer files nest a few levels (tokenizer.json: 5). nlohmann's parser is
// iterative, but dump(), copies and comparisons of a parsed value recurse once per level, so a
// hostile file of a few hundred KB of '[' would overflow the stack in an error message; files
// nested deeper than this are refused while parsing.
inline constexpr int kMaxJsonDepth = 64;

// A parser callback for nlohmann::json::parse that throws `Error` (naming `origin`) as soon as the
// input nests deeper than kMaxJsonDepth.
template <class Error>
nlohmann::json::parser_callback_t json_depth_limit(std::string origin) {
  return [origin = std::move(origin)](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
    if (depth > kMaxJsonDepth)
      throw Error(origin + ": JSON nested more than " + std::to_string(kMaxJsonDepth) + " levels deep");
    return true;
  };
}

// At most `limit` characters of `value`'s JSON text, for error messages: a value quoted from a
// hostile file must not turn into a message of megabytes.
inline std::string json_excerpt(const nlohmann::json& value, size_t limit = 80) {
  std::string text = value.dump();
  if (text.size() > limit) text = text.substr(0, limit) + "...";
  return text;
}

}  // namespace qwen2audio
