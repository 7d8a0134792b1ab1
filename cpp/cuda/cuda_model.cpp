// The CUDA backend's model: Qwen2-Audio's encoder, projector and decoder on one GPU, behind the
// DeviceModel interface (model/device_model.h). Built into libqwen2audio_cuda.so, which the engine
// opens only when asked for a CUDA device.
//
// Weights are uploaded once as BF16 (F32 checkpoints converted on the way), with the projections
// that read the same input fused into one matrix (q/k/v; gate/up), so a decode step is six GEMMs
// per layer. Activations between layers stay float32 on the device; what feeds a GEMM is BF16.

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "cuda/device_buffer.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/kernels.h"
#include "model/device_model.h"

namespace qwen2audio::cuda_backend {
namespace {

namespace kc = kernels::cuda;
using bf16 = __nv_bfloat16;

constexpr float kEncoderLayerNormEps = 1e-5f;  // torch.nn.LayerNorm's default, as the reference keeps

struct DeviceLinear {
  DeviceBuffer<bf16> weight;  // [out, in]
  DeviceBuffer<float> bias;   // [out], empty when the layer has none
  int64_t out = 0, in = 0;
  const float* bias_or_null() const { return bias.size() ? bias.data() : nullptr; }
};

struct DeviceNorm {
  DeviceBuffer<float> weight, bias;
  const float* bias_or_null() const { return bias.size() ? bias.data() : nullptr; }
};

// Loads named host tensors onto the device, counting the bytes.
class Uploader {
 public:
  Uploader(const DeviceModelSpec& spec, size_t& bytes) : spec_(spec), bytes_(bytes) {}

  TensorView fetch(const std::string& name, int64_t rows, int64_t cols) const {
    TensorView tensor = spec_.tensor(name);
    int64_t leading = tensor.shape.empty() ? 1 : tensor.shape[0];
    if (tensor.numel() != rows * cols || leading != rows)
      throw std::invalid_argument("tensor '" + name + "' has " + std::to_string(tensor.numel()) +
                                  " elements, expected [" + std::to_string(rows) + ", " + std::to_string(cols) + "]");
    return tensor;
  }

  // Matrices stacked by rows into one BF16 device matrix [sum of rows, cols].
  DeviceLinear linear(const std::vector<std::string>& prefixes, const std::vector<int64_t>& rows, int64_t cols,
                      const std::vector<bool>& has_bias) {
    DeviceLinear layer;
    layer.in = cols;
    for (int64_t count : rows) layer.out += count;
    layer.weight.allocate(static_cast<size_t>(layer.out * cols), "weights");
    bool any_bias = std::find(has_bias.begin(), has_bias.end(), true) != has_bias.end();
    std::vector<float> bias(any_bias ? static_cast<size_t>(layer.out) : 0, 0.0f);
    int64_t row = 0;
    for (size_t part = 0; part < prefixes.size(); ++part) {
      const TensorView weight = fetch(prefixes[part] + ".weight", rows[part], cols);
      copy_matrix(weight, layer.weight.data() + row * cols, rows[part] * cols);
      if (has_bias[part]) {
        const std::vector<float> values = floats(prefixes[part] + ".bias", rows[part]);
        std::copy(values.begin(), values.end(), bias.begin() + row);
      }
      row += rows[part];
    }
    if (any_bias) layer.bias = upload_floats(bias);
    bytes_ += layer.weight.bytes() + layer.bias.bytes();
    return layer;
  }

  DeviceLinear linear(const std::string& prefix, int64_t rows, int64_t cols, bool has_bias) {
    return linear(std::vector<std::string>{prefix}, std::vector<int64_t>{rows}, cols, std::vector<bool>{has_bias});
  }

  DeviceNorm norm(const std::string& prefix, int64_t width, bool has_bias) {
    DeviceNorm norm;
    norm.weight = upload_floats(floats(prefix + ".weight", width));
    if (has_bias) norm.bias = upload_floats(floats(prefix + ".bias", width));
    bytes_ += norm.weight.bytes() + norm.bias.bytes();
    return norm;
  }

