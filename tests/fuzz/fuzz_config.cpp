// libFuzzer target: config.json and generation_config.json parsing.
#include <cstddef>
#include <cstdint>
#include <string>

#include "io/config.h"
#include "model/weight_layout.h"
#include "runtime/errors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto config = qwen2audio::parse_qwen2audio_config(text, "fuzz");
    // A config that parses must describe a layout we can enumerate without overflow; cap the work.
    if (config.audio.encoder_layers + config.text.num_hidden_layers < 256) (void)qwen2audio::expected_tensors(config);
  } catch (const qwen2audio::ConfigError&) {
  }
  try {
    (void)qwen2audio::parse_generation_config(text, "fuzz");
  } catch (const qwen2audio::ConfigError&) {
  }
  return 0;
}
