// The sampler's processed scores (transformers' output_scores) and token suppression (min_new_tokens).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "generate/sampler.h"

namespace qwen2audio {
namespace {

constexpr float kRemoved = -std::numeric_limits<float>::infinity();

TEST(Sampler, SuppressedTokensCannotBeChosen) {
  Sampler sampler(4);
  const std::vector<float> logits = {0.0f, 5.0f, 1.0f, 2.0f};
  SamplingOptions greedy;
  EXPECT_EQ(sampler.next_token(logits.data(), {}, greedy), 1);
  const std::vector<int64_t> suppressed = {1};
  std::vector<float> processed(4);
  EXPECT_EQ(sampler.next_token(logits.data(), {}, greedy, &suppressed, processed.data()), 3);
  EXPECT_EQ(processed, (std::vector<float>{0.0f, kRemoved, 1.0f, 2.0f}));

  SamplingOptions sampling;
  sampling.do_sample = true;
  sampler.seed(7);
  for (int draw = 0; draw < 200; ++draw) EXPECT_NE(sampler.next_token(logits.data(), {}, sampling, &suppressed), 1);
}

TEST(Sampler, ProcessedScoresFollowPenaltyTemperatureTopKAndTopP) {
  Sampler sampler(5);
  const std::vector<float> logits = {4.0f, 3.0f, 2.0f, 1.0f, -2.0f};
  SamplingOptions options;
  options.do_sample = true;
  options.repetition_penalty = 2.0;  // token 0: 4 / 2 = 2; token 4: -2 * 2 = -4
  options.temperature = 0.5;
  options.top_k = 3;
  std::vector<float> processed(5);
  sampler.seed(1);
  const int64_t token = sampler.next_token(logits.data(), {0, 4, 0}, options, nullptr, processed.data());
  // After penalty and temperature: {4, 6, 4, 2, -8}; top-3 keeps 6 and the tied 4s.
  EXPECT_EQ(processed, (std::vector<float>{4.0f, 6.0f, 4.0f, kRemoved, kRemoved}));
  EXPECT_TRUE(token == 0 || token == 1 || token == 2);

  // top_p: softmax of {4, 6, 4} is {0.107, 0.787, 0.107}; 0.7 keeps the 6 only once the low tail of
  // cumulative 0.21 (<= 0.3) is dropped.
  options.top_p = 0.7;
  std::vector<float> nucleus(5);
  sampler.process(logits.data(), {0, 4}, options, nullptr, nucleus.data());
  EXPECT_EQ(nucleus, (std::vector<float>{kRemoved, 6.0f, kRemoved, kRemoved, kRemoved}));
  sampler.seed(3);
  for (int draw = 0; draw < 50; ++draw) EXPECT_EQ(sampler.next_token(logits.data(), {0, 4}, options), 1);
}

TEST(Sampler, ProcessingWithoutDrawingLeavesTheRandomSequenceAlone) {
  const std::vector<float> logits = {1.0f, 1.1f, 0.9f, 1.05f};
  SamplingOptions options;
  options.do_sample = true;
  Sampler plain(4), recorded(4);
  plain.seed(11);
  recorded.seed(11);
  std::vector<float> scores(4);
  for (int step = 0; step < 100; ++step) {
    recorded.process(logits.data(), {}, options, nullptr, scores.data());
    EXPECT_EQ(plain.next_token(logits.data(), {}, options), recorded.next_token(logits.data(), {}, options));
  }
}

}  // namespace
}  // namespace qwen2audio
