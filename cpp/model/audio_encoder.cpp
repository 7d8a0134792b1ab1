#include "model/audio_encoder.h"

#include <algorithm>
#include <cmath>

#include <string>

namespace qwen2audio {
namespace {

constexpr float kLayerNormEps = 1e-5f;  // torch.nn.LayerNorm's default, which the reference keeps
constexpr int64_t kConvKernel = 3;

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

using backend::Mat;
using backend::Role;

// The encoder's scratch matrices in a Workspace.
enum Slot : int { kFeatures, kColumns, kConv1, kHidden, kNormed, kQkv, kAttended, kFfn, kOut };

// A columns matrix for Conv1d(kernel 3) over `channels` channels, in the columns slot's memory.
Mat conv_columns(const Mat& columns, int64_t rows, int64_t channels) {
  return {columns.data, columns.dtype, rows, channels * kConvKernel, channels * kConvKernel};
}

}  // namespace

int64_t encoder_attended_frames(int64_t mel_frames) { return floor_div(mel_frames - 1, 2) + 1; }

int64_t audio_token_count(int64_t mel_frames) { return floor_div(encoder_attended_frames(mel_frames) - 2, 2) + 1; }

AudioEncoder::AudioEncoder(const AudioEncoderConfig& config, WeightStore& weights, backend::Ops& ops)
    : config_(config), ops_(ops) {
  const int64_t d = config.d_model;
  const int64_t ffn = config.encoder_ffn_dim, positions = config.max_source_positions;
  conv1_ = ops.load_linear({weights.linear("audio_tower.conv1", true, {d, config.num_mel_bins, kConvKernel})});
  conv2_ = ops.load_linear({weights.linear("audio_tower.conv2", true, {d, d, kConvKernel})});
  positions_ = ops.load_constant(weights.floats("audio_tower.embed_positions.weight", {positions, d}), positions, d);
  for (int64_t index = 0; index < config.encoder_layers; ++index) {
    const std::string prefix = "audio_tower.layers." + std::to_string(index) + ".";
    Layer layer;
    layer.self_attn_layer_norm = layer_norm(weights, prefix + "self_attn_layer_norm");
    layer.qkv_proj = ops.load_linear({weights.linear(prefix + "self_attn.q_proj", true, {d, d}),
                                      weights.linear(prefix + "self_attn.k_proj", false, {d, d}),  // Whisper's: no bias
                                      weights.linear(prefix + "self_attn.v_proj", true, {d, d})});
    layer.out_proj = ops.load_linear({weights.linear(prefix + "self_attn.out_proj", true, {d, d})});
    layer.final_layer_norm = layer_norm(weights, prefix + "final_layer_norm");
    layer.fc1 = ops.load_linear({weights.linear(prefix + "fc1", true, {ffn, d})});
    layer.fc2 = ops.load_linear({weights.linear(prefix + "fc2", true, {d, ffn})});
    layers_.push_back(std::move(layer));
  }
  layer_norm_ = layer_norm(weights, "audio_tower.layer_norm");
}

AudioEncoder::LayerNorm AudioEncoder::layer_norm(WeightStore& weights, const std::string& prefix) const {
  const Norm norm = weights.norm(prefix, true, config_.d_model);
  return {ops_.load_constant(norm.weight, 1, config_.d_model), ops_.load_constant(norm.bias, 1, config_.d_model)};
}

int64_t AudioEncoder::output_rows(int64_t mel_frames, bool full_window) const {
  if (full_window) return output_frames();
  return std::clamp<int64_t>(audio_token_count(mel_frames), 0, output_frames());
}

Mat AudioEncoder::forward(const float* features, const int64_t* mel_frames, int64_t clips, bool full_window,
                          backend::Workspace& workspace, const Interrupt& interrupt) const {
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
  return run(features, input_frames(), clips, attended.data(), computed.data(), pooled.data(), workspace, interrupt);
}

Mat AudioEncoder::forward_frames(const float* features, int64_t frames, int64_t clips, const int64_t* attended,
                                 const int64_t* computed, backend::Workspace& workspace,
                                 const Interrupt& interrupt) const {
  return run(features, frames, clips, attended, computed, nullptr, workspace, interrupt);
}

Mat AudioEncoder::run(const float* features, int64_t frames, int64_t clips, const int64_t* attended,
                      const int64_t* computed, const int64_t* pooled, backend::Workspace& workspace,
                      const Interrupt& interrupt) const {
  const int64_t d = config_.d_model;
  const int64_t mel_bins = config_.num_mel_bins;
  std::vector<int64_t> first(static_cast<size_t>(clips) + 1, 0);  // where a clip's positions start
  for (int64_t clip = 0; clip < clips; ++clip) first[clip + 1] = first[clip] + computed[clip];
  const int64_t rows = first[clips];

  // The conv stem, one clip at a time: conv1 runs at full frame rate and is the largest activation.
  // Position p reads conv1 outputs 2p-1..2p+1, which read mel frames 2p-2..2p+2: the first
  // 2 * positions + 1 frames (zero past the window's end, as the reference pads) give them all.
  const Mat mel = ops_.stage_in(workspace, features, clips * mel_bins, frames, kFeatures);
  const Mat hidden = workspace.matrix(ops_, kHidden, rows, d, Role::State);
  {
    const Mat columns = workspace.matrix(ops_, kColumns, frames, std::max(mel_bins, d) * kConvKernel, Role::Operand);
    const Mat conv1_out = workspace.matrix(ops_, kConv1, frames, d, Role::State);
    for (int64_t clip = 0; clip < clips; ++clip) {
      const int64_t positions = computed[clip];
      if (positions == 0) continue;
      // conv2 pads conv1's output with zeros past the clip's last frame, not with conv1 of padding.
      const int64_t conv1_rows = std::min(2 * positions, frames);
      const int64_t mel_read = std::min(conv1_rows + 1, frames);
      const Mat clip_mel = mel.row_range(clip * mel_bins, mel_bins);  // channel-major [mel_bins, frames]
      const Mat columns1 = conv_columns(columns, mel_read, mel_bins);
      ops_.conv3_columns(workspace, clip_mel, mel_bins, mel_read, clip_mel.ld, 1, 1, columns1);
      ops_.linear(workspace, *conv1_, columns1.row_range(0, conv1_rows), conv1_out.row_range(0, conv1_rows),
                  /*accumulate=*/false, kernels::Activation::GeluErf);
      const Mat columns2 = conv_columns(columns, (conv1_rows - 1) / 2 + 1, d);
      ops_.conv3_columns(workspace, conv1_out, d, conv1_rows, 1, conv1_out.ld, 2, columns2);
      const Mat x = hidden.row_range(first[clip], positions);
      ops_.linear(workspace, *conv2_, columns2.row_range(0, positions), x, /*accumulate=*/false,
                  kernels::Activation::GeluErf);
      ops_.add(workspace, x, positions_->view().row_range(0, positions));
    }
  }
  check_interrupt(interrupt);

  const Mat normed = workspace.matrix(ops_, kNormed, rows, d, Role::Operand);
  const Mat qkv = workspace.matrix(ops_, kQkv, rows, 3 * d, Role::State);
  const Mat attention_out = workspace.matrix(ops_, kAttended, rows, d, Role::Operand);
  const Mat ffn = workspace.matrix(ops_, kFfn, rows, config_.encoder_ffn_dim, Role::Operand);
  backend::PackedAttention attention;
  attention.q = qkv.columns(0, d);
  attention.k = qkv.columns(d, d);
  attention.v = qkv.columns(2 * d, d);
  attention.out = attention_out;
  attention.heads = config_.encoder_attention_heads;
  attention.head_dim = config_.head_dim();
  attention.first = first.data();
  attention.length = computed;
  attention.visible = attended;
  attention.sequences = clips;
  for (const Layer& layer : layers_) {
    ops_.layer_norm(workspace, hidden, *layer.self_attn_layer_norm.weight, *layer.self_attn_layer_norm.bias,
                    kLayerNormEps, normed);
    ops_.linear(workspace, *layer.qkv_proj, normed, qkv);
    ops_.packed_attention(workspace, attention);
    ops_.linear(workspace, *layer.out_proj, attention_out, hidden, /*accumulate=*/true);

    ops_.layer_norm(workspace, hidden, *layer.final_layer_norm.weight, *layer.final_layer_norm.bias, kLayerNormEps,
                    normed);
    ops_.linear(workspace, *layer.fc1, normed, ffn, /*accumulate=*/false, kernels::Activation::GeluErf);
    ops_.linear(workspace, *layer.fc2, ffn, hidden, /*accumulate=*/true);
    check_interrupt(interrupt);
  }

  if (pooled == nullptr) {
    const Mat out = workspace.matrix(ops_, kOut, rows, d, Role::State);
    ops_.layer_norm(workspace, hidden, *layer_norm_.weight, *layer_norm_.bias, kLayerNormEps, out);
    return out;
  }
  // Pooling pairs positions 2j and 2j+1; a clip's tokens (or its whole window) are exactly the
  // pairs within its computed positions.
  int64_t pooled_rows = 0;
  for (int64_t clip = 0; clip < clips; ++clip) pooled_rows += pooled[clip];
  const Mat out = workspace.matrix(ops_, kOut, pooled_rows, d, Role::State);
  int64_t row = 0;
  for (int64_t clip = 0; clip < clips; ++clip) {
    const int64_t count = pooled[clip];
    if (count > 0) ops_.avg_pool_pairs(workspace, hidden.row_range(first[clip], 2 * count), out.row_range(row, count));
    row += count;
  }
  ops_.layer_norm(workspace, out, *layer_norm_.weight, *layer_norm_.bias, kLayerNormEps, out);
  return out;
}

}  // namespace qwen2audio
