#include "model/text_decoder.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/rope.h"
#include "model/quantization.h"

namespace qwen2audio {
namespace {

using kernels::linear;

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

TextDecoder::TextDecoder(const TextConfig& config, WeightStore& weights, DType kv_cache_dtype)
    : config_(config), kv_cache_dtype_(kv_cache_dtype), inverse_frequencies_(rope_inverse_frequencies(config)) {
  embed_tokens_ = weights.matrix("language_model.model.embed_tokens.weight");
  for (int64_t index = 0; index < config.num_hidden_layers; ++index) {
    const std::string prefix = "language_model.model.layers." + std::to_string(index) + ".";
    Layer layer;
    layer.input_layernorm = weights.norm(prefix + "input_layernorm", false);
    layer.post_attention_layernorm = weights.norm(prefix + "post_attention_layernorm", false);
    layer.q_proj = weights.linear(prefix + "self_attn.q_proj", config.attention_bias);
    layer.k_proj = weights.linear(prefix + "self_attn.k_proj", config.attention_bias);
    layer.v_proj = weights.linear(prefix + "self_attn.v_proj", config.attention_bias);
    layer.o_proj = weights.linear(prefix + "self_attn.o_proj", false);
    layer.gate_proj = weights.linear(prefix + "mlp.gate_proj", false);
    layer.up_proj = weights.linear(prefix + "mlp.up_proj", false);
    layer.down_proj = weights.linear(prefix + "mlp.down_proj", false);
    layers_.push_back(layer);
  }
  norm_ = weights.norm("language_model.model.norm", false);
  lm_head_ = config.tie_word_embeddings ? weights.linear_of(embed_tokens_)
                                        : weights.linear("language_model.lm_head", /*has_bias=*/false);
}

KVCache TextDecoder::make_cache(int64_t batch) const {
  return KVCache(config_.num_hidden_layers, config_.num_key_value_heads, config_.head_dim, batch, kv_cache_dtype_);
}

void TextDecoder::embed(const int64_t* ids, int64_t count, float* out) const {
  kernels::embedding_lookup(embed_tokens_.data, embed_tokens_.dtype, embed_tokens_.cols, embed_tokens_.cols, ids, count,
                            out, embed_tokens_.cols);
}

void TextDecoder::forward(kernels::Gemm& gemm, float* hidden, int64_t steps, const int64_t* positions, KVCache& cache,
                          Workspace& workspace, const Interrupt& interrupt) const {
  if (cache.length() + steps > cache.capacity())
    throw std::logic_error("KV cache capacity not reserved before the decoder");
  run_layers(gemm, hidden, steps, nullptr, positions, cache, workspace, interrupt);
  cache.advance(steps);
}

void TextDecoder::forward(kernels::Gemm& gemm, float* hidden, const RaggedRows& ragged, const int64_t* positions,
                          KVCache& cache, Workspace& workspace, const Interrupt& interrupt) const {
  workspace.kv_lens.resize(static_cast<size_t>(ragged.count));
  for (int64_t i = 0; i < ragged.count; ++i) {
    if (ragged.rows[i] < 0 || ragged.rows[i] >= cache.batch() || ragged.lengths[i] < 0 ||
        ragged.lengths[i] >= cache.capacity())
      throw std::logic_error("ragged decode row outside the KV cache");
    workspace.kv_lens[i] = ragged.lengths[i] + 1;
  }
  run_layers(gemm, hidden, 1, &ragged, positions, cache, workspace, interrupt);
}

void TextDecoder::run_layers(kernels::Gemm& gemm, float* hidden, int64_t steps, const RaggedRows* ragged,
                             const int64_t* positions, KVCache& cache, Workspace& workspace,
                             const Interrupt& interrupt) const {
  const int64_t batch = ragged ? ragged->count : cache.batch();
  const int64_t rows = batch * steps;
  const int64_t width = config_.hidden_size;
  const int64_t heads = config_.num_attention_heads;
  const int64_t kv_heads = config_.num_key_value_heads;
  const int64_t head_dim = config_.head_dim;
  const int64_t q_width = heads * head_dim;
  const int64_t kv_width = kv_heads * head_dim;
  const int64_t start = cache.length();
  const float eps = static_cast<float>(config_.rms_norm_eps);
  if (rows == 0) return;
  const int64_t kv_len = ragged ? *std::max_element(workspace.kv_lens.begin(), workspace.kv_lens.end()) : start + steps;

  float* normed = workspace.normed.reserve(static_cast<size_t>(rows * width));
  float* q = workspace.q.reserve(static_cast<size_t>(rows * q_width));
  float* k = workspace.k.reserve(static_cast<size_t>(rows * kv_width));
  float* v = workspace.v.reserve(static_cast<size_t>(rows * kv_width));
  float* attended = workspace.attended.reserve(static_cast<size_t>(rows * q_width));
  float* gate = workspace.gate.reserve(static_cast<size_t>(rows * config_.intermediate_size));
  float* up = workspace.up.reserve(static_cast<size_t>(rows * config_.intermediate_size));
  float* cos = workspace.cos.reserve(static_cast<size_t>(rows * head_dim / 2));
  float* sin = workspace.sin.reserve(static_cast<size_t>(rows * head_dim / 2));
  kernels::rope_tables(positions, rows, head_dim, inverse_frequencies_.data(), cos, sin);

  for (size_t index = 0; index < layers_.size(); ++index) {
    const Layer& layer = layers_[index];
    kernels::rms_norm(hidden, rows, width, width, layer.input_layernorm.weight, eps, normed, width);
    linear(gemm, layer.q_proj, normed, rows, width, q, q_width);
    linear(gemm, layer.k_proj, normed, rows, width, k, kv_width);
    linear(gemm, layer.v_proj, normed, rows, width, v, kv_width);
    kernels::apply_rope(q, rows, heads, head_dim, q_width, cos, sin);
    kernels::apply_rope(k, rows, kv_heads, head_dim, kv_width, cos, sin);

    if (ragged)
      cache.store_rows(static_cast<int64_t>(index), k, v, kv_width, ragged->rows, ragged->lengths, ragged->count);
    else
      cache.store(static_cast<int64_t>(index), k, v, steps, kv_width);

    kernels::AttentionArgs attention;
    attention.batch = batch;
    attention.q_len = steps;
    attention.kv_len = kv_len;
    attention.num_heads = heads;
    attention.num_kv_heads = kv_heads;
    attention.head_dim = head_dim;
    attention.q = q;
    attention.q_batch_stride = steps * q_width;
    attention.q_row_stride = q_width;
    attention.k = cache.keys(static_cast<int64_t>(index));
    attention.v = cache.values(static_cast<int64_t>(index));
    attention.kv_dtype = cache.dtype();
    attention.kv_batch_stride = cache.batch_stride();
    attention.kv_head_stride = cache.head_stride();
    attention.kv_row_stride = cache.row_stride();
    attention.out = attended;
    attention.out_batch_stride = steps * q_width;
    attention.out_row_stride = q_width;
    attention.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    attention.causal = true;
    attention.key_mask = cache.key_mask();
    attention.key_mask_stride = cache.key_mask_stride();
    if (ragged) {
      attention.kv_rows = ragged->rows;
      attention.kv_lens = workspace.kv_lens.data();
    }
    kernels::attention(attention, workspace.attention);
    linear(gemm, layer.o_proj, attended, rows, q_width, hidden, width, /*accumulate=*/true);

    kernels::rms_norm(hidden, rows, width, width, layer.post_attention_layernorm.weight, eps, normed, width);
    linear(gemm, layer.gate_proj, normed, rows, width, gate, config_.intermediate_size);
    linear(gemm, layer.up_proj, normed, rows, width, up, config_.intermediate_size);
    kernels::silu_mul(gate, up, gate, rows * config_.intermediate_size);
    linear(gemm, layer.down_proj, gate, rows, config_.intermediate_size, hidden, width, /*accumulate=*/true);
    check_interrupt(interrupt);
  }
}

void TextDecoder::decode(kernels::Gemm& gemm, float* hidden, int64_t steps, const int64_t* positions, KVCache& cache,
                         Workspace& workspace, float* logits_out, const Interrupt& interrupt) const {
  forward(gemm, hidden, steps, positions, cache, workspace, interrupt);
  const int64_t width = config_.hidden_size;
  logits(gemm, hidden + (steps - 1) * width, cache.batch(), steps * width, logits_out, workspace);
}

void TextDecoder::decode(kernels::Gemm& gemm, float* hidden, const RaggedRows& ragged, const int64_t* positions,
                         KVCache& cache, Workspace& workspace, float* logits_out, const Interrupt& interrupt) const {
  if (ragged.count == 0) return;
  forward(gemm, hidden, ragged, positions, cache, workspace, interrupt);
  logits(gemm, hidden, ragged.count, config_.hidden_size, logits_out, workspace);
}

void TextDecoder::logits(kernels::Gemm& gemm, const float* hidden, int64_t rows, int64_t ldh, float* logits,
                         Workspace& workspace) const {
  const int64_t width = config_.hidden_size;
  float* normed = workspace.normed.reserve(static_cast<size_t>(rows * width));
  kernels::rms_norm(hidden, rows, width, ldh, norm_.weight, static_cast<float>(config_.rms_norm_eps), normed, width);
  linear(gemm, lm_head_, normed, rows, width, logits, config_.vocab_size);
}

}  // namespace qwen2audio
