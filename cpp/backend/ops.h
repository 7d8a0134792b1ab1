#pragma once

// The op-level backend: what a model graph (model/) asks of the hardware it runs on. Each model
// family writes its graph once against `Ops`; the CPU (backend/cpu_ops.*, over kernels/cpu) and an
// accelerator library each implement it. Header-only, virtual calls and plain data, so a backend
// built as its own shared library (dlopen'd only when a device is asked for) links nothing of the
// engine. Ops know nothing of Qwen2-Audio: matrices, shapes, strides.
//
// Activations are matrices in the backend's memory (`Mat`). The graph states what a matrix is for
// (`Role`); the backend picks its element type: the CPU keeps everything float32, a GPU may keep
// what only feeds a product in BF16. Ops accept the element types their backend chose.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/linear.h"
#include "runtime/dtype.h"

namespace qwen2audio {
class KVCache;
}

namespace qwen2audio::backend {

// rows x cols elements of `dtype`, row stride `ld` (elements), in a backend's memory.
struct Mat {
  void* data = nullptr;
  DType dtype = DType::F32;
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t ld = 0;

  int64_t element_size() const { return dtype == DType::F32 ? 4 : 2; }
  Mat columns(int64_t first, int64_t count) const {
    return {static_cast<char*>(data) + first * element_size(), dtype, rows, count, ld};
  }
  Mat row_range(int64_t first, int64_t count) const {
    return {static_cast<char*>(data) + first * ld * element_size(), dtype, count, cols, ld};
  }
  // Every `stride`-th row from `first` (each sequence's last step of a batch laid out row by step).
  Mat row_stride(int64_t first, int64_t count, int64_t stride) const {
    return {static_cast<char*>(data) + first * ld * element_size(), dtype, count, cols, ld * stride};
  }
  float* f32() const { return static_cast<float*>(data); }
};

// What an activation is for: `State` accumulates across layers (the residual stream, outputs the
// host reads), `Operand` only feeds products, norms and attention.
enum class Role { State, Operand };

// Storage a backend allocated; freed with the object.
class Memory {
 public:
  virtual ~Memory() = default;
  virtual void* data() = 0;
  virtual size_t bytes() const = 0;
};

// Backend-private working state kept between calls of one Workspace (attention scratch and the like).
class OpState {
 public:
  virtual ~OpState() = default;
};

// Keys and values of a KVCache kept in a device's memory (the CPU keeps them in the KVCache itself).
// Sized for `capacity` slots per row; growth keeps the first `keep_length` slots.
class KVStorage {
 public:
  virtual ~KVStorage() = default;
  virtual void reserve(int64_t capacity, int64_t keep_length) = 0;
  virtual size_t bytes() const = 0;
};

class Ops;

// One stream of calls (a session, an encoder pass) and its scratch: numbered slots that only grow,
// so decode steps after a prefill allocate nothing, and the backend's state for the stream (a GPU
// stream and its handles, attention scratch). Every op runs in a workspace; ops of one workspace
// run in order, ops of different workspaces may run concurrently. One thread at a time uses it.
class Workspace {
 public:
  Mat matrix(Ops& ops, int slot, int64_t rows, int64_t cols, Role role);
  std::unique_ptr<OpState>& op_state() { return op_state_; }

 private:
  std::vector<std::unique_ptr<Memory>> slots_;
  std::unique_ptr<OpState> op_state_;
};

// nn.Linear weights as the backend keeps them: one or more layers stacked by output features
// (q/k/v, gate/up) so that a backend may run them as one product; output columns follow the parts.
class LinearWeights {
 public:
  virtual ~LinearWeights() = default;
  int64_t in_features = 0;
  int64_t out_features = 0;
};

// A float32 table the graph reads (norm weights and biases, positional embeddings, RoPE frequencies).
class Constant {
 public:
  virtual ~Constant() = default;
  virtual Mat view() const = 0;
};

// Rotary angles of a call's rows, made once per forward and applied to queries and keys.
struct RopeAngles {
  Mat cos, sin;  // [rows, head_dim / 2]
};

// Attention within packed sequences (the audio encoder: clips one after another, bidirectional).
// Sequence i is rows [first[i], first[i] + length[i]) of q, k, v and out; its queries see its first
// visible[i] keys.
struct PackedAttention {
  Mat q, k, v, out;
  int64_t heads = 0;
  int64_t head_dim = 0;
  const int64_t* first = nullptr;  // host arrays of `sequences` entries
  const int64_t* length = nullptr;
  const int64_t* visible = nullptr;
  int64_t sequences = 0;
};

// Where a decoder call's new keys and values go. Uniform: `steps` tokens for every cache row at
// slots [cache.length(), + steps). Ragged (a serving batch): one token for each of `count` rows,
// row rows[i] at slot lengths[i], seeing lengths[i] + 1 keys.
struct CacheWrite {
  int64_t steps = 1;
  const int64_t* rows = nullptr;  // host; null: uniform
  const int64_t* lengths = nullptr;
  int64_t count = 0;
  bool ragged() const { return rows != nullptr; }
};

class Ops {
 public:
  virtual ~Ops() = default;

  // "cpu", or the device and its name ("cuda:0 (NVIDIA H100 80GB HBM3)").
  virtual std::string description() const = 0;
  // Device memory the loaded weights take (0 where weights are used in place in host memory).
  virtual size_t weight_bytes() const = 0;

