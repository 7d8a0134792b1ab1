#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/ops.h"
#include "runtime/buffer.h"
#include "runtime/dtype.h"

namespace qwen2audio {

// Keys and values of every decoder layer for a batch of sequences that advance together, one slot
// per fed token. Layout per layer: [batch, kv_heads, capacity, head_dim], so the keys one
// attention head reads are contiguous. key_mask[b, slot] == 0 marks a padding slot that no query
// may see (left padding of shorter prompts). Capacity is reserved ahead (prompt + max_new_tokens),
// so decoding never allocates; growth preserves the contents, as a chat keeps its cache.
//
// Elements are float32 or BF16 (rounded to nearest even when stored): BF16 halves the memory and
// the bytes each decode step reads (Qwen2-Audio-7B: 0.5 MB per token instead of 1 MB), and is
// what a BF16 model's projections would hold anyway.
class KVCache {
 public:
  KVCache(int64_t layers, int64_t kv_heads, int64_t head_dim, int64_t batch, DType dtype = DType::F32);
  // A cache whose keys and values live on a device (backend/ops.h's make_kv_storage): this object
  // keeps the bookkeeping (length, capacity, the host key mask the device copies) and `storage`
  // the keys and values. Null `storage`: host memory, as the constructor above.
  KVCache(int64_t layers, int64_t kv_heads, int64_t head_dim, int64_t batch, DType dtype,
          std::unique_ptr<backend::KVStorage> storage);
  KVCache(KVCache&&) noexcept;
  KVCache& operator=(KVCache&&) noexcept;
  ~KVCache();

  backend::KVStorage* storage() const { return device_.get(); }

  int64_t batch() const { return batch_; }
  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  int64_t kv_heads() const { return kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  DType dtype() const { return dtype_; }
  // Bytes held by keys and values of all layers.
  size_t bytes() const;

  void reserve(int64_t capacity);
  // Forgets every slot from `length` on.
  void truncate(int64_t length);
  void advance(int64_t steps);

  // Writes the keys and values of `steps` new tokens per batch row into slots [length(),
  // length() + steps) of `layer`: k[(b * steps + t) * ld + g * head_dim + d], v alike (float32).
  void store(int64_t layer, const float* k, const float* v, int64_t steps, int64_t ld);

  // Rows that advance on their own (a serving batch, generate/decode_batch.h): writes one token for
  // each of `count` rows, row rows[i] at slot slots[i], from k[i * ld + g * head_dim + d] (v alike).
  // length() is not used for such a cache; its owner tracks each row's length.
  void store_rows(int64_t layer, const float* k, const float* v, int64_t ld, const int64_t* rows, const int64_t* slots,
                  int64_t count);
  // Copies slots [0, count) of `from` row `from_row` (every layer, and the key mask) into row `row`;
  // both caches must have the same shape and dtype and room for `count` slots.
  void copy_row(int64_t row, const KVCache& from, int64_t from_row, int64_t count);

  // Elements of dtype(); element strides below.
  const void* keys(int64_t layer) const { return keys_[layer].data(); }
  const void* values(int64_t layer) const { return values_[layer].data(); }
  int64_t batch_stride() const { return kv_heads_ * capacity_ * head_dim_; }
  int64_t head_stride() const { return capacity_ * head_dim_; }
  int64_t row_stride() const { return head_dim_; }
  uint8_t* key_mask() { return key_mask_.data(); }
  const uint8_t* key_mask() const { return key_mask_.data(); }
  int64_t key_mask_stride() const { return capacity_; }

 private:
  int64_t layers_, kv_heads_, head_dim_, batch_;
  DType dtype_;
  int64_t element_size_;
  int64_t length_ = 0;
  int64_t capacity_ = 0;
  std::vector<Buffer<uint8_t>> keys_, values_;
  Buffer<uint8_t> key_mask_;
  std::unique_ptr<backend::KVStorage> device_;
};

}  // namespace qwen2audio