  DeviceBuffer<float> table(const std::string& name, int64_t rows, int64_t cols) {
    const TensorView tensor = fetch(name, rows, cols);
    DeviceBuffer<float> buffer = upload_floats(to_floats(tensor));
    bytes_ += buffer.bytes();
    return buffer;
  }

 private:
  std::vector<float> floats(const std::string& name, int64_t count) const { return to_floats(fetch(name, count, 1)); }

  static std::vector<float> to_floats(const TensorView& tensor) {
    std::vector<float> values(static_cast<size_t>(tensor.numel()));
    const auto* bytes = static_cast<const uint8_t*>(tensor.data);
    if (tensor.dtype == DType::F32) {
      std::memcpy(values.data(), bytes, values.size() * sizeof(float));
    } else if (tensor.dtype == DType::BF16) {
      for (size_t i = 0; i < values.size(); ++i) {
        uint16_t bits;
        std::memcpy(&bits, bytes + 2 * i, sizeof bits);
        values[i] = bf16_to_float(bits);
      }
    } else {
      throw std::invalid_argument("the CUDA backend reads BF16 or F32 tensors");
    }
    return values;
  }

  static DeviceBuffer<float> upload_floats(const std::vector<float>& values) {
    DeviceBuffer<float> buffer;
    buffer.allocate(values.size(), "weights");
    check(cudaMemcpy(buffer.data(), values.data(), values.size() * sizeof(float), cudaMemcpyHostToDevice),
          "copying weights to the device");
    return buffer;
  }

  // BF16 goes straight from the memory map; F32 is rounded in chunks so the host never holds a
  // second copy of a large matrix.
  static void copy_matrix(const TensorView& tensor, bf16* destination, int64_t count) {
    if (tensor.dtype == DType::BF16) {
      check(cudaMemcpy(destination, tensor.data, static_cast<size_t>(count) * sizeof(bf16), cudaMemcpyHostToDevice),
            "copying weights to the device");
      return;
    }
    if (tensor.dtype != DType::F32) throw std::invalid_argument("the CUDA backend reads BF16 or F32 matrices");
    constexpr int64_t kChunk = int64_t{1} << 22;
    std::vector<uint16_t> staging(static_cast<size_t>(std::min(count, kChunk)));
    const auto* bytes = static_cast<const uint8_t*>(tensor.data);
    for (int64_t begin = 0; begin < count; begin += kChunk) {
      const int64_t size = std::min(kChunk, count - begin);
      for (int64_t i = 0; i < size; ++i) {
        float value;
        std::memcpy(&value, bytes + 4 * (begin + i), sizeof value);
        staging[static_cast<size_t>(i)] = float_to_bf16(value);
      }
      check(cudaMemcpy(destination + begin, staging.data(), static_cast<size_t>(size) * sizeof(uint16_t),
                       cudaMemcpyHostToDevice),
            "copying weights to the device");
    }
  }

  const DeviceModelSpec& spec_;
  size_t& bytes_;
};

// Makes `device` current on the calling thread for the scope (each API call may come from any
// Python thread, and the current device is per thread).
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

// A session on the device: its KV cache, its stream, its cuBLAS handle and the activations of its
// largest call so far (decode steps after a prefill allocate nothing).
class CudaState final : public DeviceState {
 public:
  CudaState(int device, int64_t layers, int64_t kv_heads, int64_t head_dim, int64_t batch)
      : device_(device), layers_(layers), kv_heads_(kv_heads), head_dim_(head_dim), batch_(batch) {
    keys_.resize(static_cast<size_t>(layers));
    values_.resize(static_cast<size_t>(layers));
  }

