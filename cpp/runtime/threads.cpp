#include "runtime/threads.h"

#include <omp.h>

#include <string>

#include "runtime/errors.h"

namespace qwen2audio {

// Honors OMP_NUM_THREADS when set, as users of OpenMP programs expect.
int default_num_threads() { return omp_get_max_threads(); }

int checked_num_threads(int count) {
  if (count < 1 || count > 4096)
    throw InvalidArgument("num_threads must be between 1 and 4096, got " + std::to_string(count));
  return count;
}

ScopedNumThreads::ScopedNumThreads(int count) : previous_(omp_get_max_threads()) { omp_set_num_threads(count); }

ScopedNumThreads::~ScopedNumThreads() { omp_set_num_threads(previous_); }

}  // namespace qwen2audio
