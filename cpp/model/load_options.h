#pragma once

#include <cstdint>
#include <string>

#include "backend/device_loader.h"
#include "io/checkpoint.h"
#include "kernels/cpu/gemm.h"
#include "model/quantization.h"
#include "runtime/dtype.h"

namespace qwen2audio {

// A dtype a caller asks for: the checkpoint's own, or one named.
enum class DTypeChoice : uint8_t { Auto, Float32, BFloat16 };

// "auto", "float32"/"fp32"/"f32", "bfloat16"/"bf16"; throws InvalidArgument naming `argument`.
DTypeChoice parse_dtype_choice(const std::string& text, const char* argument);

// What loading a model of any family is asked for, parsed once where the request enters the
// engine (the Python binding) and read as enums from there on.
struct LoadOptions {
  DTypeChoice dtype = DTypeChoice::Auto;
  // What sessions' KV caches hold; Auto: BF16 for a BF16 model, else float32.
  DTypeChoice kv_cache_dtype = DTypeChoice::Auto;
  DeviceName device;
  int num_threads = 0;  // 0: the OpenMP default
  kernels::GemmOptions gemm;
  QuantizationRequest quantization;
};

// The options' dtypes resolved against a checkpoint. On a device every weight computes in BF16
// (what its matrix units take) and refuses what only the CPU does: quantization, float32 compute
// or KV cache (InvalidArgument naming the option).
struct ResolvedDTypes {
  DType compute = DType::F32;
  DType kv_cache = DType::F32;
};
ResolvedDTypes resolve_dtypes(const LoadOptions& options, const Checkpoint& checkpoint);

}  // namespace qwen2audio
