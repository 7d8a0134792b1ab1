#include "kernels/cpu/lane_vector.h"

namespace qwen2audio::kernels {

LaneIsa detect_lane_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl"))
    return LaneIsa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return LaneIsa::kAvx2;
  return LaneIsa::kSse;
}

}  // namespace qwen2audio::kernels
