// libFuzzer target: the safetensors header parser must reject or accept any byte string without
// reading outside it, crashing, or allocating without bound.
#include <cstddef>
#include <cstdint>

#include "io/safetensors.h"
#include "runtime/errors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto header = qwen2audio::parse_safetensors(data, size, "fuzz");
    // Touch every tensor's first and last byte: any out-of-bounds record shows up under ASan.
    volatile uint8_t sink = 0;
    for (const auto& record : header.tensors)
      if (record.end > record.begin) sink ^= data[header.data_offset + record.begin] ^ data[header.data_offset + record.end - 1];
    (void)sink;
  } catch (const qwen2audio::CheckpointError&) {
  }
  return 0;
}