  void reserve(int64_t capacity, int64_t keep_length) override {
    if (capacity <= capacity_) return;
    DeviceScope scope(device_);
    const size_t row_bytes = static_cast<size_t>(head_dim_) * sizeof(bf16);
    const size_t count = static_cast<size_t>(batch_ * kv_heads_ * capacity * head_dim_);
    for (int64_t layer = 0; layer < layers_; ++layer) {
      for (auto* store : {&keys_, &values_}) {
        DeviceBuffer<bf16> grown;
        grown.allocate(count, "the KV cache");
        if (keep_length > 0)
          check(cudaMemcpy2DAsync(grown.data(), capacity * row_bytes, (*store)[layer].data(), capacity_ * row_bytes,
                                  keep_length * row_bytes, static_cast<size_t>(batch_ * kv_heads_),
                                  cudaMemcpyDeviceToDevice, stream_.get()),
                "growing the KV cache");
        stream_.synchronize();
        (*store)[layer] = std::move(grown);
      }
    }
    key_mask_.allocate(static_cast<size_t>(batch_ * capacity), "the KV cache mask");
    capacity_ = capacity;
  }

  size_t cache_bytes() const override {
    return static_cast<size_t>(2 * layers_ * batch_ * kv_heads_ * capacity_ * head_dim_) * sizeof(bf16);
  }

  int64_t capacity() const { return capacity_; }
  bf16* keys(int64_t layer) { return keys_[layer].data(); }
  bf16* values(int64_t layer) { return values_[layer].data(); }

  const int device_;
  const int64_t layers_, kv_heads_, head_dim_, batch_;
  int64_t capacity_ = 0;
  std::vector<DeviceBuffer<bf16>> keys_, values_;
  DeviceBuffer<uint8_t> key_mask_;
  Stream stream_;
  kc::Gemm gemm_;
  // Activations, grown to the largest call.
  DeviceBuffer<float> hidden_, qkv_, gate_up_, logits_, split_;
  DeviceBuffer<bf16> normed_, attended_, activated_;
  DeviceBuffer<int64_t> positions_;
};

class CudaModel final : public DeviceModel {
 public:
  // device_ is checked first (it is declared before the streams and handles), so a machine without
  // a usable GPU is told so rather than that a stream could not be made.
  explicit CudaModel(const DeviceModelSpec& spec) : config_(spec.config), device_(usable_device(spec.device_index)) {
    DeviceScope scope(device_);
    cudaDeviceProp properties{};
    check(cudaGetDeviceProperties(&properties, device_), "reading the device's properties");
    if (properties.major < 8)
      throw std::runtime_error(std::string(properties.name) + " (compute capability " +
                               std::to_string(properties.major) + "." + std::to_string(properties.minor) +
                               ") lacks BF16 tensor cores; the CUDA backend needs 8.0 (Ampere) or newer");
    name_ = "cuda:" + std::to_string(device_) + " (" + properties.name + ")";
    check_shapes();
    Uploader upload(spec, weight_bytes_);
    load_encoder(upload);
    load_decoder(upload);
  }

  std::string description() const override { return name_; }
  size_t weight_bytes() const override { return weight_bytes_; }

  void encode(const float* features, const int64_t* mel_frames, int64_t clips, float* out,
              const Interrupt& interrupt) override {
    std::lock_guard<std::mutex> lock(encoder_mutex_);
    DeviceScope scope(device_);
    run_encoder(features, mel_frames, clips, interrupt);
    const int64_t d = config_.audio.d_model;
    const int64_t pooled = config_.audio.max_source_positions / 2;
    check(cudaMemcpyAsync(out, encoded_.data(), static_cast<size_t>(clips * pooled * d) * sizeof(float),
                          cudaMemcpyDeviceToHost, encoder_stream_.get()),
          "copying the encoder's output");
    encoder_stream_.synchronize();
  }

