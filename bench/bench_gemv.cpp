// Decode-kernel bandwidth benchmark (not a test): how close each weight format's gemv comes to the
// memory read bandwidth of this machine, at the Qwen2-Audio-7B decoder shapes, on every kernel tier
// the CPU has. Standalone (no oneDNN, no Python), so it also runs on machines without the build
// dependencies:
//   g++ -std=c++20 -O3 -march=x86-64-v2 -fopenmp -I. -Icpp bench/bench_gemv.cpp kernels/cpu/gemv*.cpp \
//       kernels/cpu/quantized_gemm*.cpp kernels/cpu/cpu_features.cpp kernels/cpu/memory_bandwidth.cpp \
//       cpp/runtime/dtype.cpp -o bench_gemv && ./bench_gemv --threads 2
// `--head 1` adds the output head (156032 x 4096) to every token, `--mapped DIR` keeps the weights in
// a file mapped from DIR as the model keeps its checkpoint, `--offset 40` starts every matrix that many
// bytes past a cache line (a mapped checkpoint's tensors start wherever the safetensors header ends:
// 40 bytes past a line in the synthetic 7B checkpoint; without it every matrix starts on a page),
// `--prefetch -1,0,4096` tries distances, `--formats bfloat16` measures only the named formats,
// `--kernels avx512_bf16/rows,avx512_bf16/tiles` only the named kernels and `--rows 1,4` those row counts.
// Per "token" it runs the seven projections of `--layers` decoder layers (q, k, v, o: 4096x4096;
// gate, up: 11008x4096; down: 4096x11008) once each with one activation row, as a decode step does,
// over weights far larger than the last-level cache. The bound is the read bandwidth of a
// streaming sum with the widest vector loads on the same threads (memory_bandwidth.h). On a shared
// machine that bandwidth moves from second to second, so every timed token is paired with a
// streaming read of 512 MiB right after it: "read GB/s" is the median of those reads, "fraction"
// the median over tokens of the kernel's weight bytes per second over its paired read's.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernels/cpu/cpu_features.h"
#include "kernels/cpu/gemv.h"
#include "kernels/cpu/memory_bandwidth.h"
#include "kernels/cpu/quantized_gemm.h"
#include "runtime/buffer.h"

using namespace qwen2audio;
using namespace qwen2audio::kernels;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Bytes filled with a cheap hash (quantized codes of any pattern are valid); BF16 values kept to
// normal numbers of trained-weight size (denormals would take microcode assists on some CPUs and
// measure those instead of the kernel).
struct Matrix {
  int64_t n, k;
  Buffer<uint8_t> data;
  std::shared_ptr<void> mapping;
  Buffer<float> scales;
  WeightMatrix view;
};

// Pages of a file mapped read-only, as the model maps its checkpoint (page-cache pages rather than
// anonymous memory: they may be mapped with different page sizes and so cost different TLB work).
std::shared_ptr<void> map_file_bytes(const std::string& folder, size_t bytes, uint8_t** writable) {
  static int counter = 0;
  const std::string path = folder + "/bench_gemv_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    std::perror(path.c_str());
    std::exit(1);
  }
  void* mapping = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  ::unlink(path.c_str());  // the mapping keeps the file alive
  if (mapping == MAP_FAILED) {
    std::perror("mmap");
    std::exit(1);
  }
  *writable = static_cast<uint8_t*>(mapping);
  return std::shared_ptr<void>(mapping, [bytes](void* address) { ::munmap(address, bytes); });
}

Matrix make_matrix(WeightFormat format, int64_t n, int64_t k, int64_t group, const std::string& mapped_folder,
                   int64_t offset) {
  Matrix m{n, k, {}, {}, {}, {}};
  const size_t bytes = static_cast<size_t>(n * weight_row_bytes(format, k));
  uint8_t* data = nullptr;
  if (mapped_folder.empty())
    data = m.data.reserve(bytes + static_cast<size_t>(offset));
  else
    m.mapping = map_file_bytes(mapped_folder, bytes + static_cast<size_t>(offset), &data);
  data += offset;
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < bytes; ++i) data[i] = static_cast<uint8_t>((i * 2654435761u) >> 13);
  if (format == WeightFormat::BF16) {  // sign and mantissa from the hash, exponents 2^-10 .. 2^-3
    auto* bits = reinterpret_cast<uint16_t*>(data);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < bytes / 2; ++i)
      bits[i] = static_cast<uint16_t>((bits[i] & 0x807F) | ((117 + (bits[i] >> 8) % 8) << 7));
  }
  m.view = WeightMatrix{format, data, k, nullptr, 0, group};
  if (format == WeightFormat::Int8 || format == WeightFormat::Int4) {
    const int64_t groups = scale_groups(k, group);
    float* scales = m.scales.reserve(static_cast<size_t>(n * groups));
    for (int64_t i = 0; i < n * groups; ++i) scales[i] = 1e-3f * static_cast<float>(1 + i % 7);
    m.view.scales = scales;
    m.view.scales_ld = groups;
  }
  return m;
}

