// The model on the GPU against the CPU engine, in one process, at Qwen2-Audio-7B's shapes:
// encoder time for a 30 s clip, prefill tokens/s (800 tokens), decode tokens/s at 1k context.
//
// Weights are synthetic (random BF16, written once as a safetensors checkpoint in exact HF layout,
// since the real one cannot be downloaded on these machines); the timings depend on shapes only.
//
//   bench_cuda_model --folder DIR [--decoder-layers 32] [--encoder-layers 32] [--cpu-threads N]
//                    [--skip-cpu] [--skip-cuda] [--new-tokens 32]

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "generate/session.h"
#include "io/config.h"
#include "model/qwen2_audio.h"
#include "model/weight_layout.h"
#include "runtime/dtype.h"
#include "runtime/errors.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using qwen2audio::Qwen2AudioModel;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::string config_json(int64_t encoder_layers, int64_t decoder_layers) {
  nlohmann::json config = {{"architectures", {"Qwen2AudioForConditionalGeneration"}},
                           {"model_type", "qwen2_audio"},
                           {"audio_token_index", 151646},
                           {"vocab_size", 156032},
                           {"torch_dtype", "bfloat16"},
                           {"audio_config",
                            {{"model_type", "qwen2_audio_encoder"},
                             {"num_mel_bins", 128},
                             {"max_source_positions", 1500},
                             {"d_model", 1280},
                             {"encoder_layers", encoder_layers},
                             {"encoder_attention_heads", 20},
                             {"encoder_ffn_dim", 5120}}},
                           {"text_config",
                            {{"model_type", "qwen2"},
                             {"vocab_size", 156032},
                             {"hidden_size", 4096},
                             {"intermediate_size", 11008},
                             {"num_hidden_layers", decoder_layers},
                             {"num_attention_heads", 32},
                             {"num_key_value_heads", 32},
                             {"rope_theta", 10000.0},
                             {"rms_norm_eps", 1e-6},
                             {"max_position_embeddings", 8192},
                             {"tie_word_embeddings", false}}}};
  return config.dump(1);
}

// Random BF16 values: linear weights ~ N(0, 0.02^2)-sized uniforms, norm weights near 1, biases
// near 0, so activations stay finite through every layer.
void write_checkpoint(const fs::path& folder, int64_t encoder_layers, int64_t decoder_layers) {
  fs::create_directories(folder);
  const std::string config_text = config_json(encoder_layers, decoder_layers);
  std::ofstream(folder / "config.json") << config_text;
  const auto config = qwen2audio::parse_qwen2audio_config(config_text, "synthetic config");
  const auto tensors = qwen2audio::expected_tensors(config);
  nlohmann::json header = nlohmann::json::object();
  uint64_t offset = 0;
  for (const auto& tensor : tensors) {
    int64_t count = 1;
    for (int64_t extent : tensor.shape) count *= extent;
    header[tensor.name] = {{"dtype", "BF16"}, {"shape", tensor.shape}, {"data_offsets", {offset, offset + 2 * count}}};
    offset += 2 * count;
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  std::ofstream out(folder / "model.safetensors", std::ios::binary);
  const uint64_t header_size = header_text.size();
  out.write(reinterpret_cast<const char*>(&header_size), 8);
  out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
  // Three pools of random values (matrix entries, biases, norm weights); each tensor is a slice of
  // its pool at a moving offset, so writing 16 GB costs disk time only.
  constexpr size_t kPool = size_t{1} << 24;
  uint64_t state = 0x9e3779b97f4a7c15ull;
  auto pool = [&](float scale, float shift) {
    std::vector<uint16_t> values(2 * kPool);
    for (uint16_t& slot : values) {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      const float uniform = static_cast<float>(state >> 40) / static_cast<float>(1 << 24) - 0.5f;  // [-0.5, 0.5)
      slot = qwen2audio::float_to_bf16(shift + scale * uniform);
    }
    return values;
  };
  const std::vector<uint16_t> matrix_pool = pool(0.07f, 0.0f), bias_pool = pool(0.02f, 0.0f),
                              norm_pool = pool(0.1f, 1.0f);
  size_t cursor = 0;
  for (const auto& tensor : tensors) {
    int64_t count = 1;
    for (int64_t extent : tensor.shape) count *= extent;
    const bool is_vector = tensor.shape.size() == 1;
    const bool is_norm =
        is_vector && tensor.name.find("norm") != std::string::npos && tensor.name.find(".weight") != std::string::npos;
    const std::vector<uint16_t>& source = is_norm ? norm_pool : (is_vector ? bias_pool : matrix_pool);
    for (int64_t written = 0; written < count;) {
      cursor = (cursor * 2654435761u + 12345) % kPool;
      const int64_t size = std::min<int64_t>(count - written, static_cast<int64_t>(kPool));
      out.write(reinterpret_cast<const char*>(source.data() + cursor), static_cast<std::streamsize>(2 * size));
      written += size;
    }
  }
  if (!out) throw std::runtime_error("could not write the synthetic checkpoint");
}

struct Figures {
  double encoder_seconds = 0, prefill_tokens_per_second = 0, decode_tokens_per_second = 0, load_seconds = 0;
};

Figures measure(const fs::path& folder, const std::string& device, int threads, int64_t prompt_tokens, int64_t context,
                int64_t new_tokens) {
  Figures figures;
  qwen2audio::LoadOptions load_options;
  load_options.device = qwen2audio::parse_device(device);
  load_options.num_threads = threads;
  auto start = Clock::now();
  const auto model = Qwen2AudioModel::load(folder, load_options);
  figures.load_seconds = seconds_since(start);
  std::cout << "  loaded on " << model->device_description() << " in " << figures.load_seconds << " s\n" << std::flush;

  // One 30 s clip of log-mel-like values; every frame valid.
  const int64_t mel = 128, frames = 3000;
  std::vector<float> features(static_cast<size_t>(mel * frames));
  for (size_t i = 0; i < features.size(); ++i) features[i] = std::sin(0.001f * static_cast<float>(i)) * 0.5f;
  std::vector<int64_t> mask(static_cast<size_t>(frames), 1);
  const qwen2audio::AudioBatch audio{features.data(), mask.data(), 1, mel, frames};
  std::vector<float> encoded(static_cast<size_t>(750 * 1280));
  model->encode(audio, encoded.data());  // warm-up: first-call allocations, cuBLAS heuristics
  start = Clock::now();
  const int repeats = device == "cpu" ? 1 : 5;
  for (int r = 0; r < repeats; ++r) model->encode(audio, encoded.data());
  figures.encoder_seconds = seconds_since(start) / repeats;
  std::cout << "  encoder (30 s clip): " << figures.encoder_seconds << " s\n" << std::flush;

  std::vector<int64_t> prompt(static_cast<size_t>(context));
  for (int64_t i = 0; i < context; ++i) prompt[static_cast<size_t>(i)] = 1000 + (i * 7919) % 100000;
  qwen2audio::GenerationOptions options;
  options.max_new_tokens = 1;
  {
    qwen2audio::Session warm(model, 1);
    warm.append({prompt.data(), nullptr, 1, 16}, nullptr);
    warm.generate(options);
  }
  {
    qwen2audio::Session session(model, 1);
    start = Clock::now();
    session.append({prompt.data(), nullptr, 1, prompt_tokens}, nullptr);
    figures.prefill_tokens_per_second = static_cast<double>(prompt_tokens) / seconds_since(start);
  }
  std::cout << "  prefill (" << prompt_tokens << " tokens): " << figures.prefill_tokens_per_second << " tokens/s\n"
            << std::flush;
  {
    qwen2audio::Session session(model, 1);
    session.append({prompt.data(), nullptr, 1, context}, nullptr);
    options.max_new_tokens = 2;
    session.generate(options);  // the first steps after a prefill size the decode buffers
    options.max_new_tokens = new_tokens;
    start = Clock::now();
    const auto generated = session.generate(options);
    // One decoder pass per returned token: the pending token of the previous call is fed first,
    // and the last token returned is left pending.
    figures.decode_tokens_per_second = static_cast<double>(generated.size()) / seconds_since(start);
  }
  std::cout << "  decode at " << context << " context: " << figures.decode_tokens_per_second << " tokens/s\n"
            << std::flush;
  return figures;
}

}  // namespace

