#include "model/ultravox.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/gemv.h"
#include "kernels/cpu/linear.h"
#include "kernels/cpu/norm.h"
#include "model/device_loader.h"
#include "runtime/buffer.h"
#include "runtime/errors.h"
#include "runtime/threads.h"

namespace qwen2audio {
namespace {

constexpr float kProjectorNormEps = 1e-6f;  // UltravoxProjector's RMSNorm

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

int64_t ultravox_audio_token_count(int64_t frames, int64_t stack_factor) {
  return ceil_div(encoder_attended_frames(frames), stack_factor);
}

std::vector<ExpectedTensor> ultravox_expected_tensors(const UltravoxConfig& config) {
  std::vector<ExpectedTensor> tensors;
  add_encoder_tensors(config.audio, tensors);
  const int64_t stacked = config.audio.d_model * config.stack_factor;
  const int64_t hidden = config.projector_hidden_size;
  tensors.push_back({"multi_modal_projector.ln_pre.weight", {stacked}});
  tensors.push_back({"multi_modal_projector.linear_1.weight", {hidden, stacked}});
  tensors.push_back({"multi_modal_projector.ln_mid.weight", {hidden / 2}});
  tensors.push_back({"multi_modal_projector.linear_2.weight", {config.text.hidden_size, hidden / 2}});
  add_decoder_tensors(config.text, tensors);
  return tensors;
}

std::shared_ptr<UltravoxModel> UltravoxModel::load(const std::filesystem::path& path, const std::string& dtype,
                                                   int num_threads, kernels::GemmOptions gemm_options,
                                                   const QuantizationRequest& quantization,
                                                   const std::string& kv_cache_dtype, const std::string& device) {
  if (parse_device(device).cuda)
    throw InvalidArgument("Ultravox runs on the CPU only for now; load it with device='cpu' (got '" + device + "')");
  auto model = std::shared_ptr<UltravoxModel>(new UltravoxModel());
  model->num_threads_ = num_threads == 0 ? default_num_threads() : checked_num_threads(num_threads);
  std::shared_ptr<Checkpoint> checkpoint = Checkpoint::open(path);
  if (checkpoint->model_type() != "ultravox")
    throw ConfigError(path.string() + ": config.json's model_type is '" + checkpoint->model_type() +
                      "', not 'ultravox'");
  model->config_ = load_ultravox_config(checkpoint->directory() / "config.json");
  require_weights(check_weights(ultravox_expected_tensors(model->config_), model->config_.text, *checkpoint),
                  *checkpoint);
  model->checkpoint_ = checkpoint;
  const DType compute = choose_compute_dtype(dtype, *checkpoint);
  const DType kv_dtype = choose_kv_cache_dtype(kv_cache_dtype, compute);

  ScopedNumThreads threads(model->num_threads_);
  model->gemm_ = std::make_unique<kernels::Gemm>(gemm_options);
  model->weights_ = std::make_unique<WeightStore>(checkpoint, compute);
  // The quantization rule (model/quantization.h: the decoder layers' projections and lm_head) is the same
  // for both families, whose decoders carry the same tensor names; the encoder and projector stay as loaded.
  model->weights_->set_quantization(resolve_quantization(*checkpoint, quantization),
                                    kernels::integer_kernels(*model->gemm_));
  model->encoder_ = std::make_unique<AudioEncoder>(model->config_.audio, *model->weights_);
  model->ln_pre_ = model->weights_->norm("multi_modal_projector.ln_pre", false);
  model->linear_1_ = model->weights_->linear("multi_modal_projector.linear_1", false);
  model->ln_mid_ = model->weights_->norm("multi_modal_projector.ln_mid", false);
  model->linear_2_ = model->weights_->linear("multi_modal_projector.linear_2", false);
  model->decoder_ = std::make_unique<TextDecoder>(model->config_.text, *model->weights_, kv_dtype);
  if (compute == DType::BF16) kernels::preferred_read_order();
  return model;
}

void UltravoxModel::set_num_threads(int count) { num_threads_ = checked_num_threads(count); }

std::vector<int64_t> UltravoxModel::audio_lens(const AudioBatch& audio) const {
  const int64_t context = encoder_->input_frames();
  if (audio.clips < 1) throw InvalidArgument("audio_values hold no audio chunk");
  if (audio.mel_bins != config_.audio.num_mel_bins || audio.frames < 1 || audio.frames > context)
    throw InvalidArgument("audio_values must have shape (chunks, " + std::to_string(config_.audio.num_mel_bins) +
                          ", frames) with 1 <= frames <= " + std::to_string(context) + ", got (" +
                          std::to_string(audio.clips) + ", " + std::to_string(audio.mel_bins) + ", " +
                          std::to_string(audio.frames) + "); the processor splits longer audio into chunks");
  const int64_t values = audio.clips * audio.mel_bins * audio.frames;
  for (int64_t i = 0; i < values; ++i)
    if (!std::isfinite(audio.features[i]))
      throw InvalidArgument("audio_values of chunk " + std::to_string(i / (audio.mel_bins * audio.frames)) +
                            " hold a non-finite value (" + std::to_string(audio.features[i]) + ")");
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
  encoder_->forward_frames(*gemm_, audio.features, audio.frames, audio.clips, attended.data(), computed.data(), out,
                           interrupt);
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
  int64_t encoded_rows = 0, total = 0;
  for (size_t clip = 0; clip < clips; ++clip) {
    attended[clip] = encoder_attended_frames(lens[clip]);
    rows[clip] = all_rows ? ceil_div(positions, stack) : ceil_div(attended[clip], stack);
    computed[clip] = std::min(positions, rows[clip] * stack);
    encoded_rows += computed[clip];
    total += rows[clip];
  }
  ScopedNumThreads threads(num_threads_);
  Buffer<float> encoded(static_cast<size_t>(encoded_rows * d));
  encoder_->forward_frames(*gemm_, audio.features, audio.frames, audio.clips, attended.data(), computed.data(),
                           encoded.data(), interrupt);

  const int64_t width = stack * d;
  const int64_t hidden = config_.projector_hidden_size, half = hidden / 2;
  std::vector<float> stacked(static_cast<size_t>(total * width), 0.0f);
  {
    int64_t source = 0, row = 0;
    for (size_t clip = 0; clip < clips; ++clip) {
      std::memcpy(stacked.data() + row * width, encoded.data() + source * d, sizeof(float) * computed[clip] * d);
      source += computed[clip];
      row += rows[clip];
    }
  }
  Buffer<float> projected(static_cast<size_t>(total * hidden));
  kernels::rms_norm(stacked.data(), total, width, width, ln_pre_.weight, kProjectorNormEps, stacked.data(), width);
  kernels::linear(*gemm_, linear_1_, stacked.data(), total, width, projected.data(), hidden);
  Buffer<float> gated(static_cast<size_t>(total * half));
  for (int64_t row = 0; row < total; ++row) {
    const float* y = projected.data() + row * hidden;
    kernels::silu_mul(y + half, y, gated.data() + row * half, half);
  }
  kernels::rms_norm(gated.data(), total, half, half, ln_mid_.weight, kProjectorNormEps, gated.data(), half);
  const int64_t text_hidden = config_.text.hidden_size;
  std::vector<float> embeddings(static_cast<size_t>(total * text_hidden));
  kernels::linear(*gemm_, linear_2_, gated.data(), total, half, embeddings.data(), text_hidden);
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

void UltravoxModel::forward(const TokenBatch& tokens, const AudioBatch* audio, float* logits,
                            const Interrupt& interrupt) const {
  check_tokens(tokens);
  if (tokens.steps > config_.text.max_position_embeddings)
    throw InvalidArgument("input_ids have " + std::to_string(tokens.steps) +
                          " tokens, beyond max_position_embeddings (" +
                          std::to_string(config_.text.max_position_embeddings) + ")");
  std::vector<float> audio_rows;
  if (audio != nullptr) audio_rows = audio_embeddings(*audio, interrupt);
  ScopedNumThreads threads(num_threads_);
  const int64_t hidden = config_.text.hidden_size;
  const int64_t rows = tokens.batch * tokens.steps;
  Buffer<float> states(static_cast<size_t>(rows * hidden));
  embed(tokens, audio, audio_rows.data(), static_cast<int64_t>(audio_rows.size()) / hidden, states.data());
  KVCache cache = make_cache(tokens.batch);
  cache.reserve(tokens.steps);
  for (int64_t i = 0; i < rows; ++i)
    cache.key_mask()[i] = tokens.attention_mask ? static_cast<uint8_t>(tokens.attention_mask[i]) : 1;
  std::vector<int64_t> positions(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) positions[i] = i % tokens.steps;
  TextDecoder::Workspace workspace;
  decoder_->forward(*gemm_, states.data(), tokens.steps, positions.data(), cache, workspace, interrupt);
  decoder_->logits(*gemm_, states.data(), rows, hidden, logits, workspace);
}

void UltravoxModel::decode(KVCache& cache, float* hidden, int64_t steps, const int64_t* positions,
                           TextDecoder::Workspace& workspace, float* logits, const Interrupt& interrupt) const {
  if (cache.length() + steps > cache.capacity()) throw std::logic_error("KV cache capacity not reserved before decode");
  ScopedNumThreads threads(num_threads_);
  decoder_->decode(*gemm_, hidden, steps, positions, cache, workspace, logits, interrupt);
}

void UltravoxModel::decode_rows(KVCache& cache, float* hidden, const TextDecoder::RaggedRows& rows,
                                const int64_t* positions, TextDecoder::Workspace& workspace, float* logits,
                                const Interrupt& interrupt) const {
  ScopedNumThreads threads(num_threads_);
  decoder_->decode(*gemm_, hidden, rows, positions, cache, workspace, logits, interrupt);
}

}  // namespace qwen2audio