  void audio_embeddings(const float* features, const int64_t* mel_frames, const int64_t* counts, int64_t clips,
                        float* out, const Interrupt& interrupt) override {
    std::lock_guard<std::mutex> lock(encoder_mutex_);
    DeviceScope scope(device_);
    run_encoder(features, mel_frames, clips, interrupt);
    const int64_t d = config_.audio.d_model;
    const int64_t pooled = config_.audio.max_source_positions / 2;
    const int64_t hidden = config_.text.hidden_size;
    cudaStream_t stream = encoder_stream_.get();
    encoded_bf16_.reserve(static_cast<size_t>(clips * pooled * d), "encoder activations");
    kc::to_bf16(encoded_.data(), clips * pooled * d, encoded_bf16_.data(), stream);
    projected_.reserve(static_cast<size_t>(clips * pooled * hidden), "audio embeddings");
    encoder_gemm_(clips * pooled, hidden, d, encoded_bf16_.data(), d, projector_.weight.data(), d, projected_.data(),
                  hidden, false, projector_.bias_or_null(), stream);
    int64_t row = 0;
    for (int64_t clip = 0; clip < clips; ++clip) {
      const int64_t count = std::clamp<int64_t>(counts[clip], 0, pooled);
      if (count == 0) continue;
      check(cudaMemcpyAsync(out + row * hidden, projected_.data() + clip * pooled * hidden,
                            static_cast<size_t>(count * hidden) * sizeof(float), cudaMemcpyDeviceToHost, stream),
            "copying audio embeddings");
      row += count;
    }
    encoder_stream_.synchronize();
  }

  std::unique_ptr<DeviceState> make_state(int64_t batch, int64_t capacity) override {
    DeviceScope scope(device_);
    const TextConfig& text = config_.text;
    auto state =
        std::make_unique<CudaState>(device_, text.num_hidden_layers, text.num_key_value_heads, text.head_dim, batch);
    if (capacity > 0) state->reserve(capacity, 0);
    return state;
  }

