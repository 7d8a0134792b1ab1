#pragma once

namespace qwen2audio {

// The number of OpenMP threads one model uses. OpenMP's thread count is a per-thread setting
// (an ICV of the calling thread), so each model applies its own on entry to compute and two models
// in one process, or two Python threads sharing one model, never change each other's.
int default_num_threads();
// Throws InvalidArgument unless 1 <= count <= 4096.
int checked_num_threads(int count);

class ScopedNumThreads {
 public:
  explicit ScopedNumThreads(int count);
  ~ScopedNumThreads();
  ScopedNumThreads(const ScopedNumThreads&) = delete;
  ScopedNumThreads& operator=(const ScopedNumThreads&) = delete;

 private:
  int previous_;
};

}  // namespace qwen2audio
