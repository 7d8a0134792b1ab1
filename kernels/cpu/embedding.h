#pragma once

#include <cstdint>

#include "runtime/dtype.h"

namespace qwen2audio::kernels {

// out[i, :] = table[ids[i], :] as float32. table: [rows, dim] F32 or BF16 with row stride
// ld_table. ids must already be checked against the table's row count.
void embedding_lookup(const void* table, DType dtype, int64_t dim, int64_t ld_table, const int64_t* ids, int64_t count,
                      float* out, int64_t ldout);

}  // namespace qwen2audio::kernels
