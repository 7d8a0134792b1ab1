// Decode-step attention against the memory bandwidth (not a test): a batch of sequences, each head's
// keys and values read from the BF16 cache layout the model keeps ([kv_head, slot, head_dim] per
// sequence), over several layers whose caches together are far larger than the last-level cache, as
// one decode step of the model reads them. Standalone (no oneDNN, no Python):
//   g++ -std=c++20 -O3 -march=x86-64-v2 -fopenmp -I. -Icpp bench/bench_decode_attention.cpp \
//       kernels/cpu/attention.cpp kernels/cpu/cpu_features.cpp kernels/cpu/memory_bandwidth.cpp \
//       cpp/runtime/dtype.cpp -o bench_decode_attention && ./bench_decode_attention --threads 2
// Options: --contexts 64,256,1024 (tokens in the cache), --batch 4, --layers 4, --heads 32 (key/value
// heads = query heads, as Qwen2-Audio-7B), --head-dim 128, --steps 15.
// Every timed step is paired with a streaming read of 512 MiB right before it (after another read):
// "of read" is the step's cache bytes per second over its paired read's, the median over steps.
// The engine's kernel runs with its read-ahead (AttentionArgs::read_ahead) on and off (off, each pass
// prefetches a few rows ahead in its own stream, as past 256 tokens either way), step by step in
// turns, so the two see the same machine.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/memory_bandwidth.h"
#include "runtime/buffer.h"
#include "runtime/dtype.h"

using namespace qwen2audio;
using namespace qwen2audio::kernels;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

std::vector<int64_t> numbers(const std::string& text) {
  std::vector<int64_t> values;
  std::stringstream stream(text);
  for (std::string item; std::getline(stream, item, ',');) values.push_back(std::atoll(item.c_str()));
  return values;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, steps = 15;
  int64_t batch = 4, layers = 4, heads = 32, head_dim = 128;
  std::vector<int64_t> contexts{64, 256, 1024};
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--threads") threads = std::atoi(argv[i + 1]);
    if (flag == "--steps") steps = std::atoi(argv[i + 1]);
    if (flag == "--batch") batch = std::atoll(argv[i + 1]);
    if (flag == "--layers") layers = std::atoll(argv[i + 1]);
    if (flag == "--heads") heads = std::atoll(argv[i + 1]);
    if (flag == "--head-dim") head_dim = std::atoll(argv[i + 1]);
    if (flag == "--contexts") contexts = numbers(argv[i + 1]);
  }
  omp_set_num_threads(threads);
  const int64_t capacity = *std::max_element(contexts.begin(), contexts.end());
  std::printf("cpu: %s\nthreads: %d; batch %ld, %ld layers, %ld heads of %ld, BF16 cache\n", cpu_description().c_str(),
              threads, static_cast<long>(batch), static_cast<long>(layers), static_cast<long>(heads),
              static_cast<long>(head_dim));

  // Keys and values of normal BF16 numbers of a trained cache's size; every layer its own buffers,
  // aligned as the model's cache is.
  const size_t per_layer = static_cast<size_t>(batch * heads * capacity * head_dim);
  std::vector<Buffer<uint16_t>> keys(layers), values(layers);
  for (int64_t layer = 0; layer < layers; ++layer) {
    keys[layer].reserve(per_layer);
    values[layer].reserve(per_layer);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < per_layer; ++i) {
      keys[layer].data()[i] = float_to_bf16(static_cast<float>((i * 2654435761u >> 13) % 2001) * 1e-3f - 1.0f);
      values[layer].data()[i] = float_to_bf16(static_cast<float>((i * 40503u >> 7) % 2001) * 1e-3f - 1.0f);
    }
  }
  std::vector<float> query(static_cast<size_t>(batch * heads * head_dim)), out(query.size());
  for (size_t i = 0; i < query.size(); ++i) query[i] = static_cast<float>(i % 17) * 0.01f;
  AttentionScratch scratch;
  ReadProbe probe(512u << 20);

  std::printf("\n%8s %10s %10s %12s %10s %12s %10s %9s\n", "context", "MB/step", "off ms", "off of read", "on ms",
              "on of read", "read GB/s", "off/on");
  for (const int64_t context : contexts) {
    const double bytes = 2.0 * layers * batch * heads * context * head_dim * 2;
    auto step = [&](bool read_ahead) {
      for (int64_t layer = 0; layer < layers; ++layer) {
        AttentionArgs args;
        args.batch = batch;
        args.q_len = 1;
        args.kv_len = context;
        args.num_heads = args.num_kv_heads = heads;
        args.head_dim = head_dim;
        args.q = query.data();
        args.q_batch_stride = args.q_row_stride = heads * head_dim;
        args.k = keys[layer].data();
        args.v = values[layer].data();
        args.kv_dtype = DType::BF16;
        args.kv_batch_stride = heads * capacity * head_dim;
        args.kv_head_stride = capacity * head_dim;
        args.kv_row_stride = head_dim;
        args.out = out.data();
        args.out_batch_stride = args.out_row_stride = heads * head_dim;
        args.scale = 0.088f;
        args.causal = true;
        args.read_ahead = read_ahead;
        attention(args, scratch);
      }
    };
    step(true);
    step(false);
    std::vector<double> time[2], fraction[2], reads;
    for (int i = 0; i < steps; ++i) {
      for (int variant = 0; variant < 2; ++variant) {
        probe.read_gbs();
        const double read = probe.read_gbs();
        reads.push_back(read);
        const double start = now();
        step(variant == 1);
        const double elapsed = now() - start;
        time[variant].push_back(elapsed);
        fraction[variant].push_back(bytes / elapsed / (read * 1e9));
      }
    }
    std::vector<double> ratios;
    for (int i = 0; i < steps; ++i) ratios.push_back(time[0][i] / time[1][i]);
    std::printf("%8ld %10.1f %10.3f %11.0f%% %10.3f %11.0f%% %10.1f %8.2fx\n", static_cast<long>(context), bytes / 1e6,
                median(time[0]) * 1e3, 100 * median(fraction[0]), median(time[1]) * 1e3, 100 * median(fraction[1]),
                median(reads), median(ratios));
  }
  return 0;
}