int main(int argc, char** argv) {
  fs::path folder;
  int64_t encoder_layers = 32, decoder_layers = 32, new_tokens = 32;
  int cpu_threads = 0;
  bool skip_cpu = false, skip_cuda = false;
  for (int i = 1; i < argc; ++i) {
    const std::string argument = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(argument + " needs a value");
      return argv[++i];
    };
    if (argument == "--folder")
      folder = next();
    else if (argument == "--encoder-layers")
      encoder_layers = std::stoll(next());
    else if (argument == "--decoder-layers")
      decoder_layers = std::stoll(next());
    else if (argument == "--new-tokens")
      new_tokens = std::stoll(next());
    else if (argument == "--cpu-threads")
      cpu_threads = std::stoi(next());
    else if (argument == "--skip-cpu")
      skip_cpu = true;
    else if (argument == "--skip-cuda")
      skip_cuda = true;  // a smoke test of the rest on a machine without a GPU
    else {
      std::cerr << "unknown argument " << argument << "\n";
      return 2;
    }
  }
  if (folder.empty()) {
    std::cerr << "usage: bench_cuda_model --folder DIR [--decoder-layers N] [--encoder-layers N] [--cpu-threads N] "
                 "[--skip-cpu] [--new-tokens N]\n";
    return 2;
  }
  try {
    if (!fs::exists(folder / "model.safetensors")) {
      const auto start = Clock::now();
      write_checkpoint(folder, encoder_layers, decoder_layers);
      std::cout << "wrote a synthetic checkpoint (" << encoder_layers << " encoder, " << decoder_layers
                << " decoder layers, real widths) in " << seconds_since(start) << " s\n";
    }
    const int64_t prompt_tokens = 800, context = 1024;
    Figures gpu;
    if (!skip_cuda) {
      std::cout << "cuda:\n";
      gpu = measure(folder, "cuda", 0, prompt_tokens, context, new_tokens);
    }
    Figures cpu;
    if (!skip_cpu) {
      std::cout << "cpu:\n";
      cpu = measure(folder, "cpu", cpu_threads, prompt_tokens, context, std::min<int64_t>(new_tokens, 8));
    }
    std::printf("\n| figure | CUDA | CPU | CUDA / CPU |\n|---|---|---|---|\n");
    auto row = [&](const char* name, double a, double b, bool higher_is_better) {
      if (skip_cpu)
        std::printf("| %s | %.4g | - | - |\n", name, a);
      else
        std::printf("| %s | %.4g | %.4g | %.1fx |\n", name, a, b, higher_is_better ? a / b : b / a);
    };
    row("encoder, 30 s clip (s)", gpu.encoder_seconds, cpu.encoder_seconds, false);
    row("prefill, 800 tokens (tokens/s)", gpu.prefill_tokens_per_second, cpu.prefill_tokens_per_second, true);
    row("decode at 1k context (tokens/s)", gpu.decode_tokens_per_second, cpu.decode_tokens_per_second, true);
    row("load (s)", gpu.load_seconds, cpu.load_seconds, false);
  } catch (const std::exception& error) {
    std::cerr << "error: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
