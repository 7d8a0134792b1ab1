#include "model/audio_encoder.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/conv1d.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/norm.h"
#include "kernels/cpu/pool.h"
#include "runtime/buffer.h"

namespace qwen2audio {
namespace {

constexpr float kLayerNormEps = 1e-5f;  // torch.nn.LayerNorm's default, which the reference keeps
constexpr int64_t kConvKernel = 3;

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

using kernels::linear;

}  // namespace

int64_t encoder_attended_frames(int64_t mel_frames) { return floor_div(mel_frames - 1, 2) + 1; }

int64_t audio_token_count(int64_t mel_frames) { return floor_div(encoder_attended_frames(mel_frames) - 2, 2) + 1; }

AudioEncoder::AudioEncoder(const AudioEncoderConfig& config, WeightStore& weights) : config_(config) {
  conv1_ = weights.linear("audio_tower.conv1", true);
  conv2_ = weights.linear("audio_tower.conv2", true);
  positions_ = weights.floats("audio_tower.embed_positions.weight");
  for (int64_t index = 0; index < config.encoder_layers; ++index) {
    const std::string prefix = "audio_tower.layers." + std::to_string(index) + ".";
    Layer layer;
    layer.self_attn_layer_norm = weights.norm(prefix + "self_attn_layer_norm", true);
    layer.q_proj = weights.linear(prefix + "self_attn.q_proj", true);
    layer.k_proj = weights.linear(prefix + "self_attn.k_proj", false);  // Whisper's keys have no bias
    layer.v_proj = weights.linear(prefix + "self_attn.v_proj", true);
    layer.out_proj = weights.linear(prefix + "self_attn.out_proj", true);
    layer.final_layer_norm = weights.norm(prefix + "final_layer_norm", true);
    layer.fc1 = weights.linear(prefix + "fc1", true);
    layer.fc2 = weights.linear(prefix + "fc2", true);
    layers_.push_back(layer);
  }
  layer_norm_ = weights.norm("audio_tower.layer_norm", true);
}

int64_t AudioEncoder::output_rows(int64_t mel_frames, bool full_window) const {
  if (full_window) return output_frames();
  return std::clamp<int64_t>(audio_token_count(mel_frames), 0, output_frames());
}

void AudioEncoder::forward(kernels::Gemm& gemm, const float* features, const int64_t* mel_frames, int64_t clips,
                           bool full_window, float* out, const Interrupt& interrupt) const {
  const int64_t window = config_.max_source_positions;  // positions after the stride-2 convolution
  // Per clip: the keys attention may see, and the positions computed (the same, unless the
  // caller asked for the whole window).
  std::vector<int64_t> attended(static_cast<size_t>(clips)), computed(static_cast<size_t>(clips)),
      pooled(static_cast<size_t>(clips));
  for (int64_t clip = 0; clip < clips; ++clip) {
    attended[clip] = std::clamp<int64_t>(encoder_attended_frames(mel_frames[clip]), 0, window);
    computed[clip] = full_window ? window : attended[clip];
    pooled[clip] = output_rows(mel_frames[clip], full_window);
  }
  run(gemm, features, input_frames(), clips, attended.data(), computed.data(), pooled.data(), out, interrupt);
}

void AudioEncoder::forward_frames(kernels::Gemm& gemm, const float* features, int64_t frames, int64_t clips,
                                  const int64_t* attended, const int64_t* computed, float* out,
                                  const Interrupt& interrupt) const {
  run(gemm, features, frames, clips, attended, computed, nullptr, out, interrupt);
}

void AudioEncoder::run(kernels::Gemm& gemm, const float* features, int64_t frames, int64_t clips,
                       const int64_t* attended, const int64_t* computed, const int64_t* pooled, float* out,
                       const Interrupt& interrupt) const {
  const int64_t d = config_.d_model;
  const int64_t heads = config_.encoder_attention_heads;
  const int64_t head_dim = config_.head_dim();
  std::vector<int64_t> first(static_cast<size_t>(clips) + 1, 0);  // where a clip's positions start
  bool masked = false;
  for (int64_t clip = 0; clip < clips; ++clip) {
    first[clip + 1] = first[clip] + computed[clip];
    masked |= computed[clip] > attended[clip];
  }
  const int64_t rows = first[clips];

  // The conv stem, one clip at a time: conv1 runs at full frame rate and is the largest activation.
  // Position p reads conv1 outputs 2p-1..2p+1, which read mel frames 2p-2..2p+2: the first
  // 2 * positions + 1 frames (zero past the window's end, as the reference pads) give them all.
  Buffer<float> hidden(static_cast<size_t>(rows * d));
  {
    Buffer<float> columns(static_cast<size_t>(frames * std::max(config_.num_mel_bins, d) * kConvKernel));
    Buffer<float> conv1_out(static_cast<size_t>(frames * d));
    for (int64_t clip = 0; clip < clips; ++clip) {
      const int64_t positions = computed[clip];
      if (positions == 0) continue;
      // conv2 pads conv1's output with zeros past the clip's last frame, not with conv1 of padding.
      const int64_t conv1_rows = std::min(2 * positions, frames);
      const int64_t mel_read = std::min(conv1_rows + 1, frames);
      const float* mel = features + clip * config_.num_mel_bins * frames;
      kernels::im2col_1d(mel, config_.num_mel_bins, mel_read, frames, 1, kConvKernel, 1, 1, columns.data());
      linear(gemm, conv1_, columns.data(), conv1_rows, config_.num_mel_bins * kConvKernel, conv1_out.data(), d,
             /*accumulate=*/false, kernels::Activation::GeluErf);
      kernels::im2col_1d(conv1_out.data(), d, conv1_rows, 1, d, kConvKernel, 2, 1, columns.data());
      float* x = hidden.data() + first[clip] * d;
      linear(gemm, conv2_, columns.data(), positions, d * kConvKernel, x, d, /*accumulate=*/false,
             kernels::Activation::GeluErf);
      kernels::add_rows(x, d, positions_, d, positions, d);
    }
  }
  check_interrupt(interrupt);

  // Only positions computed past the attended ones have keys to hide.
  std::vector<uint8_t> key_mask;
  if (masked) {
    key_mask.assign(static_cast<size_t>(rows), 0);
    for (int64_t clip = 0; clip < clips; ++clip) std::fill_n(key_mask.begin() + first[clip], attended[clip], 1);
  }

  Buffer<float> normed(static_cast<size_t>(rows * d));
  Buffer<float> q(static_cast<size_t>(rows * d)), k(static_cast<size_t>(rows * d)), v(static_cast<size_t>(rows * d));
  Buffer<float> attention_out(static_cast<size_t>(rows * d));
  Buffer<float> ffn(static_cast<size_t>(rows * config_.encoder_ffn_dim));
  kernels::AttentionScratch attention_scratch;  // sized by the first clip of the first layer, then reused
  for (const Layer& layer : layers_) {
    kernels::layer_norm(hidden.data(), rows, d, d, layer.self_attn_layer_norm.weight, layer.self_attn_layer_norm.bias,
                        kLayerNormEps, normed.data(), d);
    linear(gemm, layer.q_proj, normed.data(), rows, d, q.data(), d);
    linear(gemm, layer.k_proj, normed.data(), rows, d, k.data(), d);
    linear(gemm, layer.v_proj, normed.data(), rows, d, v.data(), d);
    for (int64_t clip = 0; clip < clips; ++clip) {
      if (computed[clip] == 0) continue;
      const int64_t offset = first[clip] * d;
      kernels::AttentionArgs attention;
      attention.batch = 1;
      attention.q_len = attention.kv_len = computed[clip];
      attention.num_heads = attention.num_kv_heads = heads;
      attention.head_dim = head_dim;
      attention.q = q.data() + offset;
      attention.q_batch_stride = computed[clip] * d;
      attention.q_row_stride = d;
      attention.k = k.data() + offset;
      attention.v = v.data() + offset;
      attention.kv_batch_stride = computed[clip] * d;
      attention.kv_head_stride = head_dim;
      attention.kv_row_stride = d;
      attention.out = attention_out.data() + offset;
      attention.out_batch_stride = computed[clip] * d;
      attention.out_row_stride = d;
      attention.scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
      if (masked) {
        attention.key_mask = key_mask.data() + first[clip];
        attention.key_mask_stride = computed[clip];
      }
      kernels::attention(attention, attention_scratch);
    }
    linear(gemm, layer.out_proj, attention_out.data(), rows, d, hidden.data(), d, /*accumulate=*/true);

    kernels::layer_norm(hidden.data(), rows, d, d, layer.final_layer_norm.weight, layer.final_layer_norm.bias,
                        kLayerNormEps, normed.data(), d);
    linear(gemm, layer.fc1, normed.data(), rows, d, ffn.data(), config_.encoder_ffn_dim, /*accumulate=*/false,
           kernels::Activation::GeluErf);
    linear(gemm, layer.fc2, ffn.data(), rows, config_.encoder_ffn_dim, hidden.data(), d, /*accumulate=*/true);
    check_interrupt(interrupt);
  }

  if (pooled == nullptr) {
    kernels::layer_norm(hidden.data(), rows, d, d, layer_norm_.weight, layer_norm_.bias, kLayerNormEps, out, d);
    return;
  }
  // Pooling pairs positions 2j and 2j+1; a clip's tokens (or its whole window) are exactly the
  // pairs within its computed positions.
  int64_t pooled_rows = 0;
  for (int64_t clip = 0; clip < clips; ++clip) {
    const int64_t count = pooled[clip];
    if (count > 0)
      kernels::avg_pool_rows(hidden.data() + first[clip] * d, 2 * count, d, d, 2, 2, out + pooled_rows * d, d);
    pooled_rows += count;
  }
  kernels::layer_norm(out, pooled_rows, d, d, layer_norm_.weight, layer_norm_.bias, kLayerNormEps, out, d);
}

}  // namespace qwen2audio
