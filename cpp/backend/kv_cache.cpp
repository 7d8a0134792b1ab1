#include "backend/kv_cache.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "runtime/errors.h"

namespace qwen2audio {
namespace {

void store_token(uint8_t* key_base, uint8_t* value_base, int64_t slot, DType dtype, const float* k, const float* v,
                 int64_t head_dim) {
  if (dtype == DType::F32) {
    std::memcpy(key_base + slot * sizeof(float), k, sizeof(float) * head_dim);
    std::memcpy(value_base + slot * sizeof(float), v, sizeof(float) * head_dim);
    return;
  }
  auto* keys = reinterpret_cast<uint16_t*>(key_base) + slot;
  auto* values = reinterpret_cast<uint16_t*>(value_base) + slot;
  for (int64_t d = 0; d < head_dim; ++d) {
    keys[d] = float_to_bf16(k[d]);
    values[d] = float_to_bf16(v[d]);
  }
}

}  // namespace

KVCache::KVCache(int64_t layers, int64_t kv_heads, int64_t head_dim, int64_t batch, DType dtype)
    : layers_(layers),
      kv_heads_(kv_heads),
      head_dim_(head_dim),
      batch_(batch),
      dtype_(dtype),
      element_size_(static_cast<int64_t>(dtype_size(dtype))),
      keys_(layers),
      values_(layers) {
  if (batch < 1) throw InvalidArgument("batch size must be at least 1, got " + std::to_string(batch));
  if (dtype != DType::F32 && dtype != DType::BF16)
    throw InvalidArgument("the KV cache holds float32 or bfloat16, got " + std::string(dtype_name(dtype)));
}

KVCache::KVCache(int64_t layers, int64_t kv_heads, int64_t head_dim, int64_t batch, DType dtype,
                 std::unique_ptr<backend::KVStorage> storage)
    : KVCache(layers, kv_heads, head_dim, batch, dtype) {
  device_ = std::move(storage);
}

KVCache::KVCache(KVCache&&) noexcept = default;
KVCache& KVCache::operator=(KVCache&&) noexcept = default;
KVCache::~KVCache() = default;

size_t KVCache::bytes() const {
  if (device_) return device_->bytes();
  return static_cast<size_t>(2 * layers_ * batch_ * kv_heads_ * capacity_ * head_dim_ * element_size_);
}

void KVCache::reserve(int64_t capacity) {
  if (capacity <= capacity_) return;
  if (device_) device_->reserve(capacity, length_);
  const size_t per_layer = static_cast<size_t>(batch_ * kv_heads_ * capacity * head_dim_ * element_size_);
  const size_t kept = static_cast<size_t>(length_ * head_dim_ * element_size_);
  const int64_t old_block = head_stride() * element_size_, new_block = capacity * head_dim_ * element_size_;
  for (int64_t layer = 0; layer < layers_ && !device_; ++layer) {
    for (auto* store : {&keys_, &values_}) {
      Buffer<uint8_t> grown(per_layer);
      for (int64_t block = 0; block < batch_ * kv_heads_; ++block)
        if (kept) std::memcpy(grown.data() + block * new_block, (*store)[layer].data() + block * old_block, kept);
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

void KVCache::store(int64_t layer, const float* k, const float* v, int64_t steps, int64_t ld) {
  if (device_) throw std::logic_error("a device KV cache is written by its backend's ops");
  if (length_ + steps > capacity_) throw std::logic_error("KV cache capacity not reserved before storing");
  const int64_t start = length_;
  uint8_t* key_base = keys_[layer].data();
  uint8_t* value_base = values_[layer].data();
  // A batched decode step writes into pages of the cache it has not touched before (one page per 16
  // BF16 rows of a head), and the first write to each page faults: 64 faults a step at batch 4 over four
  // 7B layers, 207-262 us a layer on one thread, 133 us on two (Zen 5 VM). Calls of at most 4096
  // elements stay on the calling thread: for the 7B (32 heads of 128) that is a one-row step, about 10
  // us a layer; smaller models' batched steps stay there too.
#pragma omp parallel for collapse(2) schedule(static) if (batch_ * steps * kv_heads_ * head_dim_ > (1 << 12))
  for (int64_t b = 0; b < batch_; ++b) {
    for (int64_t g = 0; g < kv_heads_; ++g) {
      for (int64_t t = 0; t < steps; ++t) {
        const int64_t source = (b * steps + t) * ld + g * head_dim_;
        const int64_t slot = b * batch_stride() + g * head_stride() + (start + t) * row_stride();
        store_token(key_base, value_base, slot, dtype_, k + source, v + source, head_dim_);
      }
    }
  }
}

void KVCache::store_rows(int64_t layer, const float* k, const float* v, int64_t ld, const int64_t* rows,
                         const int64_t* slots, int64_t count) {
  if (device_) throw std::logic_error("a device KV cache is written by its backend's ops");
  for (int64_t i = 0; i < count; ++i) {
    if (rows[i] < 0 || rows[i] >= batch_ || slots[i] < 0 || slots[i] >= capacity_)
      throw std::logic_error("KV cache row or slot out of range");
    for (int64_t g = 0; g < kv_heads_; ++g) {
      const int64_t slot = rows[i] * batch_stride() + g * head_stride() + slots[i] * row_stride();
      const int64_t source = i * ld + g * head_dim_;
      store_token(keys_[layer].data(), values_[layer].data(), slot, dtype_, k + source, v + source, head_dim_);
    }
  }
}

void KVCache::copy_row(int64_t row, const KVCache& from, int64_t from_row, int64_t count) {
  if (device_ || from.device_) throw std::logic_error("device KV caches are not copied row by row");
  if (from.layers_ != layers_ || from.kv_heads_ != kv_heads_ || from.head_dim_ != head_dim_ || from.dtype_ != dtype_)
    throw std::logic_error("KV cache rows copied between caches of different shapes");
  if (row < 0 || row >= batch_ || from_row < 0 || from_row >= from.batch_ || count < 0 || count > capacity_ ||
      count > from.capacity_)
    throw std::logic_error("KV cache row copy out of range");
  const size_t bytes = static_cast<size_t>(count * head_dim_ * element_size_);
  for (int64_t layer = 0; layer < layers_ && bytes; ++layer) {
    for (int64_t g = 0; g < kv_heads_; ++g) {
      const int64_t to = (row * batch_stride() + g * head_stride()) * element_size_;
      const int64_t source = (from_row * from.batch_stride() + g * from.head_stride()) * element_size_;
      std::memcpy(keys_[layer].data() + to, from.keys_[layer].data() + source, bytes);
      std::memcpy(values_[layer].data() + to, from.values_[layer].data() + source, bytes);
    }
  }
  if (count)
    std::memcpy(key_mask_.data() + row * capacity_, from.key_mask_.data() + from_row * from.capacity_,
                static_cast<size_t>(count));
}

}  // namespace qwen2audio
