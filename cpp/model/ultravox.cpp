#include "model/ultravox.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "backend/device_loader.h"
#include "kernels/cpu/gemv.h"
#include "runtime/errors.h"
#include "runtime/threads.h"

namespace qwen2audio {
namespace {

constexpr float kProjectorNormEps = 1e-6f;  // UltravoxProjector's RMSNorm

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The projector's scratch matrices in a Workspace, past the encoder's slots.
enum Slot : int { kStacked = 16, kProjected, kGated, kStagedOutput };

}  // namespace

int64_t ultravox_audio_token_count(int64_t frames, int64_t stack_factor) {
  return ceil_div(encoder_attended_frames(frames), stack_factor);
}

std::vector<ExpectedTensor> ultravox_expected_tensors(const UltravoxConfig& config) {
  UltravoxModel model;
  model.config_ = config;
  WeightStore requests(DType::F32);
  backend::CpuOps ops;
  model.build_modules(requests, ops, DType::F32);
  return requests.requested();
}

void UltravoxModel::build_modules(WeightStore& weights, backend::Ops& ops, DType kv_cache_dtype) {
  const int64_t stacked = config_.audio.d_model * config_.stack_factor;
  const int64_t hidden = config_.projector_hidden_size;
  encoder_ = std::make_unique<AudioEncoder>(config_.audio, weights, ops);
  ln_pre_ = ops.load_constant(weights.norm("multi_modal_projector.ln_pre", false, stacked).weight, 1, stacked);
  linear_1_ = ops.load_linear({weights.linear("multi_modal_projector.linear_1", false, {hidden, stacked})});
  ln_mid_ = ops.load_constant(weights.norm("multi_modal_projector.ln_mid", false, hidden / 2).weight, 1, hidden / 2);
  linear_2_ = ops.load_linear(
      {weights.linear("multi_modal_projector.linear_2", false, {config_.text.hidden_size, hidden / 2})});
  decoder_ = std::make_unique<TextDecoder>(config_.text, weights, ops, kv_cache_dtype);
}

std::shared_ptr<UltravoxModel> UltravoxModel::load(const std::filesystem::path& path, const LoadOptions& options) {
  if (options.device.cuda)
    throw InvalidArgument("Ultravox runs on the CPU only for now; load it with device='cpu' (got '" +
                          options.device.str() + "')");
  auto model = std::shared_ptr<UltravoxModel>(new UltravoxModel());
  model->num_threads_ = options.num_threads == 0 ? default_num_threads() : checked_num_threads(options.num_threads);
  std::shared_ptr<Checkpoint> checkpoint = Checkpoint::open(path);
  if (checkpoint->model_type() != "ultravox")
    throw ConfigError(path.string() + ": config.json's model_type is '" + checkpoint->model_type() +
                      "', not 'ultravox'");
  model->config_ = *checkpoint->ultravox_config();
  require_weights(check_weights(ultravox_expected_tensors(model->config_), model->config_.text, *checkpoint),
                  *checkpoint);
  model->checkpoint_ = checkpoint;
  const ResolvedDTypes dtypes = resolve_dtypes(options, *checkpoint);
  const DType compute = dtypes.compute, kv_dtype = dtypes.kv_cache;

  ScopedNumThreads threads(model->num_threads_);
  model->use_cpu_ops(options.gemm);
  model->weights_ = std::make_unique<WeightStore>(checkpoint, compute);
  // The quantization rule (model/quantization.h: the decoder layers' projections and lm_head) is the same
  // for both families, whose decoders carry the same tensor names; the encoder and projector stay as loaded.
  model->weights_->set_quantization(resolve_quantization(*checkpoint, options.quantization),
                                    kernels::integer_kernels(model->cpu_ops_->gemm()));
  model->build_modules(*model->weights_, *model->ops_, kv_dtype);
  if (compute == DType::BF16) kernels::preferred_read_order();
  return model;
}

std::vector<int64_t> UltravoxModel::audio_lens(const AudioBatch& audio) const {
  const int64_t context = encoder_->input_frames();
  if (audio.clips < 1) throw InvalidArgument("audio_values hold no audio chunk");
  if (audio.mel_bins != config_.audio.num_mel_bins || audio.frames < 1 || audio.frames > context)
    throw InvalidArgument("audio_values must have shape (chunks, " + std::to_string(config_.audio.num_mel_bins) +
                          ", frames) with 1 <= frames <= " + std::to_string(context) + ", got (" +
                          std::to_string(audio.clips) + ", " + std::to_string(audio.mel_bins) + ", " +
                          std::to_string(audio.frames) + "); the processor splits longer audio into chunks");
  check_finite_features(audio, "audio_values");
  std::vector<int64_t> lens(static_cast<size_t>(audio.clips), audio.frames);
  if (audio.feature_attention_mask == nullptr) return lens;
  for (int64_t clip = 0; clip < audio.clips; ++clip) {
    const int64_t* mask = audio.feature_attention_mask + clip * audio.frames;
    int64_t valid = 0;
    while (valid < audio.frames && mask[valid] == 1) ++valid;
    for (int64_t t = valid; t < audio.frames; ++t)
      if (mask[t] != 0)
        throw InvalidArgument("the frame mask of chunk " + std::to_string(clip) +
                              " must be 1 for its first audio_lens frames and 0 after, got " + std::to_string(mask[t]) +
                              " at frame " + std::to_string(t));
    if (valid == 0) throw InvalidArgument("audio_lens of chunk " + std::to_string(clip) + " is 0");
    lens[clip] = valid;
  }
  return lens;
}

std::vector<int64_t> UltravoxModel::audio_token_counts(const AudioBatch& audio) const {
  std::vector<int64_t> counts = audio_lens(audio);
  for (int64_t& count : counts) count = ultravox_audio_token_count(count, config_.stack_factor);
  return counts;
}

void UltravoxModel::encode(const AudioBatch& audio, float* out, const Interrupt& interrupt) const {
  const std::vector<int64_t> lens = audio_lens(audio);
  const int64_t positions = encoder_attended_frames(audio.frames);
  std::vector<int64_t> attended(lens.size()), computed(lens.size(), positions);
  for (size_t clip = 0; clip < lens.size(); ++clip) attended[clip] = encoder_attended_frames(lens[clip]);
  ScopedNumThreads threads(num_threads_);
  const backend::WorkspacePool::Lease lease = borrow_workspace();
  backend::Workspace& workspace = *lease;
  const backend::Mat encoded = encoder_->forward_frames(audio.features, audio.frames, audio.clips, attended.data(),
                                                        computed.data(), workspace, interrupt);
  copy_to_host(workspace, encoded, out, kStagedOutput);
}

std::vector<float> UltravoxModel::audio_embeddings(const AudioBatch& audio, const Interrupt& interrupt,
                                                   bool all_rows) const {
  const std::vector<int64_t> lens = audio_lens(audio);
  const int64_t stack = config_.stack_factor;
  const int64_t d = config_.audio.d_model;
  const int64_t positions = encoder_attended_frames(audio.frames);
  const size_t clips = lens.size();
  // A token's stack may hold frames past the chunk's attended ones (the reference computes them,
  // queries being unmasked), so each chunk runs up to the end of its last stack, no further.
  std::vector<int64_t> attended(clips), computed(clips), rows(clips);
  int64_t total = 0;
  for (size_t clip = 0; clip < clips; ++clip) {
    attended[clip] = encoder_attended_frames(lens[clip]);
    rows[clip] = all_rows ? ceil_div(positions, stack) : ceil_div(attended[clip], stack);
    computed[clip] = std::min(positions, rows[clip] * stack);
    total += rows[clip];
  }
  ScopedNumThreads threads(num_threads_);
  const backend::WorkspacePool::Lease lease = borrow_workspace();
  backend::Workspace& workspace = *lease;
  const backend::Mat encoded = encoder_->forward_frames(audio.features, audio.frames, audio.clips, attended.data(),
                                                        computed.data(), workspace, interrupt);

  const int64_t width = stack * d;
  const int64_t hidden = config_.projector_hidden_size, half = hidden / 2;
  const int64_t text_hidden = config_.text.hidden_size;
  std::vector<float> embeddings(static_cast<size_t>(total * text_hidden));
  if (total == 0) return embeddings;
  // Each chunk's frames laid out `stack` per row; the last stack of a chunk is padded with zeros.
  const backend::Mat stacked = workspace.matrix(*ops_, kStacked, total, width, backend::Role::State);
  ops_->zero(workspace, stacked);
  {
    int64_t source = 0, row = 0;
    for (size_t clip = 0; clip < clips; ++clip) {
      const backend::Mat frames{stacked.row_range(row, rows[clip]).data, stacked.dtype, computed[clip], d, d};
      ops_->copy(workspace, encoded.row_range(source, computed[clip]), frames);
      source += computed[clip];
      row += rows[clip];
    }
  }
  const backend::Mat projected = workspace.matrix(*ops_, kProjected, total, hidden, backend::Role::State);
  const backend::Mat gated = workspace.matrix(*ops_, kGated, total, half, backend::Role::State);
  ops_->rms_norm(workspace, stacked, *ln_pre_, kProjectorNormEps, stacked);
  ops_->linear(workspace, *linear_1_, stacked, projected);
  // SwiGLU as Ultravox writes it: the second half gates the first.
  ops_->silu_mul(workspace, projected.columns(half, half), projected.columns(0, half), gated);
  ops_->rms_norm(workspace, gated, *ln_mid_, kProjectorNormEps, gated);
  const backend::Mat staged = ops_->stage_out(workspace, embeddings.data(), total, text_hidden, kStagedOutput);
  ops_->linear(workspace, *linear_2_, gated, staged);
  ops_->finish_out(workspace, staged, embeddings.data());
  return embeddings;
}

void UltravoxModel::embed(const TokenBatch& tokens, const AudioBatch* audio, const float* audio_rows, int64_t count,
                          float* out) const {
  const int64_t total = tokens.batch * tokens.steps;
  decoder_->embed(tokens.ids, total, out);
  if (audio == nullptr) return;
  if (audio->audio_token_starts == nullptr)
    throw InvalidArgument("Ultravox audio needs audio_token_start_idx (where each chunk's tokens start)");
  const std::vector<int64_t> counts = audio_token_counts(*audio);
  const int64_t expected = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  if (expected != count) throw std::logic_error("audio rows do not match the chunks' token counts");
  const int64_t hidden = config_.text.hidden_size;
  int64_t row = 0;
  for (int64_t clip = 0; clip < audio->clips; ++clip) {
    const int64_t start = audio->audio_token_starts[clip], n = counts[clip];
    if (start < 0 || start >= total || start % tokens.steps + n > tokens.steps)
      throw InvalidArgument("audio_token_start_idx[" + std::to_string(clip) + "] = " + std::to_string(start) +
                            ": its " + std::to_string(n) + " audio tokens do not fit in a row of " +
                            std::to_string(tokens.steps) + " input_ids");
    std::memcpy(out + start * hidden, audio_rows + row * hidden, sizeof(float) * n * hidden);
    row += n;
  }
}

}  // namespace qwen2audio
