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
int default_num_threads() {
  const char* requested = std::getenv("OMP_NUM_THREADS");
  if (requested != nullptr && *requested != '\0') return omp_get_max_threads();
  return std::max(1, std::min(kernels::physical_core_count(), omp_get_max_threads()));
}

int checked_num_threads(int count) {
  if (count < 1 || count > 4096)
    throw InvalidArgument("num_threads must be between 1 and 4096, got " + std::to_string(count));
  return count;
}

ScopedNumThreads::ScopedNumThreads(int count) : previous_(omp_get_max_threads()) { omp_set_num_threads(count); }

ScopedNumThreads::~ScopedNumThreads() { omp_set_num_threads(previous_); }

}  // namespace qwen2audio
