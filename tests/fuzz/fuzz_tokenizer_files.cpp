// libFuzzer target: loading hostile tokenizer files. The first input byte picks the file the rest
// becomes; the other files of a small valid byte-level BPE tokenizer stay in place:
//   0: tokenizer_config.json (added_tokens_decoder, special tokens)
//   1: added_tokens.json (with a tokenizer_config.json naming special tokens)
//   2: tokenizer.json (the whole pipeline: model, normalizer, pre-tokenizer, added tokens)
//   3: merges.txt
// Loading either succeeds or throws ConfigError; a tokenizer that loads must encode and decode text.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "runtime/errors.h"
#include "text/tokenizer.h"

namespace {

namespace fs = std::filesystem;
fs::path folder;

// GPT-2's byte -> printable character table, as vocab.json spells byte tokens.
std::string byte_token(int byte) {
  const bool printable = (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) || (byte >= 0xAE);
  int codepoint = byte;
  if (!printable) {
    int shifted = 0;
    for (int other = 0; other < byte; ++other)
      if (!((other >= '!' && other <= '~') || (other >= 0xA1 && other <= 0xAC) || other >= 0xAE)) ++shifted;
    codepoint = 256 + shifted;
  }
  std::string text;
  if (codepoint < 0x80) {
    if (codepoint == '"' || codepoint == '\\') text += '\\';
    text += static_cast<char>(codepoint);
  } else {
    text += static_cast<char>(0xC0 | (codepoint >> 6));
    text += static_cast<char>(0x80 | (codepoint & 0x3F));
  }
  return text;
}

void write(const fs::path& path, const void* data, size_t size) {
  std::ofstream stream(path, std::ios::binary | std::ios::trunc);
  stream.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
}

void write(const fs::path& path, const std::string& text) { write(path, text.data(), text.size()); }

void write_base_files() {
  std::string vocab = "{";
  for (int byte = 0; byte < 256; ++byte) vocab += "\"" + byte_token(byte) + "\": " + std::to_string(byte) + ", ";
  vocab += "\"he\": 256, \"ll\": 257, \"hell\": 258}";
  write(folder / "vocab.json", vocab);
  write(folder / "merges.txt", std::string("#version: 0.2\nh e\nl l\nhe ll\n"));
  write(
      folder / "tokenizer_config.json",
      std::string(R"({"added_tokens_decoder": {"300": {"content": "<|x|>", "special": true}}, "eos_token": "<|x|>"})"));
  fs::remove(folder / "added_tokens.json");
  fs::remove(folder / "tokenizer.json");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  folder = fs::temp_directory_path() / ("qwen2audio-fuzz-tokenizer-files-" + std::to_string(getpid()));
  fs::create_directories(folder);
  std::atexit([] {
    std::error_code error;
    fs::remove_all(folder, error);
  });
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  write_base_files();
  static const char* const kTargets[] = {"tokenizer_config.json", "added_tokens.json", "tokenizer.json", "merges.txt"};
  write(folder / kTargets[data[0] % 4], data + 1, size - 1);
  try {
    const auto tokenizer = qwen2audio::text::Tokenizer::from_directory(folder);
    const auto ids = tokenizer->encode("hello <|x|> wörld 你好 \n\n  ");
    std::vector<int64_t> wide(ids.begin(), ids.end());
    (void)tokenizer->decode(wide);
    (void)tokenizer->decode(wide, /*skip_special_tokens=*/true);
  } catch (const qwen2audio::ConfigError&) {
  }
  return 0;
}
