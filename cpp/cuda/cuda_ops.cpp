// The op-level backend (backend/ops.h) on one CUDA GPU, over kernels/cuda: the graphs of model/
// run here unchanged. Built into libqwen2audio_cuda.so, which the engine opens only when asked for
// a CUDA device.
//
// Weights are uploaded once as BF16 (F32 checkpoints rounded on the way), stacked layers (q/k/v,
// gate/up) as one matrix, so a decoder layer is four GEMMs. Activations that accumulate stay
// float32 on the device; what only feeds a product, a norm or attention is BF16 (Role::Operand).
// Each Workspace is a CUDA stream with its own cuBLAS handle and scratch, so sessions run
// concurrently and a decode step after a prefill allocates nothing.

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/kv_cache.h"
#include "backend/ops.h"
#include "cuda/device_buffer.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/kernels.h"

namespace qwen2audio::cuda_backend {
namespace {

namespace kc = kernels::cuda;
using backend::Mat;
using backend::Role;
using backend::Workspace;
using bf16 = __nv_bfloat16;

// Makes `device` current on the calling thread for the scope (each op may come from any Python
// thread, and the current device is per thread).
class DeviceScope {
 public:
  explicit DeviceScope(int device) { check(cudaSetDevice(device), "selecting the CUDA device"); }
};

class Stream {
 public:
  Stream() { check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "creating a CUDA stream"); }
  ~Stream() {
    if (stream_) cudaStreamDestroy(stream_);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }
  void synchronize() const { check(cudaStreamSynchronize(stream_), "running on the GPU"); }

 private:
  cudaStream_t stream_ = nullptr;
};

class DeviceMemory final : public backend::Memory {
 public:
  DeviceMemory(int device, size_t bytes) : device_(device), bytes_(bytes) {
    DeviceScope scope(device);
    buffer_.allocate(std::max<size_t>(bytes, 1), "activations");
  }
  // The buffer is freed after this body, with its device current.
  ~DeviceMemory() override { cudaSetDevice(device_); }
  void* data() override { return buffer_.data(); }
  size_t bytes() const override { return bytes_; }

 private:
  int device_;
  size_t bytes_;
  DeviceBuffer<uint8_t> buffer_;
};

class DeviceLinear final : public backend::LinearWeights {
 public:
  DeviceBuffer<bf16> weight;  // [out_features, in_features]
  DeviceBuffer<float> bias;   // [out_features], empty when no part has one
  const float* bias_or_null() const { return bias.size() ? bias.data() : nullptr; }
};

class DeviceConstant final : public backend::Constant {
 public:
  DeviceBuffer<float> values;
  int64_t rows = 0, cols = 0;
  Mat view() const override { return {values.data(), DType::F32, rows, cols, cols}; }
};

// A KVCache's keys and values, BF16, per layer [batch, kv_heads, capacity, head_dim], and the
// device copy of its key mask.
class DeviceKV final : public backend::KVStorage {
 public:
  DeviceKV(int device, int64_t layers, int64_t kv_heads, int64_t head_dim, int64_t batch)
      : device_(device), kv_heads_(kv_heads), head_dim_(head_dim), batch_(batch) {
    keys_.resize(static_cast<size_t>(layers));
    values_.resize(static_cast<size_t>(layers));
  }
  ~DeviceKV() override { cudaSetDevice(device_); }

  void reserve(int64_t capacity, int64_t keep_length) override {
    if (capacity <= capacity_) return;
    DeviceScope scope(device_);
    const size_t row_bytes = static_cast<size_t>(head_dim_) * sizeof(bf16);
    const size_t count = static_cast<size_t>(batch_ * kv_heads_ * capacity * head_dim_);
    for (auto* store : {&keys_, &values_}) {
      for (DeviceBuffer<bf16>& layer : *store) {
        DeviceBuffer<bf16> grown;
        grown.allocate(count, "the KV cache");
        if (keep_length > 0)
          check(
              cudaMemcpy2D(grown.data(), capacity * row_bytes, layer.data(), capacity_ * row_bytes,
                           keep_length * row_bytes, static_cast<size_t>(batch_ * kv_heads_), cudaMemcpyDeviceToDevice),
              "growing the KV cache");
        layer = std::move(grown);
      }
    }
    mask_.allocate(static_cast<size_t>(batch_ * capacity), "the KV cache mask");
    capacity_ = capacity;
  }

