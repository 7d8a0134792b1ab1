#pragma once

#include <functional>

namespace qwen2audio {

// Called between layers and between generated tokens; it throws to abandon the computation (the
// Python bindings raise KeyboardInterrupt from it on Ctrl-C). An empty function never interrupts.
using Interrupt = std::function<void()>;

inline void check_interrupt(const Interrupt& interrupt) {
  if (interrupt) interrupt();
}

}  // namespace qwen2audio