  // ---- memory and weights -------------------------------------------------------------------------
  virtual std::unique_ptr<Memory> allocate(size_t bytes) = 0;
  virtual DType dtype_for(Role role) const = 0;
  // The parts stacked by output features; all have the same in_features. Host weights in any
  // format the backend takes (it says which it refuses).
  virtual std::unique_ptr<LinearWeights> load_linear(const std::vector<kernels::Linear>& parts) = 0;
  // A rows x cols float32 table; the host copy outlives the model (the WeightStore keeps it).
  virtual std::unique_ptr<Constant> load_constant(const float* host, int64_t rows, int64_t cols) = 0;
  // Storage for a KVCache of these dimensions, or null where the KVCache keeps it in host memory.
  virtual std::unique_ptr<KVStorage> make_kv_storage(int64_t layers, int64_t kv_heads, int64_t head_dim, int64_t batch,
                                                     DType dtype) = 0;
  // Host float32 rows the graph reads (`in`) or fills (`out`), seen as a matrix in the backend's
  // memory: the CPU works on the host memory itself; a device copies through slot `slot`.
  virtual Mat stage_in(Workspace& workspace, const float* host, int64_t rows, int64_t cols, int slot) = 0;
  virtual Mat stage_out(Workspace& workspace, float* host, int64_t rows, int64_t cols, int slot) = 0;
  // Completes a stage_out once the workspace's work is done: the host rows hold `staged` afterwards.
  virtual void finish_out(Workspace& workspace, const Mat& staged, float* host) = 0;

  // ---- ops (each in a workspace) ------------------------------------------------------------------
  // y = x W^T + b over every part (y += with `accumulate`), then `activation`.
  virtual void linear(Workspace& ws, const LinearWeights& weights, const Mat& x, const Mat& y, bool accumulate = false,
                      kernels::Activation activation = kernels::Activation::None) = 0;
  // out = x / sqrt(mean(x^2) + eps) * weight per row; out may be x.
  virtual void rms_norm(Workspace& ws, const Mat& x, const Constant& weight, float eps, const Mat& out) = 0;
  // out = (x - mean) / sqrt(var + eps) * weight + bias per row (biased variance); out may be x.
  virtual void layer_norm(Workspace& ws, const Mat& x, const Constant& weight, const Constant& bias, float eps,
                          const Mat& out) = 0;
  // out = silu(gate) * up.
  virtual void silu_mul(Workspace& ws, const Mat& gate, const Mat& up, const Mat& out) = 0;
  // y += x.
  virtual void add(Workspace& ws, const Mat& y, const Mat& x) = 0;
  // dst = src (rows may overlap when dst starts at or before src); zero() fills with zeros.
  virtual void copy(Workspace& ws, const Mat& src, const Mat& dst) = 0;
  virtual void zero(Workspace& ws, const Mat& dst) = 0;

  // angle[r, i] = float(positions[r]) * inverse_frequencies[i] in float32; positions: host [rows].
  virtual RopeAngles rope_angles(Workspace& ws, const int64_t* positions, int64_t rows,
                                 const Constant& inverse_frequencies, int cos_slot, int sin_slot) = 0;
  // Rotate-half RoPE in place on `heads` heads of head_dim columns each, row r by angles row r.
  virtual void rope(Workspace& ws, const Mat& x, int64_t heads, int64_t head_dim, const RopeAngles& angles) = 0;

  // The receptive fields of Conv1d(kernel 3, padding 1, `stride`) as rows, so the convolution is one
  // product with its weight [out, in * 3]: cols[t, c * 3 + j] = x(c, t * stride + j - 1), zero
  // outside [0, frames); x(c, s) = input.data[c * channel_stride + s * frame_stride] (float32).
  // cols.rows = (frames - 1) / stride + 1.
  virtual void conv3_columns(Workspace& ws, const Mat& input, int64_t channels, int64_t frames, int64_t channel_stride,
                             int64_t frame_stride, int64_t stride, const Mat& cols) = 0;
  // out[r] = (x[2r] + x[2r + 1]) / 2 for r < out.rows.
  virtual void avg_pool_pairs(Workspace& ws, const Mat& x, const Mat& out) = 0;

  // Bidirectional attention within each packed sequence; keys past a sequence's visible ones hidden.
  virtual void packed_attention(Workspace& ws, const PackedAttention& args) = 0;
  // The decoder's causal attention over a KV cache: stores k and v of layer `layer` where `write`
  // says, then attends q (heads of head_dim columns, GQA over the cache's kv_heads) over every
  // visible slot into out. The cache's key mask must be set for the new slots; layers run in order
  // from 0 within a call (a device reads the mask at layer 0).
  virtual void cached_attention(Workspace& ws, KVCache& cache, int64_t layer, const Mat& q, const Mat& k, const Mat& v,
                                int64_t heads, const CacheWrite& write, const Mat& out) = 0;
};

// The CUDA backend library's entry point: ops on CUDA device `device_index`, allocated by the
// library (the caller owns them); throws std::runtime_error / std::invalid_argument naming the problem.
#define QWEN2AUDIO_CUDA_OPS_ENTRY_POINT "qwen2audio_create_cuda_ops"
using CreateOpsFunction = Ops* (*)(int device_index);

inline Mat Workspace::matrix(Ops& ops, int slot, int64_t rows, int64_t cols, Role role) {
  const DType dtype = ops.dtype_for(role);
  const size_t bytes = static_cast<size_t>(rows * cols) * (dtype == DType::F32 ? 4 : 2);
  if (slots_.size() <= static_cast<size_t>(slot)) slots_.resize(static_cast<size_t>(slot) + 1);
  std::unique_ptr<Memory>& memory = slots_[static_cast<size_t>(slot)];
  if (!memory || memory->bytes() < bytes) memory = ops.allocate(bytes);
  return {memory->data(), dtype, rows, cols, cols};
}

}  // namespace qwen2audio::backend
