#include "model/text_decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "kernels/cpu/embedding.h"
#include "kernels/cpu/rope.h"

namespace qwen2audio {
namespace {

using backend::Mat;
using backend::Role;

// The decoder's scratch matrices in a Workspace.
enum Slot : int { kHidden, kNormed, kQkv, kAttended, kGateUp, kActivated, kCos, kSin, kLogits };

}  // namespace

std::vector<float> rope_inverse_frequencies(const TextConfig& config) {
  std::vector<float> inverse(static_cast<size_t>(config.head_dim / 2));
  kernels::rope_inverse_frequencies(config.head_dim, config.rope_theta, inverse.data());
  const RopeScaling& scaling = config.rope_scaling;
  if (!scaling.enabled()) return inverse;
  // transformers' _compute_llama3_parameters, in float32 as it computes: long wavelengths are
  // slowed by `factor`, short ones kept, the band between blended linearly in 1/wavelength.
  constexpr double kTwoPi = 6.283185307179586;
  const auto factor = static_cast<float>(scaling.factor);
  const auto low = static_cast<float>(scaling.low_freq_factor);
  const auto high = static_cast<float>(scaling.high_freq_factor);
  const auto original = static_cast<float>(scaling.original_max_position_embeddings);
  const float low_freq_wavelen = original / low;
  const float high_freq_wavelen = original / high;
  for (float& value : inverse) {
    const float wavelen = static_cast<float>(kTwoPi) / value;
    const float scaled = wavelen > low_freq_wavelen ? value / factor : value;
    const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
    if (medium) {
      const float smooth = (original / wavelen - low) / (high - low);
      value = (1.0f - smooth) * scaled / factor + smooth * scaled;
    } else {
      value = scaled;
    }
  }
  return inverse;
}

TextDecoder::TextDecoder(const TextConfig& config, WeightStore& weights, backend::Ops& ops, DType kv_cache_dtype)
    : config_(config),
      ops_(ops),
      kv_cache_dtype_(kv_cache_dtype),
      inverse_frequencies_(rope_inverse_frequencies(config)) {
  const int64_t width = config.hidden_size;
  auto norm = [&](const std::string& prefix) {
    return ops.load_constant(weights.norm(prefix, false, width).weight, 1, width);
  };
  const int64_t q_width = config.num_attention_heads * config.head_dim;
  const int64_t kv_width = config.num_key_value_heads * config.head_dim;
  const int64_t inter = config.intermediate_size;
  const bool bias = config.attention_bias;
  embed_tokens_ = weights.matrix("language_model.model.embed_tokens.weight", {config.vocab_size, width});
  for (int64_t index = 0; index < config.num_hidden_layers; ++index) {
    const std::string prefix = "language_model.model.layers." + std::to_string(index) + ".";
    Layer layer;
    // Every projection of a layer may be weight-only quantized (the decoder's quantization).
    const auto projection = [&](const std::string& name, bool has_bias, int64_t out, int64_t in) {
      return weights.linear(prefix + name, has_bias, {out, in}, QuantizationRole::DecoderProjection);
    };
    layer.input_layernorm = norm(prefix + "input_layernorm");
    layer.post_attention_layernorm = norm(prefix + "post_attention_layernorm");
    layer.qkv_proj = ops.load_linear({projection("self_attn.q_proj", bias, q_width, width),
                                      projection("self_attn.k_proj", bias, kv_width, width),
                                      projection("self_attn.v_proj", bias, kv_width, width)});
    layer.o_proj = ops.load_linear({projection("self_attn.o_proj", false, width, q_width)});
    layer.gate_up_proj = ops.load_linear(
        {projection("mlp.gate_proj", false, inter, width), projection("mlp.up_proj", false, inter, width)});
    layer.down_proj = ops.load_linear({projection("mlp.down_proj", false, width, inter)});
    layers_.push_back(std::move(layer));
  }
  norm_ = norm("language_model.model.norm");
  lm_head_ = ops.load_linear({config.tie_word_embeddings
                                  ? weights.linear_of(embed_tokens_)
                                  : weights.linear("language_model.lm_head", false, {config.vocab_size, width},
                                                   QuantizationRole::OutputHead)});
  rope_frequencies_ =
      ops.load_constant(inverse_frequencies_.data(), 1, static_cast<int64_t>(inverse_frequencies_.size()));
}

KVCache TextDecoder::make_cache(int64_t batch) const {
  return KVCache(config_.num_hidden_layers, config_.num_key_value_heads, config_.head_dim, batch, kv_cache_dtype_,
                 ops_.make_kv_storage(config_.num_hidden_layers, config_.num_key_value_heads, config_.head_dim, batch,
                                      kv_cache_dtype_));
}

void TextDecoder::embed(const int64_t* ids, int64_t count, float* out) const {
  kernels::embedding_lookup(embed_tokens_.data, embed_tokens_.dtype, embed_tokens_.cols, embed_tokens_.cols, ids, count,
                            out, embed_tokens_.cols);
}

void TextDecoder::decode(float* hidden, int64_t steps, const int64_t* positions, KVCache& cache, Workspace& workspace,
                         float* logits, const Interrupt& interrupt, bool all_positions) const {
  if (cache.length() + steps > cache.capacity())
    throw std::logic_error("KV cache capacity not reserved before the decoder");
  const int64_t batch = cache.batch();
  if (batch * steps == 0) return;
  const Mat states = ops_.stage_in(workspace, hidden, batch * steps, config_.hidden_size, kHidden);
  backend::CacheWrite write;
  write.steps = steps;
  run_layers(states, write, positions, cache, workspace, interrupt);
  cache.advance(steps);
  head(all_positions ? states : states.row_stride(steps - 1, batch, steps), logits, workspace);
}

void TextDecoder::decode(float* hidden, const RaggedRows& ragged, const int64_t* positions, KVCache& cache,
                         Workspace& workspace, float* logits, const Interrupt& interrupt) const {
  if (ragged.count == 0) return;
  for (int64_t i = 0; i < ragged.count; ++i)
    if (ragged.rows[i] < 0 || ragged.rows[i] >= cache.batch() || ragged.lengths[i] < 0 ||
        ragged.lengths[i] >= cache.capacity())
      throw std::logic_error("ragged decode row outside the KV cache");
  const Mat states = ops_.stage_in(workspace, hidden, ragged.count, config_.hidden_size, kHidden);
  backend::CacheWrite write;
  write.rows = ragged.rows;
  write.lengths = ragged.lengths;
  write.count = ragged.count;
  run_layers(states, write, positions, cache, workspace, interrupt);
  head(states, logits, workspace);
}

void TextDecoder::run_layers(const Mat& hidden, const backend::CacheWrite& write, const int64_t* positions,
                             KVCache& cache, Workspace& workspace, const Interrupt& interrupt) const {
  const int64_t rows = hidden.rows;
  const int64_t width = config_.hidden_size;
  const int64_t heads = config_.num_attention_heads;
  const int64_t kv_heads = config_.num_key_value_heads;
  const int64_t head_dim = config_.head_dim;
  const int64_t q_width = heads * head_dim;
  const int64_t kv_width = kv_heads * head_dim;
  const int64_t inter = config_.intermediate_size;
  const float eps = static_cast<float>(config_.rms_norm_eps);

  const Mat normed = workspace.matrix(ops_, kNormed, rows, width, Role::Operand);
  // Queries and keys are rotated in place, so q/k/v stay in the state precision.
  const Mat qkv = workspace.matrix(ops_, kQkv, rows, q_width + 2 * kv_width, Role::State);
  const Mat q = qkv.columns(0, q_width), k = qkv.columns(q_width, kv_width),
            v = qkv.columns(q_width + kv_width, kv_width);
  const Mat attended = workspace.matrix(ops_, kAttended, rows, q_width, Role::Operand);
  const Mat gate_up = workspace.matrix(ops_, kGateUp, rows, 2 * inter, Role::State);
  const Mat gate = gate_up.columns(0, inter), up = gate_up.columns(inter, inter);
  // Where operands are kept as the state is, the product overwrites the gate (no second buffer).
  const Mat activated = ops_.dtype_for(Role::Operand) == gate.dtype
                            ? gate
                            : workspace.matrix(ops_, kActivated, rows, inter, Role::Operand);
  const backend::RopeAngles angles = ops_.rope_angles(workspace, positions, rows, *rope_frequencies_, kCos, kSin);

  for (size_t index = 0; index < layers_.size(); ++index) {
    const Layer& layer = layers_[index];
    ops_.rms_norm(workspace, hidden, *layer.input_layernorm, eps, normed);
    ops_.linear(workspace, *layer.qkv_proj, normed, qkv);
    ops_.rope(workspace, q, heads, head_dim, angles);
    ops_.rope(workspace, k, kv_heads, head_dim, angles);
    ops_.cached_attention(workspace, cache, static_cast<int64_t>(index), q, k, v, heads, write, attended);
    ops_.linear(workspace, *layer.o_proj, attended, hidden, /*accumulate=*/true);

    ops_.rms_norm(workspace, hidden, *layer.post_attention_layernorm, eps, normed);
    ops_.linear(workspace, *layer.gate_up_proj, normed, gate_up);
    ops_.silu_mul(workspace, gate, up, activated);
    ops_.linear(workspace, *layer.down_proj, activated, hidden, /*accumulate=*/true);
    check_interrupt(interrupt);
  }
}

void TextDecoder::head(const Mat& hidden, float* logits, Workspace& workspace) const {
  const Mat normed = workspace.matrix(ops_, kNormed, hidden.rows, config_.hidden_size, Role::Operand);
  ops_.rms_norm(workspace, hidden, *norm_, static_cast<float>(config_.rms_norm_eps), normed);
  const Mat out = ops_.stage_out(workspace, logits, hidden.rows, config_.vocab_size, kLogits);
  ops_.linear(workspace, *lm_head_, normed, out);
  ops_.finish_out(workspace, out, logits);
}

}  // namespace qwen2audio