  void decode(DeviceState& base_state, const float* embeddings, int64_t batch, int64_t steps, const int64_t* positions,
              const uint8_t* key_mask, int64_t mask_stride, int64_t start, float* logits, bool all_positions,
              const Interrupt& interrupt) override {
    auto& state = dynamic_cast<CudaState&>(base_state);
    if (batch != state.batch_ || start + steps > state.capacity() || mask_stride != state.capacity())
      throw std::logic_error("decode called with a batch or cache layout its state was not made for");
    DeviceScope scope(device_);
    const TextConfig& text = config_.text;
    const int64_t rows = batch * steps;
    const int64_t width = text.hidden_size;
    const int64_t heads = text.num_attention_heads, kv_heads = text.num_key_value_heads, head_dim = text.head_dim;
    const int64_t qkv_width = (heads + 2 * kv_heads) * head_dim;
    const int64_t inter = text.intermediate_size;
    const int64_t vocab = text.vocab_size;
    const int64_t logit_rows = all_positions ? rows : batch;
    cudaStream_t stream = state.stream_.get();
    kc::Gemm& gemm = state.gemm_;

    float* hidden = state.hidden_.reserve(static_cast<size_t>(rows * width), "activations");
    bf16* normed = state.normed_.reserve(static_cast<size_t>(rows * width), "activations");
    float* qkv = state.qkv_.reserve(static_cast<size_t>(rows * qkv_width), "activations");
    bf16* attended = state.attended_.reserve(static_cast<size_t>(rows * heads * head_dim), "activations");
    float* gate_up = state.gate_up_.reserve(static_cast<size_t>(rows * 2 * inter), "activations");
    bf16* activated = state.activated_.reserve(static_cast<size_t>(rows * inter), "activations");
    float* logits_device = state.logits_.reserve(static_cast<size_t>(logit_rows * vocab), "logits");
    int64_t* positions_device = state.positions_.reserve(static_cast<size_t>(rows), "positions");
    // Decode steps split each row's keys over many blocks, merged through this scratch.
    const int64_t split_floats = kc::attention_workspace_floats(batch, steps, heads, head_dim);
    float* split_scratch =
        split_floats ? state.split_.reserve(static_cast<size_t>(split_floats), "attention") : nullptr;

    check(cudaMemcpyAsync(hidden, embeddings, static_cast<size_t>(rows * width) * sizeof(float), cudaMemcpyHostToDevice,
                          stream),
          "copying embeddings to the device");
    check(cudaMemcpyAsync(positions_device, positions, static_cast<size_t>(rows) * sizeof(int64_t),
                          cudaMemcpyHostToDevice, stream),
          "copying positions to the device");
    check(cudaMemcpyAsync(state.key_mask_.data(), key_mask, static_cast<size_t>(batch * mask_stride),
                          cudaMemcpyHostToDevice, stream),
          "copying the key mask to the device");

    const float eps = static_cast<float>(text.rms_norm_eps);
    const float theta = static_cast<float>(text.rope_theta);
    kc::AttentionArgs attention;
    attention.batch = batch;
    attention.q_len = steps;
    attention.kv_len = start + steps;
    attention.num_heads = heads;
    attention.num_kv_heads = kv_heads;
    attention.head_dim = head_dim;
    attention.q = qkv;
    attention.q_batch_stride = steps * qkv_width;
    attention.q_row_stride = qkv_width;
    attention.kv_batch_stride = kv_heads * state.capacity() * head_dim;
    attention.kv_head_stride = state.capacity() * head_dim;
    attention.kv_row_stride = head_dim;
    attention.out = attended;
    attention.out_batch_stride = steps * heads * head_dim;
    attention.out_row_stride = heads * head_dim;
    attention.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    attention.causal = true;
    attention.key_mask = state.key_mask_.data();
    attention.key_mask_stride = mask_stride;
    attention.workspace = split_scratch;
    attention.workspace_floats = split_floats;

    for (int64_t index = 0; index < text.num_hidden_layers; ++index) {
      const DecoderLayer& layer = decoder_layers_[index];
      kc::rms_norm(hidden, width, rows, width, layer.input_norm.weight.data(), eps, normed, width, stream);
      gemm(rows, qkv_width, width, normed, width, layer.qkv.weight.data(), width, qkv, qkv_width, false,
           layer.qkv.bias_or_null(), stream);
      kc::rope(qkv, qkv_width, rows, heads + kv_heads, head_dim, positions_device, theta, stream);
      kc::store_kv(qkv + heads * head_dim, qkv + (heads + kv_heads) * head_dim, qkv_width, batch, steps, kv_heads,
                   head_dim, state.keys(index), state.values(index), attention.kv_batch_stride,
                   attention.kv_head_stride, start, stream);
      attention.k = state.keys(index);
      attention.v = state.values(index);
      kc::attention(attention, stream);
      gemm(rows, width, heads * head_dim, attended, heads * head_dim, layer.o_proj.weight.data(), heads * head_dim,
           hidden, width, true, nullptr, stream);
      kc::rms_norm(hidden, width, rows, width, layer.post_norm.weight.data(), eps, normed, width, stream);
      gemm(rows, 2 * inter, width, normed, width, layer.gate_up.weight.data(), width, gate_up, 2 * inter, false,
           nullptr, stream);
      kc::silu_mul(gate_up, 2 * inter, rows, inter, activated, inter, stream);
      gemm(rows, width, inter, activated, inter, layer.down.weight.data(), inter, hidden, width, true, nullptr, stream);
      check_interrupt(interrupt);
    }
    // The final norm and the head on the rows whose logits are wanted: every position, or each
    // row's last step (row b * steps + steps - 1: stride steps * width from the last one).
    const float* head_input = all_positions ? hidden : hidden + (steps - 1) * width;
    const int64_t head_stride = all_positions ? width : steps * width;
    kc::rms_norm(head_input, head_stride, logit_rows, width, final_norm_.weight.data(), eps, normed, width, stream);
    gemm(logit_rows, vocab, width, normed, width, lm_head_.weight.data(), width, logits_device, vocab, false, nullptr,
         stream);
    check(cudaMemcpyAsync(logits, logits_device, static_cast<size_t>(logit_rows * vocab) * sizeof(float),
                          cudaMemcpyDeviceToHost, stream),
          "copying logits to the host");
    state.stream_.synchronize();
  }

 private:
  struct EncoderLayer {
    DeviceNorm attention_norm, ffn_norm;
    DeviceLinear qkv, out_proj, fc1, fc2;
  };
  struct DecoderLayer {
    DeviceNorm input_norm, post_norm;
    DeviceLinear qkv, o_proj, gate_up, down;
  };

