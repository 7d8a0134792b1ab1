#include "model/qwen2_audio.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "kernels/cpu/gemv.h"
#include "model/device_loader.h"
#include "model/weight_layout.h"
#include "runtime/errors.h"
#include "runtime/threads.h"

namespace qwen2audio {
namespace {

std::string position(int64_t batch_index, int64_t step) {
  return "[" + std::to_string(batch_index) + ", " + std::to_string(step) + "]";
}

}  // namespace

std::shared_ptr<Qwen2AudioModel> Qwen2AudioModel::load(const std::filesystem::path& path, const std::string& dtype,
                                                       int num_threads, kernels::GemmOptions gemm_options,
                                                       const QuantizationRequest& quantization,
                                                       const std::string& kv_cache_dtype, const std::string& device) {
  const DeviceName device_name = parse_device(device);
  if (device_name.cuda) {
    if (quantization.decoder != WeightQuantization::None || quantization.lm_head)
      throw InvalidArgument("quantization is CPU-only; on device='" + device +
                            "' the model runs its bfloat16 weights (drop quantization=)");
    if (dtype == "float32" || dtype == "fp32" || dtype == "f32")
      throw InvalidArgument("device='" + device + "' computes in bfloat16; dtype='float32' is CPU-only");
    if (kv_cache_dtype == "float32" || kv_cache_dtype == "fp32" || kv_cache_dtype == "f32")
      throw InvalidArgument("device='" + device +
                            "' keeps its KV cache in bfloat16; kv_cache_dtype='float32' is CPU-only");
  }
  auto model = std::shared_ptr<Qwen2AudioModel>(new Qwen2AudioModel());
  model->num_threads_ = num_threads == 0 ? default_num_threads() : checked_num_threads(num_threads);
  std::shared_ptr<Checkpoint> checkpoint = Checkpoint::open(path);
  model->config_ = checkpoint->config();
  require_weights(model->config_, *checkpoint);
  model->checkpoint_ = checkpoint;
  // On a GPU the weights compute in BF16 whatever the file holds (the host keeps what embeds
  // tokens in the same dtype).
  const DType requested = choose_compute_dtype(dtype, *checkpoint);
  const DType compute = device_name.cuda ? DType::BF16 : requested;
  const DType kv_dtype = choose_kv_cache_dtype(kv_cache_dtype, compute);

  ScopedNumThreads threads(model->num_threads_);
  model->gemm_ = std::make_unique<kernels::Gemm>(gemm_options);
  model->weights_ = std::make_unique<WeightStore>(checkpoint, compute);
  model->weights_->set_quantization(resolve_quantization(*checkpoint, quantization),
                                    kernels::integer_kernels(*model->gemm_));
  model->encoder_ = std::make_unique<AudioEncoder>(model->config_.audio, *model->weights_);
  model->projector_ = model->weights_->linear("multi_modal_projector.linear", true);
  model->decoder_ = std::make_unique<TextDecoder>(model->config_.text, *model->weights_, kv_dtype);
  // BF16 decoding reads its weights in the order this CPU streams fastest, measured once per
  // process (kernels/cpu/gemv.h); measured now so the first token does not wait for it.
  if (!device_name.cuda && compute == DType::BF16) kernels::preferred_read_order();
  if (device_name.cuda) {
    // The device takes BF16 and F32 tensors (converting F32 matrices itself while uploading); F16
    // ones are widened here first, into copies that only need to live through the upload.
    std::vector<std::vector<float>> widened;
    DeviceModelSpec spec;
    spec.config = model->config_;
    spec.device_index = device_name.index;
    spec.tensor = [&checkpoint, &widened](const std::string& name) {
      const TensorView view = checkpoint->tensor(name);
      TensorView tensor = view;
      if (view.dtype == DType::F16) {
        std::vector<float>& copy = widened.emplace_back(static_cast<size_t>(view.numel()));
        const auto* bytes = static_cast<const uint8_t*>(view.data);
        for (size_t i = 0; i < copy.size(); ++i) {
          uint16_t bits;
          std::memcpy(&bits, bytes + 2 * i, sizeof bits);
          copy[i] = f16_to_float(bits);
        }
        tensor = {copy.data(), DType::F32, view.shape};
      } else if (view.dtype != DType::BF16 && view.dtype != DType::F32) {
        throw CheckpointError("tensor '" + name + "' is " + std::string(dtype_name(view.dtype)) +
                              "; the CUDA backend loads BF16, F16 or F32 weights");
      }
      return tensor;
    };
    model->device_model_ = load_cuda_model(spec);
    model->device_name_ = device_name.str();
  }
  return model;
}

void Qwen2AudioModel::set_num_threads(int count) { num_threads_ = checked_num_threads(count); }

std::vector<int64_t> Qwen2AudioModel::mel_frames(const AudioBatch& audio) const {
  const AudioEncoderConfig& config = config_.audio;
  if (audio.clips < 1) throw InvalidArgument("input_features holds no audio clip");
  if (audio.mel_bins != config.num_mel_bins || audio.frames != encoder_->input_frames())
    throw InvalidArgument("input_features must have shape (clips, " + std::to_string(config.num_mel_bins) + ", " +
                          std::to_string(encoder_->input_frames()) + "), got (" + std::to_string(audio.clips) + ", " +
                          std::to_string(audio.mel_bins) + ", " + std::to_string(audio.frames) +
                          "); the feature extractor pads every clip to 30 s");
  const int64_t values = audio.clips * audio.mel_bins * audio.frames;
  for (int64_t i = 0; i < values; ++i) {
    if (!std::isfinite(audio.features[i])) {
      const int64_t clip = i / (audio.mel_bins * audio.frames);
      throw InvalidArgument("input_features of clip " + std::to_string(clip) + " hold a non-finite value (" +
                            std::to_string(audio.features[i]) + ")");
    }
  }
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
  if (device_model_) return device_model_->encode(audio.features, frames.data(), audio.clips, out, interrupt);
  ScopedNumThreads threads(num_threads_);
  encoder_->forward(*gemm_, audio.features, frames.data(), audio.clips, /*full_window=*/true, out, interrupt);
}

std::vector<float> Qwen2AudioModel::audio_embeddings(const AudioBatch& audio, const Interrupt& interrupt,
                                                     bool full_window) const {
  const std::vector<int64_t> frames = mel_frames(audio);
  if (device_model_) {
    std::vector<int64_t> counts(frames.size());
    for (size_t clip = 0; clip < frames.size(); ++clip)
      counts[clip] = std::clamp<int64_t>(audio_token_count(frames[clip]), 0, encoder_->output_frames());
    const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
    std::vector<float> embeddings(static_cast<size_t>(total * config_.text.hidden_size));
    device_model_->audio_embeddings(audio.features, frames.data(), counts.data(), audio.clips, embeddings.data(),
                                    interrupt);
    return embeddings;
  }
  ScopedNumThreads threads(num_threads_);
  const int64_t d = encoder_->hidden_size();
  int64_t total = 0, window_rows = 0;
  for (int64_t count : frames) {
    total += encoder_->output_rows(count, false);
    window_rows += encoder_->output_rows(count, full_window);
  }
  Buffer<float> encoded(static_cast<size_t>(window_rows * d));
  encoder_->forward(*gemm_, audio.features, frames.data(), audio.clips, full_window, encoded.data(), interrupt);
  if (full_window) {
    // Keep each window's audio tokens, packed as the trimmed pass leaves them.
    const int64_t per_clip = encoder_->output_frames();
    int64_t row = 0;
    for (int64_t clip = 0; clip < audio.clips; ++clip) {
      const int64_t count = encoder_->output_rows(frames[clip], false);
      std::memmove(encoded.data() + row * d, encoded.data() + clip * per_clip * d, sizeof(float) * count * d);
      row += count;
    }
  }
  const int64_t hidden = config_.text.hidden_size;
  std::vector<float> embeddings(static_cast<size_t>(total * hidden));
  if (total > 0) kernels::linear(*gemm_, projector_, encoded.data(), total, d, embeddings.data(), hidden);
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

void Qwen2AudioModel::forward(const TokenBatch& tokens, const AudioBatch* audio, float* logits,
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
  embed(tokens, audio ? audio_rows.data() : nullptr, static_cast<int64_t>(audio_rows.size()) / hidden, states.data());

  KVCache cache = make_cache(tokens.batch);
  cache.reserve(tokens.steps);
  for (int64_t i = 0; i < rows; ++i)
    cache.key_mask()[i] = tokens.attention_mask ? static_cast<uint8_t>(tokens.attention_mask[i]) : 1;
  // transformers' forward numbers positions 0..steps-1 in every row whatever the padding.
  std::vector<int64_t> positions(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) positions[i] = i % tokens.steps;
  if (device_model_) {
    device_model_->decode(*cache.device_state(), states.data(), tokens.batch, tokens.steps, positions.data(),
                          cache.key_mask(), cache.key_mask_stride(), 0, logits, /*all_positions=*/true, interrupt);
    return;
  }
  TextDecoder::Workspace workspace;
  decoder_->forward(*gemm_, states.data(), tokens.steps, positions.data(), cache, workspace, interrupt);
  decoder_->logits(*gemm_, states.data(), rows, hidden, logits, workspace);
}

}  // namespace qwen2audio

namespace qwen2audio {

KVCache Qwen2AudioModel::make_cache(int64_t batch) const {
  const TextConfig& text = config_.text;
  if (!device_model_) return decoder_->make_cache(batch);
  return KVCache(text.num_hidden_layers, text.num_key_value_heads, text.head_dim, batch, DType::BF16,
                 device_model_->make_state(batch, 0));
}

void Qwen2AudioModel::decode(KVCache& cache, float* hidden, int64_t steps, const int64_t* positions,
                             TextDecoder::Workspace& workspace, float* logits, const Interrupt& interrupt) const {
  if (cache.length() + steps > cache.capacity()) throw std::logic_error("KV cache capacity not reserved before decode");
  if (device_model_) {
    if (cache.device_state() == nullptr) throw std::logic_error("a CPU KV cache given to a device model");
    device_model_->decode(*cache.device_state(), hidden, cache.batch(), steps, positions, cache.key_mask(),
                          cache.key_mask_stride(), cache.length(), logits, /*all_positions=*/false, interrupt);
    cache.advance(steps);
    return;
  }
  ScopedNumThreads threads(num_threads_);
  decoder_->decode(*gemm_, hidden, steps, positions, cache, workspace, logits, interrupt);
}

void Qwen2AudioModel::decode_rows(KVCache& cache, float* hidden, const TextDecoder::RaggedRows& rows,
                                  const int64_t* positions, TextDecoder::Workspace& workspace, float* logits,
                                  const Interrupt& interrupt) const {
  if (device_model_) throw InvalidArgument("batched serving runs on the CPU model; load it with device=\"cpu\"");
  ScopedNumThreads threads(num_threads_);
  decoder_->decode(*gemm_, hidden, rows, positions, cache, workspace, logits, interrupt);
}

}  // namespace qwen2audio
