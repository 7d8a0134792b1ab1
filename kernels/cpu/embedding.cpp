#include "kernels/cpu/embedding.h"

#include <cstring>

#include "runtime/errors.h"

namespace qwen2audio::kernels {

void embedding_lookup(const void* table, DType dtype, int64_t dim, int64_t ld_table, const int64_t* ids, int64_t count,
                      float* out, int64_t ldout) {
  if (dtype != DType::F32 && dtype != DType::BF16) throw InvalidArgument("embedding_lookup: table must be F32 or BF16");
#pragma omp parallel for schedule(static) if (count * dim > (1 << 16))
  for (int64_t i = 0; i < count; ++i) {
    float* destination = out + i * ldout;
    if (dtype == DType::F32) {
      std::memcpy(destination, static_cast<const float*>(table) + ids[i] * ld_table, sizeof(float) * dim);
    } else {
      const uint16_t* source = static_cast<const uint16_t*>(table) + ids[i] * ld_table;
      for (int64_t d = 0; d < dim; ++d) destination[d] = bf16_to_float(source[d]);
    }
  }
}

}  // namespace qwen2audio::kernels