  void check_shapes() const {
    const AudioEncoderConfig& audio = config_.audio;
    const TextConfig& text = config_.text;
    auto supported = [](int64_t head_dim) { return head_dim > 0 && head_dim % 8 == 0 && head_dim <= 256; };
    if (!supported(audio.head_dim()) || audio.d_model != audio.head_dim() * audio.encoder_attention_heads)
      throw std::invalid_argument(
          "the CUDA backend needs the encoder's head size to be a multiple of 8 up to 256, got " +
          std::to_string(audio.head_dim()));
    if (!supported(text.head_dim))
      throw std::invalid_argument(
          "the CUDA backend needs the decoder's head_dim to be a multiple of 8 up to 256, got " +
          std::to_string(text.head_dim));
    if (text.num_key_value_heads < 1 || text.num_attention_heads % text.num_key_value_heads != 0)
      throw std::invalid_argument("num_attention_heads must be a multiple of num_key_value_heads");
  }

  void load_encoder(Uploader& upload) {
    const AudioEncoderConfig& audio = config_.audio;
    const int64_t d = audio.d_model;
    conv1_ = upload.linear("audio_tower.conv1", d, audio.num_mel_bins * 3, true);
    conv2_ = upload.linear("audio_tower.conv2", d, d * 3, true);
    positions_ = upload.table("audio_tower.embed_positions.weight", audio.max_source_positions, d);
    for (int64_t index = 0; index < audio.encoder_layers; ++index) {
      const std::string prefix = "audio_tower.layers." + std::to_string(index) + ".";
      EncoderLayer layer;
      layer.attention_norm = upload.norm(prefix + "self_attn_layer_norm", d, true);
      // Whisper's key projection has no bias: its slice of the fused bias is zero.
      layer.qkv = upload.linear({prefix + "self_attn.q_proj", prefix + "self_attn.k_proj", prefix + "self_attn.v_proj"},
                                {d, d, d}, d, {true, false, true});
      layer.out_proj = upload.linear(prefix + "self_attn.out_proj", d, d, true);
      layer.ffn_norm = upload.norm(prefix + "final_layer_norm", d, true);
      layer.fc1 = upload.linear(prefix + "fc1", audio.encoder_ffn_dim, d, true);
      layer.fc2 = upload.linear(prefix + "fc2", d, audio.encoder_ffn_dim, true);
      encoder_layers_.push_back(std::move(layer));
    }
    encoder_norm_ = upload.norm("audio_tower.layer_norm", d, true);
    projector_ = upload.linear("multi_modal_projector.linear", config_.text.hidden_size, d, true);
  }

  void load_decoder(Uploader& upload) {
    const TextConfig& text = config_.text;
    const int64_t width = text.hidden_size, head_dim = text.head_dim;
    const int64_t q_rows = text.num_attention_heads * head_dim, kv_rows = text.num_key_value_heads * head_dim;
    for (int64_t index = 0; index < text.num_hidden_layers; ++index) {
      const std::string prefix = "language_model.model.layers." + std::to_string(index) + ".";
      DecoderLayer layer;
      layer.input_norm = upload.norm(prefix + "input_layernorm", width, false);
      layer.qkv = upload.linear({prefix + "self_attn.q_proj", prefix + "self_attn.k_proj", prefix + "self_attn.v_proj"},
                                {q_rows, kv_rows, kv_rows}, width, {true, true, true});
      layer.o_proj = upload.linear(prefix + "self_attn.o_proj", width, q_rows, false);
      layer.post_norm = upload.norm(prefix + "post_attention_layernorm", width, false);
      layer.gate_up = upload.linear({prefix + "mlp.gate_proj", prefix + "mlp.up_proj"},
                                    {text.intermediate_size, text.intermediate_size}, width, {false, false});
      layer.down = upload.linear(prefix + "mlp.down_proj", width, text.intermediate_size, false);
      decoder_layers_.push_back(std::move(layer));
    }
    final_norm_ = upload.norm("language_model.model.norm", width, false);
    // Tied heads read the embedding table; embeddings themselves are looked up on the host.
    lm_head_ = upload.linear(text.tie_word_embeddings ? "language_model.model.embed_tokens" : "language_model.lm_head",
                             text.vocab_size, width, false);
  }