  size_t bytes() const override {
    return static_cast<size_t>(2 * static_cast<int64_t>(keys_.size()) * batch_ * kv_heads_ * capacity_ * head_dim_) *
           sizeof(bf16);
  }

  int64_t capacity() const { return capacity_; }
  bf16* keys(int64_t layer) { return keys_[static_cast<size_t>(layer)].data(); }
  bf16* values(int64_t layer) { return values_[static_cast<size_t>(layer)].data(); }
  uint8_t* mask() { return mask_.data(); }

 private:
  const int device_;
  const int64_t kv_heads_, head_dim_, batch_;
  int64_t capacity_ = 0;
  std::vector<DeviceBuffer<bf16>> keys_, values_;
  DeviceBuffer<uint8_t> mask_;
};

// One workspace's stream, cuBLAS handle and the scratch its ops reuse.
class StreamState final : public backend::OpState {
 public:
  explicit StreamState(int device) : device_(device) {}
  ~StreamState() override { cudaSetDevice(device_); }

  const int device_;
  Stream stream;
  kc::Gemm gemm;
  DeviceBuffer<float> product;  // a product before its activation or narrowing
  DeviceBuffer<bf16> narrowed;  // a float32 input narrowed for a product
  DeviceBuffer<int64_t> positions;
  DeviceBuffer<bf16> keys, values;  // one packed sequence's, in attention's layout
  DeviceBuffer<uint8_t> mask;
  DeviceBuffer<float> split;  // decode attention's split-key scratch
  std::vector<uint8_t> host_mask;
};

size_t element_size(DType dtype) { return dtype == DType::F32 ? sizeof(float) : sizeof(bf16); }

void require(bool condition, const char* op, const char* message) {
  if (!condition) throw std::logic_error(std::string("CudaOps::") + op + ": " + message);
}

bf16* as_bf16(const Mat& m) { return static_cast<bf16*>(m.data); }

class CudaOps final : public backend::Ops {
 public:
  // device_ is checked first (declared first), so a machine without a usable GPU is told so.
  explicit CudaOps(int device_index) : device_(usable_device(device_index)) {
    DeviceScope scope(device_);
    cudaDeviceProp properties{};
    check(cudaGetDeviceProperties(&properties, device_), "reading the device's properties");
    if (properties.major < 8)
      throw std::runtime_error(std::string(properties.name) + " (compute capability " +
                               std::to_string(properties.major) + "." + std::to_string(properties.minor) +
                               ") lacks BF16 tensor cores; the CUDA backend needs 8.0 (Ampere) or newer");
    name_ = "cuda:" + std::to_string(device_) + " (" + properties.name + ")";
  }

  std::string description() const override { return name_; }
  size_t weight_bytes() const override { return weight_bytes_; }

  std::unique_ptr<backend::Memory> allocate(size_t bytes) override {
    return std::make_unique<DeviceMemory>(device_, bytes);
  }
  DType dtype_for(Role role) const override { return role == Role::State ? DType::F32 : DType::BF16; }

