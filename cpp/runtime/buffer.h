#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>
#include <new>

namespace qwen2audio {

// A growable scratch array aligned for AVX-512 loads. It only ever grows, so a workspace sized
// for a prefill serves every later decode step without touching the allocator; contents are not
// preserved across growth (scratch, not storage).
template <typename T>
class Buffer {
 public:
  static constexpr size_t kAlignment = 64;

  Buffer() = default;
  explicit Buffer(size_t count) { reserve(count); }
  Buffer(Buffer&& other) noexcept : data_(std::move(other.data_)), capacity_(other.capacity_) { other.capacity_ = 0; }
  Buffer& operator=(Buffer&& other) noexcept {
    data_ = std::move(other.data_);
    capacity_ = other.capacity_;
    other.capacity_ = 0;
    return *this;
  }

  // Returns the storage for at least `count` elements.
  T* reserve(size_t count) {
    if (count > capacity_) {
      const size_t bytes = ((count * sizeof(T) + kAlignment - 1) / kAlignment) * kAlignment;
      void* memory = std::aligned_alloc(kAlignment, bytes);
      if (memory == nullptr) throw std::bad_alloc();
      data_.reset(static_cast<T*>(memory));
      capacity_ = count;
    }
    return data_.get();
  }
  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  size_t capacity() const { return capacity_; }

 private:
  struct Free {
    void operator()(T* pointer) const { std::free(pointer); }
  };
  std::unique_ptr<T, Free> data_;
  size_t capacity_ = 0;
};

}  // namespace qwen2audio
