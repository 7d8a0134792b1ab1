#include "model/qwen2_audio.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "backend/device_loader.h"
#include "kernels/cpu/gemv.h"
#include "model/weight_layout.h"
#include "runtime/errors.h"
#include "runtime/threads.h"

namespace qwen2audio {
namespace {

std::string position(int64_t batch_index, int64_t step) {
  return "[" + std::to_string(batch_index) + ", " + std::to_string(step) + "]";
}

// Where host outputs are staged in a Workspace, past the encoder's own slots.
constexpr int kStagedOutput = 16;

}  // namespace

std::shared_ptr<Qwen2AudioModel> Qwen2AudioModel::load(const std::filesystem::path& path, const LoadOptions& options) {
  const DeviceName& device_name = options.device;
  auto model = std::shared_ptr<Qwen2AudioModel>(new Qwen2AudioModel());
  model->num_threads_ = options.num_threads == 0 ? default_num_threads() : checked_num_threads(options.num_threads);
  std::shared_ptr<Checkpoint> checkpoint = Checkpoint::open(path);
  model->config_ = checkpoint->config();
  require_weights(model->config_, *checkpoint);
  model->checkpoint_ = checkpoint;
  const ResolvedDTypes dtypes = resolve_dtypes(options, *checkpoint);
  const DType compute = dtypes.compute, kv_dtype = dtypes.kv_cache;

  ScopedNumThreads threads(model->num_threads_);
  if (device_name.cuda) {
    model->ops_ = load_cuda_ops(device_name.index);
    model->device_name_ = device_name.str();
  } else {
    model->use_cpu_ops(options.gemm);
  }
  const auto build = [&] {
    model->weights_ = std::make_unique<WeightStore>(checkpoint, compute);
    model->weights_->set_quantization(resolve_quantization(*checkpoint, options.quantization),
                                      model->cpu_ops_ && kernels::integer_kernels(model->cpu_ops_->gemm()));
    model->build_modules(*model->weights_, *model->ops_, kv_dtype);
  };
  if (device_name.cuda)
    run_on_device(build, device_name.index);
  else
    build();
  // BF16 decoding reads its weights in the order this CPU streams fastest, measured once per
  // process (kernels/cpu/gemv.h); measured now so the first token does not wait for it.
  if (!device_name.cuda && compute == DType::BF16) kernels::preferred_read_order();
  return model;
}

void Qwen2AudioModel::build_modules(WeightStore& weights, backend::Ops& ops, DType kv_cache_dtype) {
  encoder_ = std::make_unique<AudioEncoder>(config_.audio, weights, ops);
  projector_ = ops.load_linear(
      {weights.linear("multi_modal_projector.linear", true, {config_.text.hidden_size, config_.audio.d_model})});
  decoder_ = std::make_unique<TextDecoder>(config_.text, weights, ops, kv_cache_dtype);
}

std::vector<ExpectedTensor> expected_tensors(const Qwen2AudioConfig& config) {
  Qwen2AudioModel model;
  model.config_ = config;
  WeightStore requests(DType::F32);
  backend::CpuOps ops;
  model.build_modules(requests, ops, DType::F32);
  return requests.requested();
}

std::vector<int64_t> Qwen2AudioModel::mel_frames(const AudioBatch& audio) const {
  const AudioEncoderConfig& config = config_.audio;
  if (audio.clips < 1) throw InvalidArgument("input_features holds no audio clip");
  if (audio.mel_bins != config.num_mel_bins || audio.frames != encoder_->input_frames())
    throw InvalidArgument("input_features must have shape (clips, " + std::to_string(config.num_mel_bins) + ", " +
                          std::to_string(encoder_->input_frames()) + "), got (" + std::to_string(audio.clips) + ", " +
                          std::to_string(audio.mel_bins) + ", " + std::to_string(audio.frames) +
                          "); the feature extractor pads every clip to 30 s");
  check_finite_features(audio, "input_features");
  std::vector<int64_t> frames(static_cast<size_t>(audio.clips), audio.frames);
  if (audio.feature_attention_mask == nullptr) return frames;
  for (int64_t clip = 0; clip < audio.clips; ++clip) {
    int64_t sum = 0;
    for (int64_t t = 0; t < audio.frames; ++t) {
      const int64_t value = audio.feature_attention_mask[clip * audio.frames + t];
      if (value != 0 && value != 1)
        throw InvalidArgument("feature_attention_mask" + position(clip, t) + " is " + std::to_string(value) +
                              "; it must hold 0 or 1");
      sum += value;
    }
    if (sum == 0)
      throw InvalidArgument("feature_attention_mask of clip " + std::to_string(clip) + " marks no valid frame");
    frames[clip] = sum;
  }
  return frames;
}

std::vector<int64_t> Qwen2AudioModel::audio_token_counts(const AudioBatch& audio) const {
  std::vector<int64_t> counts = mel_frames(audio);
  for (int64_t& count : counts) count = audio_token_count(count);
  return counts;
}

void Qwen2AudioModel::check_tokens(const TokenBatch& tokens) const {
  check_token_batch(tokens, config_.text.vocab_size);
}

void Qwen2AudioModel::encode(const AudioBatch& audio, float* out, const Interrupt& interrupt) const {
  const std::vector<int64_t> frames = mel_frames(audio);
  ScopedNumThreads threads(num_threads_);
  const backend::WorkspacePool::Lease lease = borrow_workspace();
  backend::Workspace& workspace = *lease;
  const backend::Mat encoded =
      encoder_->forward(audio.features, frames.data(), audio.clips, /*full_window=*/true, workspace, interrupt);
  copy_to_host(workspace, encoded, out, kStagedOutput);
}

std::vector<float> Qwen2AudioModel::audio_embeddings(const AudioBatch& audio, const Interrupt& interrupt,
                                                     bool full_window) const {
  const std::vector<int64_t> frames = mel_frames(audio);
  ScopedNumThreads threads(num_threads_);
  int64_t total = 0;
  for (int64_t count : frames) total += encoder_->output_rows(count, false);
  const backend::WorkspacePool::Lease lease = borrow_workspace();
  backend::Workspace& workspace = *lease;
  const backend::Mat encoded =
      encoder_->forward(audio.features, frames.data(), audio.clips, full_window, workspace, interrupt);
  if (full_window) {
    // Keep each window's audio tokens, packed as the trimmed pass leaves them.
    const int64_t per_clip = encoder_->output_frames();
    int64_t row = 0;
    for (int64_t clip = 0; clip < audio.clips; ++clip) {
      const int64_t count = encoder_->output_rows(frames[clip], false);
      ops_->copy(workspace, encoded.row_range(clip * per_clip, count), encoded.row_range(row, count));
      row += count;
    }
  }
  const int64_t hidden = config_.text.hidden_size;
  std::vector<float> embeddings(static_cast<size_t>(total * hidden));
  if (total == 0) return embeddings;
  const backend::Mat staged = ops_->stage_out(workspace, embeddings.data(), total, hidden, kStagedOutput);
  ops_->linear(workspace, *projector_, encoded.row_range(0, total), staged);
  ops_->finish_out(workspace, staged, embeddings.data());
  return embeddings;
}

void Qwen2AudioModel::embed(const TokenBatch& tokens, const float* audio, int64_t audio_rows, float* out) const {
  const int64_t count = tokens.batch * tokens.steps;
  const int64_t placeholder = config_.audio_token_index;
  const int64_t placeholders = std::count(tokens.ids, tokens.ids + count, placeholder);
  if (audio == nullptr && placeholders > 0)
    throw InvalidArgument("input_ids hold " + std::to_string(placeholders) + " audio placeholder tokens (id " +
                          std::to_string(placeholder) + ") but no input_features were given");
  if (audio != nullptr && placeholders != audio_rows)
    throw InvalidArgument("input_ids hold " + std::to_string(placeholders) + " audio placeholder tokens (id " +
                          std::to_string(placeholder) + ") but the audio clips given make " +
                          std::to_string(audio_rows) +
                          " audio tokens; each clip's placeholder must be expanded to its token count");
  decoder_->embed(tokens.ids, count, out);
  const int64_t hidden = config_.text.hidden_size;
  int64_t row = 0;
  for (int64_t i = 0; i < count && row < audio_rows; ++i)
    if (tokens.ids[i] == placeholder) std::memcpy(out + i * hidden, audio + (row++) * hidden, sizeof(float) * hidden);
}

}  // namespace qwen2audio

namespace qwen2audio {}  // namespace qwen2audio
