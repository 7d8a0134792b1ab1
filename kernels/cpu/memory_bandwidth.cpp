#include "kernels/cpu/memory_bandwidth.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>

#include "kernels/cpu/cpu_features.h"
#include "runtime/buffer.h"
#include "runtime/errors.h"

// GCC 12 flags the deliberately undefined pass-through operands inside its own AVX-512 intrinsics
// (GCC bug 105593).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace qwen2audio::kernels {
namespace {

// Four independent accumulators per 256 bytes, so the loads, not the additions, set the pace.
__attribute__((target("avx512f"))) uint64_t sum_avx512(const uint64_t* data, size_t words) {
  __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
  for (size_t i = 0; i < words; i += 32) {
    a = _mm512_add_epi64(a, _mm512_load_si512(data + i));
    b = _mm512_add_epi64(b, _mm512_load_si512(data + i + 8));
    c = _mm512_add_epi64(c, _mm512_load_si512(data + i + 16));
    d = _mm512_add_epi64(d, _mm512_load_si512(data + i + 24));
  }
  // Summed as unsigned words: GCC's _mm512_reduce_add_epi64 adds signed 64-bit lanes in C, which
  // wraps (undefined behaviour, flagged by UBSan) as soon as the data's sum passes 2^63.
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, _mm512_add_epi64(_mm512_add_epi64(a, b), _mm512_add_epi64(c, d)));
  uint64_t total = 0;
  for (uint64_t lane : lanes) total += lane;
  return total;
}

// Four streams a quarter of the region apart, each prefetched 1 KiB ahead: the access pattern of
// the decode kernels' column tiles. On Zen 3 this reads 5-10 % faster than one stream, and the bound
// must be the fastest read we know how to make, or a kernel could pass it.
__attribute__((target("avx2"))) uint64_t sum_avx2(const uint64_t* data, size_t words) {
  constexpr size_t kStreams = 4;
  const size_t per_stream = words / kStreams / 8 * 8;  // whole 64-byte lines
  __m256i acc[kStreams];
  for (size_t s = 0; s < kStreams; ++s) acc[s] = _mm256_setzero_si256();
  for (size_t i = 0; i < per_stream; i += 8) {
    for (size_t s = 0; s < kStreams; ++s) {
      const uint64_t* line = data + s * per_stream + i;
      _mm_prefetch(reinterpret_cast<const char*>(line) + 1024, _MM_HINT_T0);
      const __m256i low = _mm256_load_si256(reinterpret_cast<const __m256i*>(line));
      const __m256i high = _mm256_load_si256(reinterpret_cast<const __m256i*>(line + 4));
      acc[s] = _mm256_add_epi64(acc[s], _mm256_add_epi64(low, high));
    }
  }
  for (size_t i = kStreams * per_stream; i < words; i += 4)  // the few lines the split left over
    acc[0] = _mm256_add_epi64(acc[0], _mm256_load_si256(reinterpret_cast<const __m256i*>(data + i)));
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                     _mm256_add_epi64(_mm256_add_epi64(acc[0], acc[1]), _mm256_add_epi64(acc[2], acc[3])));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

uint64_t sum_scalar(const uint64_t* data, size_t words) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  for (size_t i = 0; i < words; i += 4) {
    a += data[i];
    b += data[i + 1];
    c += data[i + 2];
    d += data[i + 3];
  }
  return a + b + c + d;
}

}  // namespace

uint64_t streaming_read(const void* data, size_t bytes) {
  if (bytes % 256 != 0 || reinterpret_cast<uintptr_t>(data) % 64 != 0)
    throw InvalidArgument("streaming_read needs a 64-byte aligned buffer of whole 256-byte chunks");
  const auto* words = static_cast<const uint64_t*>(data);
  const size_t chunks = bytes / 256;
  const Isa isa = best_isa();
  uint64_t total = 0;
#pragma omp parallel reduction(+ : total)
  {
    // Contiguous, equal shares: each thread streams its own region.
    const size_t threads = static_cast<size_t>(omp_get_num_threads());
    const size_t thread = static_cast<size_t>(omp_get_thread_num());
    const size_t begin = chunks * thread / threads, end = chunks * (thread + 1) / threads;
    const uint64_t* start = words + begin * 32;
    const size_t count = (end - begin) * 32;
    if (isa >= Isa::Avx512)
      total += sum_avx512(start, count);
    else if (isa >= Isa::Avx2)
      total += sum_avx2(start, count);
    else
      total += sum_scalar(start, count);
  }
  return total;
}

ReadProbe::ReadProbe(size_t bytes) : bytes_(bytes / 256 * 256) {
  if (bytes < (size_t{1} << 20)) throw InvalidArgument("ReadProbe needs at least 1 MiB");
  uint64_t* data = buffer_.reserve(bytes_ / 8);
  const int64_t words = static_cast<int64_t>(bytes_ / 8);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < words; ++i) data[i] = static_cast<uint64_t>(i);
  volatile uint64_t sink = streaming_read(data, bytes_);
  (void)sink;
}

double ReadProbe::read_gbs() {
  const auto start = std::chrono::steady_clock::now();
  volatile uint64_t sink = streaming_read(buffer_.data(), bytes_);
  (void)sink;
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return static_cast<double>(bytes_) / seconds / 1e9;
}

double measure_read_bandwidth(size_t bytes, int repeats) {
  if (bytes < (size_t{1} << 20) || repeats < 1)
    throw InvalidArgument("measure_read_bandwidth needs at least 1 MiB and one repeat");
  bytes = bytes / 256 * 256;
  Buffer<uint64_t> buffer(bytes / 8);
  uint64_t* data = buffer.data();
  const int64_t words = static_cast<int64_t>(bytes / 8);
  // Touched by the threads that read it later (first-touch placement on NUMA machines).
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < words; ++i) data[i] = static_cast<uint64_t>(i);
  volatile uint64_t sink = streaming_read(data, bytes);
  double best = 0.0;
  for (int repeat = 0; repeat < repeats; ++repeat) {
    const auto start = std::chrono::steady_clock::now();
    sink = sink + streaming_read(data, bytes);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, static_cast<double>(bytes) / seconds / 1e9);
  }
  return best;
}

}  // namespace qwen2audio::kernels