  // Runs the encoder over `clips` clips into encoded_ [clips, pooled, d] (after the final norm).
  void run_encoder(const float* features, const int64_t* mel_frames, int64_t clips, const Interrupt& interrupt) {
    const AudioEncoderConfig& audio = config_.audio;
    const int64_t d = audio.d_model, mel = audio.num_mel_bins, ffn = audio.encoder_ffn_dim;
    const int64_t frames = 2 * audio.max_source_positions, positions = audio.max_source_positions;
    const int64_t rows = clips * positions, pooled = positions / 2;
    const int64_t heads = audio.encoder_attention_heads, head_dim = audio.head_dim();
    cudaStream_t stream = encoder_stream_.get();
    kc::Gemm& gemm = encoder_gemm_;

    float* mel_device = mel_.reserve(static_cast<size_t>(mel * frames), "mel features");
    bf16* columns = columns_.reserve(static_cast<size_t>(frames * std::max(mel, d) * 3), "encoder activations");
    float* conv = conv_.reserve(static_cast<size_t>(frames * d), "encoder activations");
    float* conv_activated = conv_activated_.reserve(static_cast<size_t>(frames * d), "encoder activations");
    float* hidden = encoder_hidden_.reserve(static_cast<size_t>(rows * d), "encoder activations");
    for (int64_t clip = 0; clip < clips; ++clip) {
      check(cudaMemcpyAsync(mel_device, features + clip * mel * frames,
                            static_cast<size_t>(mel * frames) * sizeof(float), cudaMemcpyHostToDevice, stream),
            "copying features to the device");
      kc::im2col_k3(mel_device, mel, frames, frames, 1, 1, columns, stream);
      gemm(frames, d, mel * 3, columns, mel * 3, conv1_.weight.data(), mel * 3, conv, d, false, nullptr, stream);
      kc::bias_gelu(conv, d, frames, d, conv1_.bias_or_null(), nullptr, conv_activated, d, stream);
      kc::im2col_k3(conv_activated, d, frames, 1, d, 2, columns, stream);
      gemm(positions, d, d * 3, columns, d * 3, conv2_.weight.data(), d * 3, conv, d, false, nullptr, stream);
      kc::bias_gelu(conv, d, positions, d, conv2_.bias_or_null(), positions_.data(), hidden + clip * positions * d, d,
                    stream);
    }
    check_interrupt(interrupt);

    std::vector<uint8_t> key_mask(static_cast<size_t>(rows), 0);
    for (int64_t clip = 0; clip < clips; ++clip) {
      // Keys past a clip's audio (its attended frames after the stride-2 convolution) are hidden.
      const int64_t attended = std::clamp<int64_t>((mel_frames[clip] - 1) / 2 + 1, 0, positions);
      std::fill_n(key_mask.begin() + clip * positions, attended, 1);
    }
    uint8_t* mask_device = encoder_mask_.reserve(key_mask.size(), "encoder mask");
    check(cudaMemcpyAsync(mask_device, key_mask.data(), key_mask.size(), cudaMemcpyHostToDevice, stream),
          "copying the encoder mask");

    bf16* normed = encoder_normed_.reserve(static_cast<size_t>(rows * std::max(d, ffn)), "encoder activations");
    float* qkv = encoder_qkv_.reserve(static_cast<size_t>(rows * std::max(3 * d, ffn)), "encoder activations");
    bf16* keys = encoder_keys_.reserve(static_cast<size_t>(rows * d), "encoder activations");
    bf16* values = encoder_values_.reserve(static_cast<size_t>(rows * d), "encoder activations");
    bf16* attended = encoder_attended_.reserve(static_cast<size_t>(rows * d), "encoder activations");

    kc::AttentionArgs attention;
    attention.batch = clips;
    attention.q_len = attention.kv_len = positions;
    attention.num_heads = attention.num_kv_heads = heads;
    attention.head_dim = head_dim;
    attention.q = qkv;
    attention.q_batch_stride = positions * 3 * d;
    attention.q_row_stride = 3 * d;
    attention.k = keys;
    attention.v = values;
    attention.kv_batch_stride = heads * positions * head_dim;
    attention.kv_head_stride = positions * head_dim;
    attention.kv_row_stride = head_dim;
    attention.out = attended;
    attention.out_batch_stride = positions * d;
    attention.out_row_stride = d;
    attention.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    attention.key_mask = mask_device;
    attention.key_mask_stride = positions;

    for (const EncoderLayer& layer : encoder_layers_) {
      kc::layer_norm(hidden, d, rows, d, layer.attention_norm.weight.data(), layer.attention_norm.bias_or_null(),
                     kEncoderLayerNormEps, normed, d, stream);
      gemm(rows, 3 * d, d, normed, d, layer.qkv.weight.data(), d, qkv, 3 * d, false, layer.qkv.bias_or_null(), stream);
      kc::store_kv(qkv + d, qkv + 2 * d, 3 * d, clips, positions, heads, head_dim, keys, values,
                   attention.kv_batch_stride, attention.kv_head_stride, 0, stream);
      kc::attention(attention, stream);
      gemm(rows, d, d, attended, d, layer.out_proj.weight.data(), d, hidden, d, true, layer.out_proj.bias_or_null(),
           stream);
      kc::layer_norm(hidden, d, rows, d, layer.ffn_norm.weight.data(), layer.ffn_norm.bias_or_null(),
                     kEncoderLayerNormEps, normed, d, stream);
      // fc1's output reuses the q/k/v buffer, its GELU'd BF16 copy the normed buffer.
      gemm(rows, ffn, d, normed, d, layer.fc1.weight.data(), d, qkv, ffn, false, nullptr, stream);
      kc::bias_gelu(qkv, ffn, rows, ffn, layer.fc1.bias_or_null(), normed, ffn, stream);
      gemm(rows, d, ffn, normed, ffn, layer.fc2.weight.data(), ffn, hidden, d, true, layer.fc2.bias_or_null(), stream);
      check_interrupt(interrupt);
    }
    float* pooled_out = encoded_.reserve(static_cast<size_t>(clips * pooled * d), "encoder output");
    float* pooled_in = pooled_.reserve(static_cast<size_t>(clips * pooled * d), "encoder output");
    for (int64_t clip = 0; clip < clips; ++clip)
      kc::avg_pool_pairs(hidden + clip * positions * d, positions, d, pooled_in + clip * pooled * d, stream);
    kc::layer_norm(pooled_in, d, clips * pooled, d, encoder_norm_.weight.data(), encoder_norm_.bias_or_null(),
                   kEncoderLayerNormEps, pooled_out, d, stream);
  }

