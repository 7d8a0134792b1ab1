#pragma once

#include <cstddef>
#include <cstdint>

// The memory read bandwidth a streaming kernel can reach: the bound against which the decode
// kernels (gemv.h), which read each weight once per token, are measured. For benchmarks.
namespace qwen2audio::kernels {

// Sums the 64-bit words of `data` (bytes a multiple of 64, 64-byte aligned) with the widest
// vector loads the CPU has, split over the calling thread's OpenMP team. The sum only keeps the
// reads from being optimised away.
uint64_t streaming_read(const void* data, size_t bytes);

// Best GB/s of streaming_read over a fresh buffer of `bytes` (pick one far larger than the last
// level cache), after one untimed pass; uses the calling thread's OpenMP thread count.
double measure_read_bandwidth(size_t bytes, int repeats);

}  // namespace qwen2audio::kernels