  std::unique_ptr<backend::LinearWeights> load_linear(const std::vector<kernels::Linear>& parts) override {
    DeviceScope scope(device_);
    auto layer = std::make_unique<DeviceLinear>();
    const int64_t in = parts.at(0).in_features;
    bool any_bias = false;
    for (const kernels::Linear& part : parts) {
      if (part.in_features != in) throw std::logic_error("stacked linear layers must read the same input width");
      if (part.weight.format != kernels::WeightFormat::BF16 && part.weight.format != kernels::WeightFormat::F32)
        throw std::invalid_argument("the CUDA backend runs bfloat16 weights; quantized layers are CPU-only");
      layer->out_features += part.out_features;
      any_bias |= part.bias != nullptr;
    }
    layer->in_features = in;
    layer->weight.allocate(static_cast<size_t>(layer->out_features * in), "weights");
    std::vector<float> bias(any_bias ? static_cast<size_t>(layer->out_features) : 0, 0.0f);
    int64_t row = 0;
    for (const kernels::Linear& part : parts) {
      upload_rows(part.weight, part.out_features, in, layer->weight.data() + row * in);
      if (part.bias != nullptr) std::copy_n(part.bias, part.out_features, bias.begin() + row);
      row += part.out_features;
    }
    if (any_bias) layer->bias = upload(bias.data(), bias.size());
    weight_bytes_ += layer->weight.bytes() + layer->bias.bytes();
    return layer;
  }

  std::unique_ptr<backend::Constant> load_constant(const float* host, int64_t rows, int64_t cols) override {
    DeviceScope scope(device_);
    auto constant = std::make_unique<DeviceConstant>();
    constant->values = upload(host, static_cast<size_t>(rows * cols));
    constant->rows = rows;
    constant->cols = cols;
    weight_bytes_ += constant->values.bytes();
    return constant;
  }

  std::unique_ptr<backend::KVStorage> make_kv_storage(int64_t layers, int64_t kv_heads, int64_t head_dim, int64_t batch,
                                                      DType dtype) override {
    if (dtype != DType::BF16) throw std::invalid_argument("the CUDA backend keeps its KV cache in bfloat16");
    return std::make_unique<DeviceKV>(device_, layers, kv_heads, head_dim, batch);
  }

  Mat stage_in(Workspace& ws, const float* host, int64_t rows, int64_t cols, int slot) override {
    StreamState& state = stream_state(ws);
    const Mat staged = ws.matrix(*this, slot, rows, cols, Role::State);
    check(cudaMemcpyAsync(staged.data, host, static_cast<size_t>(rows * cols) * sizeof(float), cudaMemcpyHostToDevice,
                          state.stream.get()),
          "copying inputs to the device");
    return staged;
  }

  Mat stage_out(Workspace& ws, float*, int64_t rows, int64_t cols, int slot) override {
    DeviceScope scope(device_);
    return ws.matrix(*this, slot, rows, cols, Role::State);
  }

  void finish_out(Workspace& ws, const Mat& staged, float* host) override {
    StreamState& state = stream_state(ws);
    require(staged.dtype == DType::F32, "finish_out", "outputs are float32");
    check(cudaMemcpy2DAsync(host, staged.cols * sizeof(float), staged.data, staged.ld * sizeof(float),
                            staged.cols * sizeof(float), static_cast<size_t>(staged.rows), cudaMemcpyDeviceToHost,
                            state.stream.get()),
          "copying outputs to the host");
    state.stream.synchronize();
  }

  void linear(Workspace& ws, const backend::LinearWeights& weights, const Mat& x, const Mat& y, bool accumulate,
              kernels::Activation activation) override {
    StreamState& state = stream_state(ws);
    const auto& layer = static_cast<const DeviceLinear&>(weights);
    const int64_t m = x.rows, n = layer.out_features, k = layer.in_features;
    require(x.cols == k && y.cols == n && y.rows == m, "linear", "shapes do not match the layer");
    cudaStream_t stream = state.stream.get();
    const bf16* input = as_bf16(x);
    int64_t ld_input = x.ld;
    if (x.dtype == DType::F32) {
      bf16* narrowed = state.narrowed.reserve(static_cast<size_t>(m * k), "activations");
      kc::to_bf16(x.f32(), x.ld, m, k, narrowed, k, stream);
      input = narrowed;
      ld_input = k;
    }
    if (y.dtype == DType::F32 && activation == kernels::Activation::None) {
      state.gemm(m, n, k, input, ld_input, layer.weight.data(), k, y.f32(), y.ld, accumulate, layer.bias_or_null(),
                 stream);
      return;
    }
    require(!accumulate, "linear", "an activation or a BF16 output applies to a fresh product");
    float* product = state.product.reserve(static_cast<size_t>(m * n), "activations");
    state.gemm(m, n, k, input, ld_input, layer.weight.data(), k, product, n, false, nullptr, stream);
    if (activation == kernels::Activation::GeluErf) {
      if (y.dtype == DType::BF16)
        kc::bias_gelu(product, n, m, n, layer.bias_or_null(), as_bf16(y), y.ld, stream);
      else
        kc::bias_gelu(product, n, m, n, layer.bias_or_null(), nullptr, y.f32(), y.ld, stream);
      return;
    }
    if (layer.bias_or_null() != nullptr) kc::add_bias(product, n, m, n, layer.bias_or_null(), stream);
    kc::to_bf16(product, n, m, n, as_bf16(y), y.ld, stream);
  }

