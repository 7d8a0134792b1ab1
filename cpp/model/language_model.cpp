#include "model/language_model.h"

#include <cmath>

#include "runtime/buffer.h"
#include "runtime/errors.h"
#include "runtime/threads.h"

namespace qwen2audio {
namespace {

std::string position(int64_t batch_index, int64_t step) {
  return "[" + std::to_string(batch_index) + ", " + std::to_string(step) + "]";
}

}  // namespace

void AudioLanguageModel::forward(const TokenBatch& tokens, const AudioBatch* audio, float* logits,
                                 const Interrupt& interrupt) const {
  check_tokens(tokens);
  const TextConfig& text = text_config();
  if (tokens.steps > text.max_position_embeddings)
    throw InvalidArgument("input_ids have " + std::to_string(tokens.steps) +
                          " tokens, beyond max_position_embeddings (" + std::to_string(text.max_position_embeddings) +
                          ")");
  std::vector<float> audio_rows;
  if (audio != nullptr) audio_rows = audio_embeddings(*audio, interrupt);
  const int64_t rows = tokens.batch * tokens.steps;
  Buffer<float> states(static_cast<size_t>(rows * text.hidden_size));
  embed(tokens, audio, audio != nullptr ? audio_rows.data() : nullptr,
        static_cast<int64_t>(audio_rows.size()) / text.hidden_size, states.data());

  KVCache cache = make_cache(tokens.batch);
  cache.reserve(tokens.steps);
  for (int64_t i = 0; i < rows; ++i)
    cache.key_mask()[i] = tokens.attention_mask ? static_cast<uint8_t>(tokens.attention_mask[i]) : 1;
  std::vector<int64_t> positions(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) positions[i] = i % tokens.steps;
  const backend::WorkspacePool::Lease workspace = borrow_workspace();
  decode(cache, states.data(), tokens.steps, positions.data(), *workspace, logits, interrupt, /*all_positions=*/true);
}

void AudioLanguageModel::check_token_batch(const TokenBatch& tokens, int64_t vocab) {
  if (tokens.batch < 1 || tokens.steps < 1)
    throw InvalidArgument("input_ids must hold at least one token per row, got shape (" + std::to_string(tokens.batch) +
                          ", " + std::to_string(tokens.steps) + ")");
  for (int64_t b = 0; b < tokens.batch; ++b) {
    bool any_valid = tokens.attention_mask == nullptr;
    for (int64_t t = 0; t < tokens.steps; ++t) {
      const int64_t id = tokens.ids[b * tokens.steps + t];
      if (id < 0 || id >= vocab)
        throw InvalidArgument("input_ids" + position(b, t) + " = " + std::to_string(id) +
                              " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
      if (tokens.attention_mask) {
        const int64_t mask = tokens.attention_mask[b * tokens.steps + t];
        if (mask != 0 && mask != 1)
          throw InvalidArgument("attention_mask" + position(b, t) + " is " + std::to_string(mask) +
                                "; it must hold 0 or 1");
        any_valid |= mask == 1;
      }
    }
    if (!any_valid) throw InvalidArgument("attention_mask row " + std::to_string(b) + " masks every token");
  }
}

void AudioLanguageModel::check_finite_features(const AudioBatch& audio, const char* name) {
  const int64_t per_clip = audio.mel_bins * audio.frames;
  for (int64_t i = 0; i < audio.clips * per_clip; ++i) {
    const float value = audio.features[i];
    if (!std::isfinite(value))
      throw InvalidArgument(std::string(name) + " of clip " + std::to_string(i / per_clip) +
                            " hold a non-finite value (" +
                            (std::isnan(value) ? "NaN"
                             : value > 0       ? "inf"
                                               : "-inf") +
                            ")");
  }
}

void AudioDecoderModel::set_num_threads(int count) { num_threads_ = checked_num_threads(count); }

void AudioDecoderModel::use_cpu_ops(const kernels::GemmOptions& options) {
  auto cpu = std::make_unique<backend::CpuOps>(options);
  cpu_ops_ = cpu.get();
  ops_ = std::move(cpu);
}

void AudioDecoderModel::copy_to_host(backend::Workspace& workspace, const backend::Mat& rows, float* out,
                                     int slot) const {
  const backend::Mat staged = ops_->stage_out(workspace, out, rows.rows, rows.cols, slot);
  ops_->copy(workspace, rows, staged);
  ops_->finish_out(workspace, staged, out);
}

void AudioDecoderModel::decode(KVCache& cache, float* hidden, int64_t steps, const int64_t* positions,
                               TextDecoder::Workspace& workspace, float* logits, const Interrupt& interrupt,
                               bool all_positions) const {
  if (cache.length() + steps > cache.capacity()) throw std::logic_error("KV cache capacity not reserved before decode");
  ScopedNumThreads threads(num_threads_);
  decoder_->decode(hidden, steps, positions, cache, workspace, logits, interrupt, all_positions);
}

void AudioDecoderModel::decode_rows(KVCache& cache, float* hidden, const TextDecoder::RaggedRows& rows,
                                    const int64_t* positions, TextDecoder::Workspace& workspace, float* logits,
                                    const Interrupt& interrupt) const {
  if (cpu_ops_ == nullptr) throw InvalidArgument("batched serving runs on the CPU model; load it with device=\"cpu\"");
  ScopedNumThreads threads(num_threads_);
  decoder_->decode(hidden, rows, positions, cache, workspace, logits, interrupt);
}

}  // namespace qwen2audio