  Qwen2AudioConfig config_;
  int device_;
  std::string name_;
  size_t weight_bytes_ = 0;

  DeviceLinear conv1_, conv2_, projector_;
  DeviceBuffer<float> positions_;
  std::vector<EncoderLayer> encoder_layers_;
  DeviceNorm encoder_norm_;
  std::vector<DecoderLayer> decoder_layers_;
  DeviceNorm final_norm_;
  DeviceLinear lm_head_;

  // The encoder's stream, handle and activations, shared by all callers under the mutex.
  std::mutex encoder_mutex_;
  Stream encoder_stream_;
  kc::Gemm encoder_gemm_;
  DeviceBuffer<float> mel_, conv_, conv_activated_, encoder_hidden_, encoder_qkv_, encoded_, pooled_, projected_;
  DeviceBuffer<bf16> columns_, encoder_normed_, encoder_keys_, encoder_values_, encoder_attended_, encoded_bf16_;
  DeviceBuffer<uint8_t> encoder_mask_;
};

}  // namespace
}  // namespace qwen2audio::cuda_backend

extern "C" __attribute__((visibility("default"))) qwen2audio::DeviceModel* qwen2audio_create_cuda_model(
    const qwen2audio::DeviceModelSpec& spec) {
  return new qwen2audio::cuda_backend::CudaModel(spec);
}