  void rms_norm(Workspace& ws, const Mat& x, const backend::Constant& weight, float eps, const Mat& out) override {
    cudaStream_t stream = stream_state(ws).stream.get();
    require(x.dtype == DType::F32, "rms_norm", "the input is float32");
    const float* w = weight.view().f32();
    if (out.dtype == DType::BF16)
      kc::rms_norm(x.f32(), x.ld, x.rows, x.cols, w, eps, as_bf16(out), out.ld, stream);
    else
      kc::rms_norm(x.f32(), x.ld, x.rows, x.cols, w, eps, out.f32(), out.ld, stream);
  }

  void layer_norm(Workspace& ws, const Mat& x, const backend::Constant& weight, const backend::Constant& bias,
                  float eps, const Mat& out) override {
    cudaStream_t stream = stream_state(ws).stream.get();
    require(x.dtype == DType::F32, "layer_norm", "the input is float32");
    const float* w = weight.view().f32();
    const float* b = bias.view().f32();
    if (out.dtype == DType::BF16)
      kc::layer_norm(x.f32(), x.ld, x.rows, x.cols, w, b, eps, as_bf16(out), out.ld, stream);
    else
      kc::layer_norm(x.f32(), x.ld, x.rows, x.cols, w, b, eps, out.f32(), out.ld, stream);
  }

  void silu_mul(Workspace& ws, const Mat& gate, const Mat& up, const Mat& out) override {
    cudaStream_t stream = stream_state(ws).stream.get();
    require(gate.dtype == DType::F32 && up.dtype == DType::F32, "silu_mul", "gate and up are float32");
    if (out.dtype == DType::BF16)
      kc::silu_mul(gate.f32(), gate.ld, up.f32(), up.ld, out.rows, out.cols, as_bf16(out), out.ld, stream);
    else
      kc::silu_mul(gate.f32(), gate.ld, up.f32(), up.ld, out.rows, out.cols, out.f32(), out.ld, stream);
  }

  void add(Workspace& ws, const Mat& y, const Mat& x) override {
    require(x.dtype == DType::F32 && y.dtype == DType::F32, "add", "float32 only");
    kc::add_rows(y.f32(), y.ld, x.f32(), x.ld, y.rows, y.cols, stream_state(ws).stream.get());
  }

  void copy(Workspace& ws, const Mat& src, const Mat& dst) override {
    cudaStream_t stream = stream_state(ws).stream.get();
    require(src.dtype == dst.dtype, "copy", "source and destination differ in dtype");
    const size_t size = element_size(dst.dtype);
    const auto* from = static_cast<const char*>(src.data);
    auto* to = static_cast<char*>(dst.data);
    if (dst.rows == 0 || from == to) return;
    const size_t span_src = static_cast<size_t>(src.ld * (src.rows - 1) + src.cols) * size;
    const size_t span_dst = static_cast<size_t>(dst.ld * (dst.rows - 1) + dst.cols) * size;
    const bool overlap = to < from + span_src && from < to + span_dst;
    if (!overlap) {
      check(cudaMemcpy2DAsync(to, dst.ld * size, from, src.ld * size, dst.cols * size, static_cast<size_t>(dst.rows),
                              cudaMemcpyDeviceToDevice, stream),
            "copying on the device");
      return;
    }
    // Rows moved towards the start of one buffer (dst before src): row by row in order, each row's
    // own bytes disjoint as long as the rows move by at least one row.
    require(to < from, "copy", "overlapping copies must move rows towards the start");
    for (int64_t r = 0; r < dst.rows; ++r)
      check(cudaMemcpyAsync(to + r * dst.ld * size, from + r * src.ld * size, dst.cols * size, cudaMemcpyDeviceToDevice,
                            stream),
            "copying on the device");
  }

