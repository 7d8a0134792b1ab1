#pragma once

#include <cstdint>
#include <vector>

#include <memory>

#include "backend/ops.h"
#include "io/config.h"
#include "model/interrupt.h"
#include "model/weights.h"

namespace qwen2audio {

// Lengths through the encoder, from a clip's valid mel frames L (its feature_attention_mask sum):
// the stride-2 convolution keeps (L - 1) / 2 + 1 frames (the keys attention may see), and the
// stride-2 average pool leaves (that - 2) / 2 + 1 audio tokens, both rounding toward minus
// infinity as the reference's integer tensors do.
int64_t encoder_attended_frames(int64_t mel_frames);
int64_t audio_token_count(int64_t mel_frames);

// Qwen2-Audio's Whisper-style encoder:
//   x = GELU(conv2(GELU(conv1(mel)))) + positions                      [frames/2, d]
//   per layer: x += out_proj(attention(LN(x)));  x += fc2(GELU(fc1(LN(x))))
//   last_hidden_state = LN(avg_pool_2(x))                              [frames/4, d]
// Attention is bidirectional and keys past a clip's attended frames are hidden. Nothing at an
// attended position depends on a position past them (the convolutions read one frame either
// side, which the stem's input margin covers; attention hides those keys; the rest is per row),
// so the encoder can stop at a clip's attended positions and give the reference's numbers for its
// audio tokens at a fraction of the work: a 5 s clip runs 250 positions, not 1500.
// Written once against the op-level backend (backend/ops.h); `ops` must outlive the encoder.
class AudioEncoder {
 public:
  AudioEncoder(const AudioEncoderConfig& config, WeightStore& weights, backend::Ops& ops);

  int64_t mel_bins() const { return config_.num_mel_bins; }
  int64_t input_frames() const { return 2 * config_.max_source_positions; }
  int64_t output_frames() const { return config_.max_source_positions / 2; }
  int64_t hidden_size() const { return config_.d_model; }

  // What each clip contributes to forward()'s output: its audio tokens, or with `full_window`
  // the reference's whole window (output_frames() rows, padded positions included).
  int64_t output_rows(int64_t mel_frames, bool full_window) const;

  // features: host [clips, mel_bins, input_frames]; mel_frames[c]: valid frames of clip c.
  // Returns the output rows of clip after clip, [sum of output_rows, hidden_size], in the
  // backend's memory (a matrix of `workspace`). The clips run as one packed sequence: every
  // projection is one product over all their positions, attention runs per clip (block-diagonal).
  backend::Mat forward(const float* features, const int64_t* mel_frames, int64_t clips, bool full_window,
                       backend::Workspace& workspace, const Interrupt& interrupt) const;

  // Whisper's own encoder output, without Qwen2-Audio's pooling (Ultravox): features [clips,
  // mel_bins, frames] with frames <= input_frames(); clip c computes its first computed[c]
  // positions (at most (frames + 1) / 2), with attention keys limited to its first attended[c].
  // Returns LN(x) of those positions, clip after clip.
  backend::Mat forward_frames(const float* features, int64_t frames, int64_t clips, const int64_t* attended,
                              const int64_t* computed, backend::Workspace& workspace, const Interrupt& interrupt) const;

 private:
  // The layers of both: `pooled` averages position pairs into each clip's pooled[c] rows before
  // the final norm; without it every computed position is an output row.
  backend::Mat run(const float* features, int64_t frames, int64_t clips, const int64_t* attended,
                   const int64_t* computed, const int64_t* pooled, backend::Workspace& workspace,
                   const Interrupt& interrupt) const;

  struct LayerNorm {
    std::unique_ptr<backend::Constant> weight, bias;
  };
  struct Layer {
    LayerNorm self_attn_layer_norm;
    std::unique_ptr<backend::LinearWeights> qkv_proj;  // q, k, v stacked
    std::unique_ptr<backend::LinearWeights> out_proj;
    LayerNorm final_layer_norm;
    std::unique_ptr<backend::LinearWeights> fc1, fc2;
  };
  LayerNorm layer_norm(WeightStore& weights, const std::string& prefix) const;

  AudioEncoderConfig config_;
  backend::Ops& ops_;
  std::unique_ptr<backend::LinearWeights> conv1_, conv2_;
  std::unique_ptr<backend::Constant> positions_;
  std::vector<Layer> layers_;
  LayerNorm layer_norm_;
};

}  // namespace qwen2audio
