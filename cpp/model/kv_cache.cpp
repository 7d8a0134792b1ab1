#include "model/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "runtime/errors.h"

namespace qwen2audio {

KVCache::KVCache(int64_t layers, int64_t kv_heads, int64_t head_dim, int64_t batch)
    : layers_(layers), kv_heads_(kv_heads), head_dim_(head_dim), batch_(batch), keys_(layers), values_(layers) {
  if (batch < 1) throw InvalidArgument("batch size must be at least 1, got " + std::to_string(batch));
}

void KVCache::reserve(int64_t capacity) {
  if (capacity <= capacity_) return;
  const size_t per_layer = static_cast<size_t>(batch_ * kv_heads_ * capacity * head_dim_);
  const size_t kept = static_cast<size_t>(length_ * head_dim_) * sizeof(float);
  for (int64_t layer = 0; layer < layers_; ++layer) {
    for (auto* store : {&keys_, &values_}) {
      Buffer<float> grown(per_layer);
      for (int64_t block = 0; block < batch_ * kv_heads_; ++block)
        if (kept)
          std::memcpy(grown.data() + block * capacity * head_dim_, (*store)[layer].data() + block * head_stride(),
                      kept);
      (*store)[layer] = std::move(grown);
    }
  }
  Buffer<uint8_t> mask(static_cast<size_t>(batch_ * capacity));
  std::fill_n(mask.data(), batch_ * capacity, 0);
  for (int64_t b = 0; b < batch_; ++b)
    if (length_)
      std::memcpy(mask.data() + b * capacity, key_mask_.data() + b * capacity_, static_cast<size_t>(length_));
  key_mask_ = std::move(mask);
  capacity_ = capacity;
}

void KVCache::truncate(int64_t length) {
  if (length < 0 || length > length_)
    throw InvalidArgument("cannot truncate a cache of " + std::to_string(length_) + " tokens to " +
                          std::to_string(length));
  length_ = length;
}

void KVCache::advance(int64_t steps) {
  if (length_ + steps > capacity_) throw std::logic_error("KV cache advanced past its capacity");
  length_ += steps;
}

}  // namespace qwen2audio