  void zero(Workspace& ws, const Mat& dst) override {
    if (dst.rows == 0) return;
    const size_t size = element_size(dst.dtype);
    check(cudaMemset2DAsync(dst.data, dst.ld * size, 0, dst.cols * size, static_cast<size_t>(dst.rows),
                            stream_state(ws).stream.get()),
          "clearing device memory");
  }

  backend::RopeAngles rope_angles(Workspace& ws, const int64_t* positions, int64_t rows,
                                  const backend::Constant& inverse_frequencies, int cos_slot, int sin_slot) override {
    StreamState& state = stream_state(ws);
    const Mat frequencies = inverse_frequencies.view();
    const int64_t half = frequencies.cols;
    backend::RopeAngles angles{ws.matrix(*this, cos_slot, rows, half, Role::State),
                               ws.matrix(*this, sin_slot, rows, half, Role::State)};
    int64_t* device_positions = state.positions.reserve(static_cast<size_t>(rows), "positions");
    check(cudaMemcpyAsync(device_positions, positions, static_cast<size_t>(rows) * sizeof(int64_t),
                          cudaMemcpyHostToDevice, state.stream.get()),
          "copying positions to the device");
    kc::rope_tables(device_positions, rows, frequencies.f32(), half, angles.cos.f32(), angles.sin.f32(),
                    state.stream.get());
    return angles;
  }

  void rope(Workspace& ws, const Mat& x, int64_t heads, int64_t head_dim, const backend::RopeAngles& angles) override {
    require(x.dtype == DType::F32, "rope", "rotates float32 rows");
    kc::apply_rope(x.f32(), x.ld, x.rows, heads, head_dim, angles.cos.f32(), angles.sin.f32(),
                   stream_state(ws).stream.get());
  }

  void conv3_columns(Workspace& ws, const Mat& input, int64_t channels, int64_t frames, int64_t channel_stride,
                     int64_t frame_stride, int64_t stride, const Mat& cols) override {
    require(input.dtype == DType::F32 && cols.dtype == DType::BF16, "conv3_columns",
            "reads float32 and writes the product's BF16 columns");
    require(cols.ld == channels * 3 && cols.rows == (frames - 1) / stride + 1, "conv3_columns",
            "the columns matrix does not fit the convolution");
    kc::im2col_k3(input.f32(), channels, frames, channel_stride, frame_stride, stride, as_bf16(cols),
                  stream_state(ws).stream.get());
  }

  void avg_pool_pairs(Workspace& ws, const Mat& x, const Mat& out) override {
    require(x.ld == x.cols && out.ld == out.cols && x.dtype == DType::F32, "avg_pool_pairs",
            "pools contiguous float32 rows");
    kc::avg_pool_pairs(x.f32(), 2 * out.rows, x.cols, out.f32(), stream_state(ws).stream.get());
  }

