// Continuous batching: ragged attention against per-row calls, and DecodeBatch's greedy tokens
// against Session::generate on each prompt alone, with requests joining and leaving mid-batch.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <new>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "generate/decode_batch.h"
#include "generate/session.h"
#include "kernels/cpu/attention.h"
#include "model/qwen2_audio.h"

// Counts operator new calls while `counting` is set: a decode step must not allocate once its buffers
// are sized (Buffer's aligned_alloc only happens on growth, which a warmed batch never needs either).
namespace {
std::atomic<bool> counting{false};
std::atomic<int64_t> allocations{0};
}  // namespace

// GCC pairs the builtin new it sees elsewhere with this file's free(); the replacements are a matching pair.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t bytes) {
  if (counting.load(std::memory_order_relaxed)) allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* memory = std::malloc(bytes == 0 ? 1 : bytes)) return memory;
  throw std::bad_alloc();
}
void operator delete(void* memory) noexcept { std::free(memory); }
void operator delete(void* memory, std::size_t) noexcept { std::free(memory); }

namespace qwen2audio {
namespace {

namespace fs = std::filesystem;

std::vector<float> random_values(size_t count, uint32_t seed) {
  std::mt19937 random(seed);
  std::normal_distribution<float> normal;
  std::vector<float> values(count);
  for (float& value : values) value = normal(random);
  return values;
}

// A batch row that reads another cache row with fewer keys must equal attention over that row alone.
TEST(RaggedAttention, MatchesEachRowAlone) {
  const int64_t cache_rows = 3, heads = 4, kv_heads = 2, dim = 16, capacity = 40;
  const auto keys = random_values(cache_rows * kv_heads * capacity * dim, 1);
  const auto values = random_values(keys.size(), 2);
  const std::vector<int64_t> rows = {2, 0}, lens = {7, 33};
  const auto q = random_values(rows.size() * heads * dim, 3);
  std::vector<uint8_t> mask(cache_rows * capacity, 1);
  mask[0 * capacity + 5] = 0;  // a hidden key in row 0 stays hidden through the row map
  std::vector<float> out(q.size());

  kernels::AttentionArgs args;
  args.batch = 2;
  args.q_len = 1;
  args.kv_len = 33;
  args.num_heads = heads;
  args.num_kv_heads = kv_heads;
  args.head_dim = dim;
  args.q = q.data();
  args.q_batch_stride = heads * dim;
  args.q_row_stride = heads * dim;
  args.k = keys.data();
  args.v = values.data();
  args.kv_batch_stride = kv_heads * capacity * dim;
  args.kv_head_stride = capacity * dim;
  args.kv_row_stride = dim;
  args.out = out.data();
  args.out_batch_stride = heads * dim;
  args.out_row_stride = heads * dim;
  args.scale = 0.25f;
  args.causal = true;
  args.key_mask = mask.data();
  args.key_mask_stride = capacity;
  args.kv_rows = rows.data();
  args.kv_lens = lens.data();
  kernels::attention(args);

  for (size_t i = 0; i < rows.size(); ++i) {
    std::vector<float> alone(heads * dim);
    kernels::AttentionArgs single = args;
    single.batch = 1;
    single.kv_len = lens[i];
    single.q = q.data() + i * heads * dim;
    single.k = keys.data() + rows[i] * args.kv_batch_stride;
    single.v = values.data() + rows[i] * args.kv_batch_stride;
    single.key_mask = mask.data() + rows[i] * capacity;
    single.out = alone.data();
    single.kv_rows = nullptr;
    single.kv_lens = nullptr;
    kernels::attention(single);
    for (int64_t e = 0; e < heads * dim; ++e) EXPECT_EQ(out[i * heads * dim + e], alone[e]) << "row " << i;
  }

  args.q_len = 16;  // prefill-sized queries take the tiled algorithm, which has no row map
  EXPECT_THROW(kernels::attention(args), std::exception);
}

// The tiny reference checkpoint, unpacked into a temporary folder once.
std::shared_ptr<Qwen2AudioModel> tiny_model() {
  static std::shared_ptr<Qwen2AudioModel> model = [] {
    const fs::path source = fs::path(QWEN2AUDIO_SHARED_REFERENCE_DIR) / "tiny_model" / "f32";
    if (!fs::exists(source / "model.safetensors.gz")) return std::shared_ptr<Qwen2AudioModel>();
    const fs::path folder = fs::temp_directory_path() / ("qwen2audio_decode_batch_" + std::to_string(::getpid()));
    fs::create_directories(folder);
    for (const char* name : {"config.json", "generation_config.json"})
      fs::copy_file(source / name, folder / name, fs::copy_options::overwrite_existing);
    const std::string unzip = "gzip -dc '" + (source / "model.safetensors.gz").string() + "' > '" +
                              (folder / "model.safetensors").string() + "'";
    if (std::system(unzip.c_str()) != 0) return std::shared_ptr<Qwen2AudioModel>();
    LoadOptions options;
    options.dtype = DTypeChoice::Float32;
    options.num_threads = 2;
    auto loaded = Qwen2AudioModel::load(folder, options);
    fs::remove_all(folder);
    return loaded;
  }();
  return model;
}

std::vector<int64_t> prompt(int64_t length, int64_t seed) {
  std::vector<int64_t> ids(static_cast<size_t>(length));
  for (int64_t i = 0; i < length; ++i) ids[i] = 100 + (seed * 7919 + i * 104729) % 5000;
  return ids;
}

std::unique_ptr<Session> prefilled(const std::shared_ptr<Qwen2AudioModel>& model, const std::vector<int64_t>& ids) {
  auto session = std::make_unique<Session>(model, 1);
  session->append({ids.data(), nullptr, 1, static_cast<int64_t>(ids.size())}, nullptr);
  return session;
}

std::vector<int64_t> alone(const std::shared_ptr<Qwen2AudioModel>& model, const std::vector<int64_t>& ids,
                           int64_t max_new_tokens) {
  GenerationOptions options;
  options.max_new_tokens = max_new_tokens;
  return prefilled(model, ids)->generate(options);
}

TEST(DecodeBatch, JoiningRowsDecodeAsEachPromptAlone) {
  const auto model = tiny_model();
  if (!model) GTEST_SKIP() << "shared reference tiny model not found";
  const std::vector<std::vector<int64_t>> prompts = {prompt(5, 1), prompt(23, 2), prompt(11, 3), prompt(2, 4)};
  const std::vector<int64_t> budgets = {12, 6, 9, 10};
  // Requests join at steps 0, 0, 3 and 5 (slot 1 has left by then, so the last one reuses it).
  const std::vector<int64_t> joins = {0, 0, 3, 5};

  DecodeBatch batch(model, 3, 64);
  std::vector<std::vector<int64_t>> generated(prompts.size());
  std::vector<int64_t> slot_request(3, -1);
  std::vector<SlotToken> step;
  size_t next = 0;
  for (int64_t clock = 0; clock < 40 && (next < prompts.size() || batch.taken() > 0); ++clock) {
    while (next < prompts.size() && joins[next] <= clock && batch.free_slot() >= 0) {
      SlotOptions options;
      options.max_new_tokens = budgets[next];
      const int64_t slot = batch.admit(*prefilled(model, prompts[next]), options);
      slot_request[slot] = static_cast<int64_t>(next);
      generated[next].push_back(batch.tokens(slot).back());
      ++next;
    }
    batch.step(step);
    for (const SlotToken& token : step) generated[slot_request[token.slot]].push_back(token.token);
    for (int64_t slot = 0; slot < batch.slots(); ++slot)
      if (slot_request[slot] >= 0 && batch.generated(slot) == budgets[slot_request[slot]]) {
        batch.release(slot);
        slot_request[slot] = -1;
      }
  }
  ASSERT_EQ(next, prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i)
    EXPECT_EQ(generated[i], alone(model, prompts[i], budgets[i])) << "request " << i;
}

TEST(DecodeBatch, ReleasedConversationContinuesInASession) {
  const auto model = tiny_model();
  if (!model) GTEST_SKIP() << "shared reference tiny model not found";
  const auto first = prompt(9, 5), second = prompt(4, 6);
  DecodeBatch batch(model, 2, 64);
  SlotOptions options;
  options.max_new_tokens = 5;
  const int64_t slot = batch.admit(*prefilled(model, first), options);
  std::vector<SlotToken> step;
  while (batch.stepping() > 0) batch.step(step);
  Session kept(model, 1);
  batch.release(slot, &kept);
  EXPECT_EQ(batch.taken(), 0);
  kept.append({second.data(), nullptr, 1, static_cast<int64_t>(second.size())}, nullptr);
  GenerationOptions generation;
  generation.max_new_tokens = 6;
  const auto continued = kept.generate(generation);

  // The same conversation in one session throughout.
  auto reference = prefilled(model, first);
  GenerationOptions reply;
  reply.max_new_tokens = 5;
  reference->generate(reply);
  reference->append({second.data(), nullptr, 1, static_cast<int64_t>(second.size())}, nullptr);
  EXPECT_EQ(continued, reference->generate(generation));
  EXPECT_EQ(kept.tokens(), reference->tokens());
}

TEST(DecodeBatch, StepsAllocateNothing) {
  const auto model = tiny_model();
  if (!model) GTEST_SKIP() << "shared reference tiny model not found";
  DecodeBatch batch(model, 3, 128);
  SlotOptions greedy, sampled;
  greedy.max_new_tokens = sampled.max_new_tokens = 40;
  sampled.sampling = {true, 0.8, 20, 0.9, 1.2};
  sampled.seed = 7;
  batch.admit(*prefilled(model, prompt(5, 1)), greedy);
  batch.admit(*prefilled(model, prompt(17, 2)), sampled);
  batch.admit(*prefilled(model, prompt(9, 3)), greedy);
  std::vector<SlotToken> step;
  step.reserve(3);
  batch.step(step);  // sizes the workspace and the samplers' scratch
  batch.step(step);
  counting = true;
  for (int i = 0; i < 20; ++i) batch.step(step);
  counting = false;
  EXPECT_EQ(allocations.load(), 0);
  EXPECT_EQ(step.size(), 3U);
}

TEST(DecodeBatch, RefusesWhatDoesNotFit) {
  const auto model = tiny_model();
  if (!model) GTEST_SKIP() << "shared reference tiny model not found";
  EXPECT_THROW(DecodeBatch(model, 0, 16), std::exception);
  DecodeBatch batch(model, 1, 16);
  SlotOptions options;
  options.max_new_tokens = 10;
  EXPECT_THROW(batch.admit(*prefilled(model, prompt(8, 1)), options), std::exception);  // 8 + 9 > 16
  options.max_new_tokens = 9;
  batch.admit(*prefilled(model, prompt(8, 1)), options);
  EXPECT_THROW(batch.admit(*prefilled(model, prompt(2, 1)), options), std::exception);  // no free slot
  Session unfed(model, 1);
  batch.release(0);
  EXPECT_THROW(batch.admit(unfed, options), std::exception);
  EXPECT_THROW(batch.release(0), std::exception);
}

}  // namespace
}  // namespace qwen2audio