size_t matrix_bytes(const Matrix& m) {
  return static_cast<size_t>(m.n * weight_row_bytes(m.view.format, m.k)) +
         (m.view.scales ? static_cast<size_t>(m.n * m.view.scales_ld) * sizeof(float) : 0);
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, layers = 4, tokens = 8;
  bool with_scalar = true, with_head = false;
  std::string mapped_folder;  // empty: anonymous memory
  int64_t offset = 0;         // bytes past a cache line where every matrix starts
  std::string formats = "bfloat16,int8,int4";
  std::string kernels;  // empty: every kernel
  std::vector<int64_t> row_counts = {1, 4};
  std::vector<int64_t> prefetches = {-1};  // the tier's default
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--threads") threads = std::atoi(argv[i + 1]);
    if (flag == "--layers") layers = std::atoi(argv[i + 1]);
    if (flag == "--tokens") tokens = std::atoi(argv[i + 1]);
    if (flag == "--scalar") with_scalar = std::atoi(argv[i + 1]) != 0;
    if (flag == "--head") with_head = std::atoi(argv[i + 1]) != 0;  // the 156032 x 4096 output head too
    if (flag == "--mapped") mapped_folder = argv[i + 1];            // weights in a file mapped from here
    if (flag == "--offset") offset = std::atoll(argv[i + 1]);       // e.g. 40, as in a safetensors file
    if (flag == "--formats") formats = argv[i + 1];                 // comma-separated, e.g. bfloat16,int4
    if (flag == "--kernels") kernels = argv[i + 1];                 // comma-separated names as printed
    auto numbers = [](const char* item) {
      std::vector<int64_t> values;
      while (*item) {
        char* next = nullptr;
        values.push_back(std::strtoll(item, &next, 10));
        item = *next == ',' ? next + 1 : next;
      }
      return values;
    };
    // Comma-separated distances in bytes, e.g. -1,0,1024 (-1: the tier's default).
    if (flag == "--prefetch") prefetches = numbers(argv[i + 1]);
    if (flag == "--rows") row_counts = numbers(argv[i + 1]);
  }
  omp_set_num_threads(threads);
  std::printf("cpu: %s\nthreads: %d, physical cores: %d\n", cpu_description().c_str(), threads, physical_core_count());
  const double bandwidth = measure_read_bandwidth(size_t{1} << 30, 5);
  std::printf("read bandwidth (streaming sum, 1 GiB, %d threads): %.1f GB/s\n\n", threads, bandwidth);
  // The paired reads: a buffer of its own, far larger than the last-level cache.
  const size_t paired_bytes = size_t{512} << 20;
  Buffer<uint64_t> paired(paired_bytes / 8);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < static_cast<int64_t>(paired_bytes / 8); ++i) paired.data()[i] = static_cast<uint64_t>(i);
  volatile uint64_t sink = 0;

  const int64_t hidden = 4096, intermediate = 11008;
  const int64_t vocab = 156032;
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {hidden, hidden},       {hidden, hidden},       {hidden, hidden},      {hidden, hidden},
      {intermediate, hidden}, {intermediate, hidden}, {hidden, intermediate}};
  std::printf("weights: %s%s, starting %lld bytes past a cache line\n",
              mapped_folder.empty() ? "anonymous memory" : ("a file mapped from " + mapped_folder).c_str(),
              with_head ? ", output head included" : "", static_cast<long long>(offset));
  std::printf("%-9s %-18s %4s %8s %10s %10s %8s %9s %9s\n", "format", "kernel", "rows", "prefetch", "MB/token",
              "ms/token", "GB/s", "read GB/s", "fraction");
  for (WeightFormat format : {WeightFormat::BF16, WeightFormat::Int8, WeightFormat::Int4}) {
    if (("," + formats + ",").find(std::string(",") + weight_format_name(format) + ",") == std::string::npos) continue;
    std::vector<Matrix> matrices;
    size_t bytes = 0;
    for (int layer = 0; layer < layers; ++layer)
      for (const auto& [n, k] : shapes) {
        matrices.push_back(make_matrix(format, n, k, 128, mapped_folder, offset));
        bytes += matrix_bytes(matrices.back());
      }
    if (with_head) {
      matrices.push_back(make_matrix(format, vocab, hidden, 128, mapped_folder, offset));
      bytes += matrix_bytes(matrices.back());
    }
    std::vector<float> x(8 * intermediate, 0.01f), y(8 * vocab);
    // The integer kernels' panel layout (quantized_gemm.h), where the model packs quantized weights.
    std::vector<PackedPanels> panels;
    const bool with_panels = format != WeightFormat::BF16 && panels_supported(best_isa());
    if (with_panels)
      for (const Matrix& m : matrices) panels.push_back(pack_panels(m.view, m.n, m.k));
    // The row kernels of each tier that has its own (gemv_isa), then the panels at the best tier.
    const Isa row_tiers[] = {Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16};
    for (int variant = 0; variant <= std::ssize(row_tiers); ++variant) {
      const bool panel_variant = variant == std::ssize(row_tiers);
      const Isa isa = panel_variant ? best_isa() : row_tiers[variant];
      if (panel_variant && !with_panels) continue;
      GemvOptions options{true, isa};
      if (!panel_variant && (!isa_supported(isa) || gemv_isa(options, format) != isa)) continue;
      if (isa == Isa::Scalar && !with_scalar) continue;
      // Float weights in both read orders (gemv.h); quantized ones have one.
      const bool float_weights = format == WeightFormat::BF16 && !panel_variant && isa != Isa::Scalar;
      for (ReadOrder order : {ReadOrder::Tiles, ReadOrder::Rows}) {
        if (order == ReadOrder::Rows && !float_weights) continue;
        options.read_order = order;
        const std::string kernel = panel_variant ? std::string("panels")
                                                 : std::string(isa_name(isa)) +
                                                       (float_weights ? std::string("/") + read_order_name(order) : "");
        if (!kernels.empty() && ("," + kernels + ",").find("," + kernel + ",") == std::string::npos) continue;
        for (int64_t rows : row_counts) {
          for (int64_t prefetch : prefetches) {
            if (isa == Isa::Scalar && prefetch != prefetches.front()) continue;
            if (isa == Isa::Scalar && rows > 1) continue;
            options.prefetch_distance = prefetch;
            auto token = [&] {
              for (size_t i = 0; i < matrices.size(); ++i) {
                const Matrix& m = matrices[i];
                gemv({rows, m.n, m.k, x.data(), m.k, panel_variant ? panels[i].view : m.view, nullptr, y.data(), m.n,
                      false},
                     options);
              }
            };
            token();  // warm-up: page faults, thread team
            const int count = isa == Isa::Scalar ? 2 : tokens;
            std::vector<double> times, reads, fractions;
            for (int t = 0; t < count; ++t) {
              double start = now();
              token();
              times.push_back(now() - start);
              start = now();
              sink = sink + streaming_read(paired.data(), paired_bytes);
              reads.push_back(static_cast<double>(paired_bytes) / (now() - start) / 1e9);
              fractions.push_back(static_cast<double>(bytes) / times.back() / 1e9 / reads.back());
            }
            auto median = [](std::vector<double> values) {
              std::sort(values.begin(), values.end());
              return values[values.size() / 2];
            };
            const double time = median(times);
            std::printf("%-9s %-18s %4lld %8lld %10.0f %10.2f %8.1f %9.1f %8.0f%%\n", weight_format_name(format),
                        kernel.c_str(), static_cast<long long>(rows), static_cast<long long>(prefetch), bytes / 1e6,
                        time * 1e3, static_cast<double>(bytes) / time / 1e9, median(reads), 100.0 * median(fractions));
            std::fflush(stdout);
          }
        }
      }
    }
  }
  return 0;
}