  void packed_attention(Workspace& ws, const backend::PackedAttention& args) override {
    StreamState& state = stream_state(ws);
    cudaStream_t stream = state.stream.get();
    require(args.q.dtype == DType::F32 && args.k.dtype == DType::F32 && args.out.dtype == DType::BF16,
            "packed_attention", "reads float32 q/k/v and writes BF16");
    require(args.k.ld == args.v.ld, "packed_attention", "keys and values share a row stride");
    const int64_t heads = args.heads, head_dim = args.head_dim;
    for (int64_t i = 0; i < args.sequences; ++i) {
      const int64_t length = args.length[i], first = args.first[i];
      if (length == 0) continue;
      // Keys and values into attention's BF16 [head, position, d] layout, as a KV cache holds them.
      const size_t count = static_cast<size_t>(heads * length * head_dim);
      bf16* keys = state.keys.reserve(count, "encoder activations");
      bf16* values = state.values.reserve(count, "encoder activations");
      kc::store_kv(args.k.f32() + first * args.k.ld, args.v.f32() + first * args.v.ld, args.k.ld, 1, length, heads,
                   head_dim, keys, values, heads * length * head_dim, length * head_dim, 0, stream);
      const uint8_t* key_mask = nullptr;
      if (args.visible[i] < length) {
        state.host_mask.assign(static_cast<size_t>(length), 0);
        std::fill_n(state.host_mask.begin(), std::max<int64_t>(args.visible[i], 0), 1);
        uint8_t* mask = state.mask.reserve(static_cast<size_t>(length), "encoder mask");
        check(
            cudaMemcpyAsync(mask, state.host_mask.data(), static_cast<size_t>(length), cudaMemcpyHostToDevice, stream),
            "copying the encoder mask");
        key_mask = mask;
      }
      kc::AttentionArgs attention;
      attention.batch = 1;
      attention.q_len = attention.kv_len = length;
      attention.num_heads = attention.num_kv_heads = heads;
      attention.head_dim = head_dim;
      attention.q = args.q.f32() + first * args.q.ld;
      attention.q_batch_stride = length * args.q.ld;
      attention.q_row_stride = args.q.ld;
      attention.k = keys;
      attention.v = values;
      attention.kv_batch_stride = heads * length * head_dim;
      attention.kv_head_stride = length * head_dim;
      attention.kv_row_stride = head_dim;
      attention.out = as_bf16(args.out) + first * args.out.ld;
      attention.out_batch_stride = length * args.out.ld;
      attention.out_row_stride = args.out.ld;
      attention.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
      attention.key_mask = key_mask;
      attention.key_mask_stride = length;
      kc::attention(attention, stream);
    }
  }

  void cached_attention(Workspace& ws, KVCache& cache, int64_t layer, const Mat& q, const Mat& k, const Mat& v,
                        int64_t heads, const backend::CacheWrite& write, const Mat& out) override {
    if (write.ragged())
      throw std::invalid_argument(
          "batched serving (rows of their own lengths) runs on the CPU model; load it with "
          "device='cpu'");
    auto* storage = dynamic_cast<DeviceKV*>(cache.storage());
    require(storage != nullptr, "cached_attention", "the KV cache was not made by this backend");
    require(q.dtype == DType::F32 && k.dtype == DType::F32 && out.dtype == DType::BF16 && k.ld == v.ld,
            "cached_attention", "reads float32 q/k/v with one stride for k and v and writes BF16");
    StreamState& state = stream_state(ws);
    cudaStream_t stream = state.stream.get();
    const int64_t batch = cache.batch(), steps = write.steps, start = cache.length();
    const int64_t kv_heads = cache.kv_heads(), head_dim = cache.head_dim(), capacity = storage->capacity();
    require(start + steps <= capacity && cache.key_mask_stride() == capacity, "cached_attention",
            "the KV cache was not reserved for this call");
    // The host mask is set before a call and read by every layer: copied once, at the first.
    if (layer == 0)
      check(cudaMemcpyAsync(storage->mask(), cache.key_mask(), static_cast<size_t>(batch * capacity),
                            cudaMemcpyHostToDevice, stream),
            "copying the key mask to the device");
    const int64_t batch_stride = kv_heads * capacity * head_dim, head_stride = capacity * head_dim;
    kc::store_kv(k.f32(), v.f32(), k.ld, batch, steps, kv_heads, head_dim, storage->keys(layer), storage->values(layer),
                 batch_stride, head_stride, start, stream);
    const int64_t split_floats = kc::attention_workspace_floats(batch, steps, heads, head_dim);

    kc::AttentionArgs attention;
    attention.batch = batch;
    attention.q_len = steps;
    attention.kv_len = start + steps;
    attention.num_heads = heads;
    attention.num_kv_heads = kv_heads;
    attention.head_dim = head_dim;
    attention.q = q.f32();
    attention.q_batch_stride = steps * q.ld;
    attention.q_row_stride = q.ld;
    attention.k = storage->keys(layer);
    attention.v = storage->values(layer);
    attention.kv_batch_stride = batch_stride;
    attention.kv_head_stride = head_stride;
    attention.kv_row_stride = head_dim;
    attention.out = as_bf16(out);
    attention.out_batch_stride = steps * out.ld;
    attention.out_row_stride = out.ld;
    attention.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    attention.causal = true;
    attention.key_mask = storage->mask();
    attention.key_mask_stride = capacity;
    attention.workspace = split_floats ? state.split.reserve(static_cast<size_t>(split_floats), "attention") : nullptr;
    attention.workspace_floats = split_floats;
    kc::attention(attention, stream);
  }

