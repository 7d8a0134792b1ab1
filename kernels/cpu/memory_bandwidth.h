#pragma once

#include <cstddef>
#include <cstdint>

#include "runtime/buffer.h"

// The memory read bandwidth a streaming kernel can reach: the bound against which the decode
// kernels (gemv.h), which read each weight once per token, are measured. For benchmarks.
namespace qwen2audio::kernels {

// Sums the 64-bit words of `data` (bytes a multiple of 64, 64-byte aligned) with the widest
// vector loads the CPU has, split over the calling thread's OpenMP team. The sum only keeps the
// reads from being optimised away.
uint64_t streaming_read(const void* data, size_t bytes);

// One buffer read again and again: a kernel's timed call paired with a read right after it
// (bench/bench_gemv.cpp's method, and the model benchmark's). On a shared machine the bandwidth
// moves from second to second, so a bound read once before or after a run is not the one the run
// saw; the ratio of each call to its own paired read is.
class ReadProbe {
 public:
  explicit ReadProbe(size_t bytes);  // at least 1 MiB; allocated and touched here
  // GB/s of one streaming_read of the buffer on the calling thread's OpenMP team.
  double read_gbs();
  size_t bytes() const { return bytes_; }

 private:
  Buffer<uint64_t> buffer_;
  size_t bytes_;
};

// Best GB/s of streaming_read over a fresh buffer of `bytes` (pick one far larger than the last
// level cache), after one untimed pass; uses the calling thread's OpenMP thread count.
double measure_read_bandwidth(size_t bytes, int repeats);

}  // namespace qwen2audio::kernels
