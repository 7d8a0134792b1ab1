// libFuzzer target: decoding an encoded audio file from bytes (libsndfile through our virtual I/O,
// channel averaging, libsoxr resampling). Any input must give finite mono samples or an
// InvalidArgument; never a crash, a read outside the buffer, a hang or a huge allocation. The first
// byte picks the output rate, so the resampling paths are covered too.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "io/audio_file.h"
#include "runtime/errors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static constexpr int kRates[] = {16000, 16000, 8000, 44100};
  qwen2audio::AudioLoadOptions options;
  options.sampling_rate = kRates[data[0] % 4];
  // Ten seconds: long enough for every code path, short enough to keep executions fast.
  options.max_samples = int64_t{options.sampling_rate} * 10;
  try {
    const auto samples = qwen2audio::load_audio_memory(data + 1, size - 1, options, "fuzz");
    if (samples.empty() || static_cast<int64_t>(samples.size()) > options.max_samples) std::abort();
    for (const float sample : samples)
      if (!std::isfinite(sample)) std::abort();
  } catch (const qwen2audio::InvalidArgument&) {
  }
  return 0;
}
