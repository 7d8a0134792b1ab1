#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace qwen2audio {

// Decoding limits and target format for load_audio_*.
struct AudioLoadOptions {
  int sampling_rate = 16000;  // the rate the samples come back at (resampled when the file differs)
  // Refuse audio longer than this many output samples (default: one hour at 16 kHz), checked
  // from the header before decoding and again while decoding.
  int64_t max_samples = int64_t{16000} * 3600;
};

// Mono float32 samples in [-1, 1) for integer formats (int16 / 32768), decoded by libsndfile
// (WAV, FLAC, Ogg/Vorbis, Opus, MP3 and the rest it reads). Channels are averaged; a rate other than
// options.sampling_rate is converted by libsoxr at its high-quality setting. Unreadable, corrupt,
// empty or oversized input throws InvalidArgument naming the source.
std::vector<float> load_audio_file(const std::string& path, const AudioLoadOptions& options = {});
// The same from an encoded file held in memory; `name` is what error messages call it.
std::vector<float> load_audio_memory(const void* data, size_t size, const AudioLoadOptions& options = {},
                                     const std::string& name = "<bytes>");

}  // namespace qwen2audio