 private:
  // The workspace's stream state, made on its first op; makes the device current for the op.
  StreamState& stream_state(Workspace& ws) {
    check(cudaSetDevice(device_), "selecting the CUDA device");
    std::unique_ptr<backend::OpState>& state = ws.op_state();
    if (!state) state = std::make_unique<StreamState>(device_);
    auto* stream_state = dynamic_cast<StreamState*>(state.get());
    if (stream_state == nullptr || stream_state->device_ != device_)
      throw std::logic_error("a workspace used by another backend");
    return *stream_state;
  }

  static DeviceBuffer<float> upload(const float* host, size_t count) {
    DeviceBuffer<float> buffer;
    buffer.allocate(count, "weights");
    if (count)
      check(cudaMemcpy(buffer.data(), host, count * sizeof(float), cudaMemcpyHostToDevice),
            "copying weights to the device");
    return buffer;
  }

  // rows x cols of a host matrix (BF16 or F32, row stride weight.ld) into BF16 device rows; F32 is
  // rounded in chunks so the host never holds a second copy of a large matrix.
  static void upload_rows(const kernels::WeightMatrix& weight, int64_t rows, int64_t cols, bf16* destination) {
    if (weight.format == kernels::WeightFormat::BF16) {
      check(cudaMemcpy2D(destination, cols * sizeof(bf16), weight.data, weight.ld * sizeof(bf16), cols * sizeof(bf16),
                         static_cast<size_t>(rows), cudaMemcpyHostToDevice),
            "copying weights to the device");
      return;
    }
    constexpr int64_t kChunkElements = int64_t{1} << 22;
    const int64_t chunk_rows = std::max<int64_t>(1, kChunkElements / std::max<int64_t>(cols, 1));
    std::vector<uint16_t> staging(static_cast<size_t>(std::min(rows, chunk_rows) * cols));
    const auto* values = static_cast<const float*>(weight.data);
    for (int64_t begin = 0; begin < rows; begin += chunk_rows) {
      const int64_t count = std::min(chunk_rows, rows - begin);
      for (int64_t r = 0; r < count; ++r)
        for (int64_t c = 0; c < cols; ++c)
          staging[static_cast<size_t>(r * cols + c)] = float_to_bf16(values[(begin + r) * weight.ld + c]);
      check(cudaMemcpy(destination + begin * cols, staging.data(), static_cast<size_t>(count * cols) * sizeof(uint16_t),
                       cudaMemcpyHostToDevice),
            "copying weights to the device");
    }
  }

  int device_;
  std::string name_;
  size_t weight_bytes_ = 0;
};

}  // namespace
}  // namespace qwen2audio::cuda_backend

extern "C" __attribute__((visibility("default"))) qwen2audio::backend::Ops* qwen2audio_create_cuda_ops(
    int device_index) {
  return new qwen2audio::cuda_backend::CudaOps(device_index);
}
