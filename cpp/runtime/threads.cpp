#include "runtime/threads.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "kernels/cpu/cpu_features.h"
#include "runtime/errors.h"

namespace qwen2audio {

// Honors OMP_NUM_THREADS when set, as users of OpenMP programs expect. Otherwise one thread per
// physical core: hyper-threads share a core's vector units, so more compute threads only contend
// (and OpenMP's default, one per logical CPU, is twice that on SMT machines).
//
// Both are read from their sources, not from omp_get_max_threads(): that is the calling thread's
// current setting, which another library in the process may have changed (importing torch first
// sets it to torch's own choice, 1 on a 2-core machine), and it would then become ours too.
int default_num_threads() {
  const char* requested = std::getenv("OMP_NUM_THREADS");
  if (requested != nullptr && *requested != '\0') {
    // The first entry of a nesting list such as "8,2" is the outer level, which our kernels use.
    char* end = nullptr;
    const long count = std::strtol(requested, &end, 10);
    if (end != requested && (*end == '\0' || *end == ',') && count >= 1 && count <= 4096)
      return static_cast<int>(count);
  }
  return std::max(1, kernels::physical_core_count());
}

int checked_num_threads(int count) {
  if (count < 1 || count > 4096)
    throw InvalidArgument("num_threads must be between 1 and 4096, got " + std::to_string(count));
  return count;
}

ScopedNumThreads::ScopedNumThreads(int count) : previous_(omp_get_max_threads()) { omp_set_num_threads(count); }

ScopedNumThreads::~ScopedNumThreads() { omp_set_num_threads(previous_); }

}  // namespace qwen2audio
