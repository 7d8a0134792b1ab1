#include "backend/cpu_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "backend/kv_cache.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/conv1d.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/pool.h"
#include "kernels/cpu/rope.h"
#include "runtime/buffer.h"

namespace qwen2audio::backend {
namespace {

class HostMemory final : public Memory {
 public:
  explicit HostMemory(size_t bytes) : bytes_(bytes) { buffer_.reserve(std::max<size_t>(bytes, 1)); }
  void* data() override { return buffer_.data(); }
  size_t bytes() const override { return bytes_; }

 private:
  Buffer<uint8_t> buffer_;
  size_t bytes_;
};

class HostLinear final : public LinearWeights {
 public:
  std::vector<kernels::Linear> parts;
};

class HostConstant final : public Constant {
 public:
  HostConstant(const float* data, int64_t rows, int64_t cols) : data_(data), rows_(rows), cols_(cols) {}
  Mat view() const override { return {const_cast<float*>(data_), DType::F32, rows_, cols_, cols_}; }
  const float* data() const { return data_; }

 private:
  const float* data_;
  int64_t rows_, cols_;
};

// What attention keeps between the calls of one workspace.
class AttentionState final : public OpState {
 public:
  kernels::AttentionScratch scratch;
  std::vector<int64_t> kv_lens;
  std::vector<uint8_t> key_mask;
};

AttentionState& attention_state(Workspace& workspace) {
  std::unique_ptr<OpState>& state = workspace.op_state();
  if (!state) state = std::make_unique<AttentionState>();
  return static_cast<AttentionState&>(*state);
}

const float* host(const Constant& constant) { return static_cast<const HostConstant&>(constant).data(); }

void check_f32(const Mat& m, const char* op) {
  if (m.dtype != DType::F32) throw std::logic_error(std::string("CpuOps::") + op + " takes float32 matrices");
}

// Rows of x and y side by side: one call when both are contiguous, else one per row.
template <typename RowOp>
void by_rows(const Mat& a, const Mat& b, const Mat& out, RowOp op) {
  if (a.ld == a.cols && b.ld == b.cols && out.ld == out.cols) {
    op(a.f32(), b.f32(), out.f32(), out.rows * out.cols);
    return;
  }
#pragma omp parallel for schedule(static) if (out.rows > 1 && out.rows * out.cols > (1 << 15))
  for (int64_t r = 0; r < out.rows; ++r) op(a.f32() + r * a.ld, b.f32() + r * b.ld, out.f32() + r * out.ld, out.cols);
}

}  // namespace

CpuOps::CpuOps(kernels::GemmOptions options) : gemm_(options) {}

std::unique_ptr<Memory> CpuOps::allocate(size_t bytes) { return std::make_unique<HostMemory>(bytes); }

std::unique_ptr<LinearWeights> CpuOps::load_linear(const std::vector<kernels::Linear>& parts) {
  if (parts.empty()) throw std::logic_error("a linear layer needs at least one part");
  auto weights = std::make_unique<HostLinear>();
  weights->parts = parts;
  weights->in_features = parts.front().in_features;
  for (const kernels::Linear& part : parts) {
    if (part.in_features != weights->in_features)
      throw std::logic_error("stacked linear layers must read the same input width");
    weights->out_features += part.out_features;
  }
  return weights;
}

std::unique_ptr<Constant> CpuOps::load_constant(const float* host_data, int64_t rows, int64_t cols) {
  return std::make_unique<HostConstant>(host_data, rows, cols);
}

Mat CpuOps::stage_in(Workspace&, const float* host_data, int64_t rows, int64_t cols, int) {
  return {const_cast<float*>(host_data), DType::F32, rows, cols, cols};
}

Mat CpuOps::stage_out(Workspace&, float* host_data, int64_t rows, int64_t cols, int) {
  return {host_data, DType::F32, rows, cols, cols};
}

void CpuOps::finish_out(Workspace& ws, const Mat& staged, float* host_data) {
  if (staged.data != host_data) copy(ws, staged, {host_data, DType::F32, staged.rows, staged.cols, staged.cols});
}

// Each part writes its own columns of y, so a stacked layer costs exactly what its parts would.
void CpuOps::linear(Workspace&, const LinearWeights& weights, const Mat& x, const Mat& y, bool accumulate,
                    kernels::Activation activation) {
  check_f32(x, "linear");
  check_f32(y, "linear");
  int64_t column = 0;
  for (const kernels::Linear& part : static_cast<const HostLinear&>(weights).parts) {
    kernels::linear(gemm_, part, x.f32(), x.rows, x.ld, y.f32() + column, y.ld, accumulate, activation);
    column += part.out_features;
  }
}

void CpuOps::rms_norm(Workspace&, const Mat& x, const Constant& weight, float eps, const Mat& out) {
  kernels::rms_norm(x.f32(), x.rows, x.cols, x.ld, host(weight), eps, out.f32(), out.ld);
}

void CpuOps::layer_norm(Workspace&, const Mat& x, const Constant& weight, const Constant& bias, float eps,
                        const Mat& out) {
  kernels::layer_norm(x.f32(), x.rows, x.cols, x.ld, host(weight), host(bias), eps, out.f32(), out.ld);
}

void CpuOps::silu_mul(Workspace&, const Mat& gate, const Mat& up, const Mat& out) {
  by_rows(gate, up, out,
          [](const float* g, const float* u, float* o, int64_t count) { kernels::silu_mul(g, u, o, count); });
}

void CpuOps::add(Workspace&, const Mat& y, const Mat& x) {
  kernels::add_rows(y.f32(), y.ld, x.f32(), x.ld, y.rows, y.cols);
}

void CpuOps::copy(Workspace&, const Mat& src, const Mat& dst) {
  const size_t bytes = static_cast<size_t>(dst.cols) * sizeof(float);
  if (src.ld == src.cols && dst.ld == dst.cols) {
    std::memmove(dst.data, src.data, bytes * static_cast<size_t>(dst.rows));
    return;
  }
  for (int64_t r = 0; r < dst.rows; ++r) std::memmove(dst.f32() + r * dst.ld, src.f32() + r * src.ld, bytes);
}

void CpuOps::zero(Workspace&, const Mat& dst) {
  for (int64_t r = 0; r < dst.rows; ++r) std::fill_n(dst.f32() + r * dst.ld, dst.cols, 0.0f);
}

RopeAngles CpuOps::rope_angles(Workspace& workspace, const int64_t* positions, int64_t rows,
                               const Constant& inverse_frequencies, int cos_slot, int sin_slot) {
  const int64_t half = inverse_frequencies.view().cols;
  RopeAngles angles{workspace.matrix(*this, cos_slot, rows, half, Role::State),
                    workspace.matrix(*this, sin_slot, rows, half, Role::State)};
  kernels::rope_tables(positions, rows, 2 * half, host(inverse_frequencies), angles.cos.f32(), angles.sin.f32());
  return angles;
}

void CpuOps::rope(Workspace&, const Mat& x, int64_t heads, int64_t head_dim, const RopeAngles& angles) {
  kernels::apply_rope(x.f32(), x.rows, heads, head_dim, x.ld, angles.cos.f32(), angles.sin.f32());
}

void CpuOps::conv3_columns(Workspace&, const Mat& input, int64_t channels, int64_t frames, int64_t channel_stride,
                           int64_t frame_stride, int64_t stride, const Mat& cols) {
  if (cols.ld != channels * 3 || cols.rows != kernels::conv1d_output_length(frames, 3, stride, 1))
    throw std::logic_error("conv3_columns: the columns matrix does not fit the convolution");
  kernels::im2col_1d(input.f32(), channels, frames, channel_stride, frame_stride, 3, stride, 1, cols.f32());
}

void CpuOps::avg_pool_pairs(Workspace&, const Mat& x, const Mat& out) {
  kernels::avg_pool_rows(x.f32(), 2 * out.rows, x.cols, x.ld, 2, 2, out.f32(), out.ld);
}

void CpuOps::packed_attention(Workspace& workspace, const PackedAttention& args) {
  AttentionState& state = attention_state(workspace);
  // Only sequences computed past their visible keys need a mask.
  bool masked = false;
  int64_t rows = 0;
  for (int64_t i = 0; i < args.sequences; ++i) {
    masked |= args.visible[i] < args.length[i];
    rows = std::max(rows, args.first[i] + args.length[i]);
  }
  if (masked) {
    state.key_mask.assign(static_cast<size_t>(rows), 0);
    for (int64_t i = 0; i < args.sequences; ++i)
      std::fill_n(state.key_mask.begin() + args.first[i], std::min(args.visible[i], args.length[i]), 1);
  }
  for (int64_t i = 0; i < args.sequences; ++i) {
    const int64_t length = args.length[i];
    if (length == 0) continue;
    kernels::AttentionArgs attention;
    attention.batch = 1;
    attention.q_len = attention.kv_len = length;
    attention.num_heads = attention.num_kv_heads = args.heads;
    attention.head_dim = args.head_dim;
    attention.q = args.q.f32() + args.first[i] * args.q.ld;
    attention.q_batch_stride = length * args.q.ld;
    attention.q_row_stride = args.q.ld;
    attention.k = args.k.f32() + args.first[i] * args.k.ld;
    attention.v = args.v.f32() + args.first[i] * args.v.ld;
    attention.kv_batch_stride = length * args.k.ld;
    attention.kv_head_stride = args.head_dim;
    attention.kv_row_stride = args.k.ld;
    if (args.v.ld != args.k.ld) throw std::logic_error("packed attention reads keys and values with one stride");
    attention.out = args.out.f32() + args.first[i] * args.out.ld;
    attention.out_batch_stride = length * args.out.ld;
    attention.out_row_stride = args.out.ld;
    attention.scale = 1.0f / std::sqrt(static_cast<float>(args.head_dim));
    if (masked) {
      attention.key_mask = state.key_mask.data() + args.first[i];
      attention.key_mask_stride = length;
    }
    kernels::attention(attention, state.scratch);
  }
}

void CpuOps::cached_attention(Workspace& workspace, KVCache& cache, int64_t layer, const Mat& q, const Mat& k,
                              const Mat& v, int64_t heads, const CacheWrite& write, const Mat& out) {
  AttentionState& state = attention_state(workspace);
  if (k.ld != v.ld) throw std::logic_error("cached attention stores keys and values with one stride");
  const int64_t head_dim = cache.head_dim();
  const int64_t steps = write.ragged() ? 1 : write.steps;
  const int64_t batch = write.ragged() ? write.count : cache.batch();
  int64_t kv_len = cache.length() + steps;
  if (write.ragged()) {
    cache.store_rows(layer, k.f32(), v.f32(), k.ld, write.rows, write.lengths, write.count);
    state.kv_lens.resize(static_cast<size_t>(write.count));
    for (int64_t i = 0; i < write.count; ++i) state.kv_lens[i] = write.lengths[i] + 1;
    kv_len = *std::max_element(state.kv_lens.begin(), state.kv_lens.end());
  } else {
    cache.store(layer, k.f32(), v.f32(), steps, k.ld);
  }

  kernels::AttentionArgs attention;
  attention.batch = batch;
  attention.q_len = steps;
  attention.kv_len = kv_len;
  attention.num_heads = heads;
  attention.num_kv_heads = cache.kv_heads();
  attention.head_dim = head_dim;
  attention.q = q.f32();
  attention.q_batch_stride = steps * q.ld;
  attention.q_row_stride = q.ld;
  attention.k = cache.keys(layer);
  attention.v = cache.values(layer);
  attention.kv_dtype = cache.dtype();
  attention.kv_batch_stride = cache.batch_stride();
  attention.kv_head_stride = cache.head_stride();
  attention.kv_row_stride = cache.row_stride();
  attention.out = out.f32();
  attention.out_batch_stride = steps * out.ld;
  attention.out_row_stride = out.ld;
  attention.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  attention.causal = true;
  attention.key_mask = cache.key_mask();
  attention.key_mask_stride = cache.key_mask_stride();
  if (write.ragged()) {
    attention.kv_rows = write.rows;
    attention.kv_lens = state.kv_lens.data();
  }
  kernels::attention(attention, state.scratch);
}

}  // namespace qwen2audio::backend
