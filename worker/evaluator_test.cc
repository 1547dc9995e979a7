// The label baselines of Evaluator (item_mean, global_mean) against values worked out by hand on a
// small split: means from the train users' events only, the global mean for unseen items, and the
// metrics over the held-out users' query rows.
#include "worker/evaluator.h"

#include <gtest/gtest.h>

#include <cmath>

#include "common/keys.h"
#include "worker/reference_kernels.h"

namespace metaps::worker {
namespace {

struct Fixture {
  data::Dataset dataset;
  data::Split split;
  JobModel job;
  ReferenceKernels kernels;

  // One one-hot field "item". Events are added in order; the returned index is the event's.
  explicit Fixture(Loss loss) : dataset({data::FieldSpec{.name = "item", .dim = 4}}) {
    job.model.fields = {FieldSpec{.name = "item", .dim = 4}};
    job.model.layers = {1};
    job.model.loss = loss;
  }
  uint32_t Add(uint64_t user, uint64_t item, float label) {
    const uint32_t e = static_cast<uint32_t>(dataset.size());
    dataset.BeginEvent(user, item, label, static_cast<int64_t>(e));
    dataset.AddKey(FeatureKey("item", std::to_string(item)));
    dataset.EndField();
    return e;
  }
};

TEST(EvaluatorBaselinesTest, ItemAndGlobalMeansComeFromTrainEventsOnly) {
  Fixture f(Loss::kMse);
  // Train: item 10 rated 4 and 5, item 20 rated 2, item 30 rated 3: item means 4.5, 2, 3; global 3.5.
  f.split.train.push_back({.user = 1, .events = {f.Add(1, 10, 4), f.Add(1, 20, 2)}});
  f.split.train.push_back({.user = 2, .events = {f.Add(2, 10, 5), f.Add(2, 30, 3)}});
  // Test user 3: its support (item 10 rated 1, item 20 rated 1) must not enter any mean. Query:
  // item 10 rated 3 (item mean 4.5), item 40 rated 4 (unseen: the global mean, 3.5).
  data::EvalTask t{.user = 3};
  t.support = {f.Add(3, 10, 1), f.Add(3, 20, 1)};
  t.query = {f.Add(3, 10, 3), f.Add(3, 40, 4)};
  // Test user 4: query item 20 rated 2 (item mean 2, error 0), item 30 rated 5 (item mean 3).
  data::EvalTask u{.user = 4};
  u.support = {f.Add(4, 30, 5)};
  u.query = {f.Add(4, 20, 2), f.Add(4, 30, 5)};
  f.split.test = {t, u};

  Evaluator evaluator(f.job, &f.kernels, f.dataset, /*ndcg_k=*/10);

  // Item means: errors 1.5, 0.5, 0, 2.
  const data::EvalMetrics item = evaluator.ItemMean(f.split, f.split.test);
  EXPECT_EQ(item.rows, 4u);
  EXPECT_EQ(item.users, 2u);
  EXPECT_NEAR(item.mae, (1.5 + 0.5 + 0 + 2) / 4, 1e-6);
  EXPECT_NEAR(item.rmse, std::sqrt((2.25 + 0.25 + 0 + 4) / 4), 1e-6);
  // User 3 ranks item 10 (4.5) above item 40 (3.5), labels 3 then 4; user 4 ranks item 30 (3)
  // above item 20 (2), labels 5 then 2, which is ideal.
  const double dcg3 = 3 + 4 / std::log2(3.0), ideal3 = 4 + 3 / std::log2(3.0);
  EXPECT_NEAR(item.ndcg, (dcg3 / ideal3 + 1.0) / 2, 1e-6);

  // The global mean, 3.5, everywhere: errors 0.5, 0.5, 1.5, 1.5.
  const data::EvalMetrics global = evaluator.GlobalMean(f.split, f.split.test);
  EXPECT_EQ(global.rows, 4u);
  EXPECT_NEAR(global.mae, 1.0, 1e-6);
  EXPECT_NEAR(global.rmse, std::sqrt((0.25 + 0.25 + 2.25 + 2.25) / 4), 1e-6);
  // Ties keep the input order: user 3 as above, user 4 ranks item 20 (label 2) above item 30 (5).
  const double dcg4 = 2 + 5 / std::log2(3.0), ideal4 = 5 + 2 / std::log2(3.0);
  EXPECT_NEAR(global.ndcg, (dcg3 / ideal3 + dcg4 / ideal4) / 2, 1e-6);
}

TEST(EvaluatorBaselinesTest, BinaryLabelsGiveClickRatesScoredByLoglossAndAuc) {
  Fixture f(Loss::kBce);
  // Train click rates: item 1 3 of 4, item 2 1 of 4; overall 4 of 8.
  f.split.train.push_back({.user = 1, .events = {f.Add(1, 1, 1), f.Add(1, 1, 1), f.Add(1, 2, 0), f.Add(1, 2, 0)}});
  f.split.train.push_back({.user = 2, .events = {f.Add(2, 1, 1), f.Add(2, 1, 0), f.Add(2, 2, 1), f.Add(2, 2, 0)}});
  data::EvalTask t{.user = 3};
  t.support = {f.Add(3, 2, 1)};
  t.query = {f.Add(3, 1, 1), f.Add(3, 2, 0), f.Add(3, 9, 1)};  // item 9 is unseen: 0.5
  f.split.validation = {t};

  Evaluator evaluator(f.job, &f.kernels, f.dataset, /*ndcg_k=*/10);
  const data::EvalMetrics item = evaluator.ItemMean(f.split, f.split.validation);
  ASSERT_TRUE(item.binary);
  EXPECT_NEAR(item.logloss, -(std::log(0.75) + std::log(1 - 0.25) + std::log(0.5)) / 3, 1e-6);
  // Positives score 0.75 and 0.5, the negative 0.25: every positive above it.
  EXPECT_NEAR(item.auc, 1.0, 1e-9);

  const data::EvalMetrics global = evaluator.GlobalMean(f.split, f.split.validation);
  EXPECT_NEAR(global.logloss, std::log(2.0), 1e-6);
  EXPECT_NEAR(global.auc, 0.5, 1e-9);  // one score for all: every pair a tie
}

}  // namespace
}  // namespace metaps::worker
