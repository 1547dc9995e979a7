// Evaluator against values worked out by hand: the label baselines (item_mean, global_mean) on a
// small split (means from the train users' events only, the global mean for unseen items), and a
// model's metrics on held-out tasks, unadapted and after the inner loop, for a linear model whose
// predictions and one SGD step are computed here in double.
#include "worker/evaluator.h"

#include <gtest/gtest.h>

#include <cmath>
#include <tuple>

#include "common/keys.h"
#include "worker/reference_kernels.h"
#include "worker/scorer.h"

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
  f.split.train.push_back(
      {.user = 1, .events = {f.Add(1, 1, 1), f.Add(1, 1, 1), f.Add(1, 2, 0), f.Add(1, 2, 0)}});
  f.split.train.push_back(
      {.user = 2, .events = {f.Add(2, 1, 1), f.Add(2, 1, 0), f.Add(2, 2, 1), f.Add(2, 2, 0)}});
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

// A linear model (layers = {1}) over two fields: "a" one-hot, and "b" a mean-pooled bag. Input
// x = [row(a) ; mean of rows(b)], prediction w . x + bias. A key without a row adds nothing.
struct LinearCase {
  JobModel job;
  ReferenceKernels kernels;
  data::Dataset dataset;  // unused by Evaluate; the evaluator needs one
  RowMap rows = {{1, {1.f, 2.f}}, {2, {0.5f, -1.f}}, {3, {2.f, 0.f}}, {4, {-1.f, 1.f}}};
  std::vector<float> w0 = {0.3f, -0.2f, 0.5f, 0.1f, 0.25f};  // W0 (4 x 1), then the bias

  LinearCase() {
    job.model.fields = {FieldSpec{.name = "a", .dim = 2},
                        FieldSpec{.name = "b", .dim = 2, .pooling = Pooling::kMean}};
    job.model.layers = {1};
  }
  static void Row(Task* t, Key a, std::vector<Key> b, float y) {
    const std::vector<std::vector<Key>> bags = {{a}, std::move(b)};
    t->AddRow(bags, y);
  }
  std::vector<double> Input(const Task& t, int r) const {
    std::vector<double> x(4, 0.0);
    for (int f = 0; f < 2; ++f) {
      const int32_t b = t.offsets[r * 2 + f], e = t.offsets[r * 2 + f + 1];
      for (int32_t i = b; i < e; ++i) {
        auto it = rows.find(t.keys[i]);
        if (it == rows.end()) continue;
        for (int d = 0; d < 2; ++d) x[2 * f + d] += it->second[d] / (f == 1 ? double(e - b) : 1.0);
      }
    }
    return x;
  }
  static double Linear(const std::vector<double>& w, const std::vector<double>& x) {
    double y = w[4];
    for (int i = 0; i < 4; ++i) y += w[i] * x[i];
    return y;
  }
};

Task TaskOf(std::initializer_list<std::tuple<Key, std::vector<Key>, float>> support,
            std::initializer_list<std::tuple<Key, std::vector<Key>, float>> query) {
  Task t;
  t.fields = 2;
  for (const auto& [a, b, y] : support) LinearCase::Row(&t, a, b, y);
  for (const auto& [a, b, y] : query) LinearCase::Row(&t, a, b, y);
  t.num_support = static_cast<int>(support.size());
  t.num_query = static_cast<int>(query.size());
  return t;
}

TEST(EvaluatorTest, UnadaptedPredictionsPoolTheRowsThroughTheNetwork) {
  LinearCase c;
  std::vector<Task> tasks = {TaskOf({{1, {2}, 9.f}}, {{1, {2, 3}, 1.f}, {3, {4, 99}, 0.f}}),
                             TaskOf({}, {{2, {}, -1.f}, {99, {1, 2, 3, 4}, 2.f}})};
  Evaluator evaluator(c.job, &c.kernels, c.dataset, 10);
  MetaOptions no_adapt;
  auto m = evaluator.Evaluate(tasks, DenseParams{.weights = c.w0}, c.rows, /*adapt=*/false, no_adapt);
  ASSERT_TRUE(m.ok()) << m.status().ToString();

  const std::vector<double> w(c.w0.begin(), c.w0.end());
  double abs_sum = 0, sq_sum = 0;
  int n = 0;
  for (const Task& t : tasks) {
    for (int r = t.num_support; r < t.rows(); ++r) {  // query rows only: the support row's 9 is not scored
      const double e = LinearCase::Linear(w, c.Input(t, r)) - t.labels[r];
      abs_sum += std::abs(e);
      sq_sum += e * e;
      ++n;
    }
  }
  EXPECT_EQ(m->rows, 4u);
  EXPECT_EQ(m->users, 2u);
  EXPECT_NEAR(m->mae, abs_sum / n, 1e-5);
  EXPECT_NEAR(m->rmse, std::sqrt(sq_sum / n), 1e-5);
}

TEST(EvaluatorTest, AdaptedPredictionsUseEachTasksOwnInnerLoopWeights) {
  // One inner SGD step on the support's mean squared error, per task:
  // w1 = w0 - lr * (2 / n) * sum over support rows of (w0 . x + bias - y) * [x ; 1].
  LinearCase c;
  std::vector<Task> tasks = {TaskOf({{1, {2}, 3.f}, {3, {4}, -2.f}}, {{1, {3}, 1.f}, {2, {4}, 0.5f}}),
                             TaskOf({{4, {1, 2}, 5.f}}, {{3, {1}, 2.f}, {4, {2}, -1.f}})};
  MetaOptions o;
  o.algo = Algo::kMaml;
  o.inner_steps = 1;
  o.inner_lr = 0.1f;
  Evaluator evaluator(c.job, &c.kernels, c.dataset, 10);
  auto m = evaluator.Evaluate(tasks, DenseParams{.weights = c.w0}, c.rows, /*adapt=*/true, o);
  ASSERT_TRUE(m.ok()) << m.status().ToString();

  const std::vector<double> w0(c.w0.begin(), c.w0.end());
  double abs_sum = 0, sq_sum = 0, abs_sum_w0 = 0;
  int n = 0;
  for (const Task& t : tasks) {
    std::vector<double> w1 = w0;
    for (int r = 0; r < t.num_support; ++r) {
      const std::vector<double> x = c.Input(t, r);
      const double g = 2.0 / t.num_support * (LinearCase::Linear(w0, x) - t.labels[r]);
      for (int i = 0; i < 4; ++i) w1[i] -= o.inner_lr * g * x[i];
      w1[4] -= o.inner_lr * g;
    }
    for (int r = t.num_support; r < t.rows(); ++r) {
      const std::vector<double> x = c.Input(t, r);
      const double e = LinearCase::Linear(w1, x) - t.labels[r];
      abs_sum += std::abs(e);
      sq_sum += e * e;
      abs_sum_w0 += std::abs(LinearCase::Linear(w0, x) - t.labels[r]);
      ++n;
    }
  }
  ASSERT_GT(std::abs(abs_sum - abs_sum_w0) / n, 0.05);  // the case tells adapted from unadapted
  EXPECT_NEAR(m->mae, abs_sum / n, 1e-5);
  EXPECT_NEAR(m->rmse, std::sqrt(sq_sum / n), 1e-5);
}

// Serving's Scorer: one SGD step on the user's support (Meta-SGD: with its learned per-weight
// rates), then each candidate scored with the adapted weights, worked out here in double.
TEST(ScorerTest, ScoresCandidatesWithTheWeightsAdaptedToTheSupport) {
  for (Algo algo : {Algo::kFomaml, Algo::kMaml, Algo::kReptile, Algo::kMetaSgd}) {
    SCOPED_TRACE(std::string(AlgoName(algo)));
    LinearCase c;
    c.job.meta.algo = algo;
    c.job.meta.inner_steps = 1;
    c.job.meta.inner_lr = 0.1f;
    DenseParams params{.weights = c.w0};
    if (algo == Algo::kMetaSgd) params.alpha = {0.05f, 0.2f, 0.1f, 0.3f, 0.15f};
    Scorer scorer(c.job, params, &c.kernels);
    Task t = TaskOf({{1, {2}, 3.f}, {3, {4, 1}, -2.f}}, {{2, {3}, 0.f}, {4, {}, 0.f}, {99, {1}, 0.f}});
    bool adapted = false;
    auto scores = scorer.Score(t, c.rows, &adapted);
    ASSERT_TRUE(scores.ok()) << scores.status();
    EXPECT_TRUE(adapted);
    std::vector<double> w1(c.w0.begin(), c.w0.end());
    const std::vector<double> w0 = w1;
    for (int r = 0; r < t.num_support; ++r) {
      const std::vector<double> x = c.Input(t, r);
      const double g = 2.0 / t.num_support * (LinearCase::Linear(w0, x) - t.labels[r]);
      for (int i = 0; i < 5; ++i) {
        const double rate = params.alpha.empty() ? 0.1 : params.alpha[i];
        w1[i] -= rate * g * (i < 4 ? x[i] : 1.0);
      }
    }
    ASSERT_EQ(scores->size(), 3u);
    for (int q = 0; q < 3; ++q) {
      const std::vector<double> x = c.Input(t, t.num_support + q);
      EXPECT_NEAR((*scores)[q], LinearCase::Linear(w1, x), 1e-5) << q;
      if (q < 2) EXPECT_GT(std::abs(LinearCase::Linear(w1, x) - LinearCase::Linear(w0, x)), 1e-3);
    }
  }
}

TEST(ScorerTest, WithoutSupportOrStepsTheInitializationScoresAndBadTasksAreRefused) {
  LinearCase c;
  c.job.meta.inner_steps = 3;
  Scorer scorer(c.job, DenseParams{.weights = c.w0}, &c.kernels);
  Task t = TaskOf({}, {{1, {2, 3}, 0.f}});
  bool adapted = true;
  auto scores = scorer.Score(t, c.rows, &adapted);
  ASSERT_TRUE(scores.ok()) << scores.status();
  EXPECT_FALSE(adapted);
  EXPECT_NEAR((*scores)[0], LinearCase::Linear({c.w0.begin(), c.w0.end()}, c.Input(t, 0)), 1e-6);
  Task none = TaskOf({{1, {2}, 1.f}}, {});
  EXPECT_EQ(scorer.Score(none, c.rows).status().code(), StatusCode::kInvalidArgument);
  Task wrong;
  wrong.fields = 1;
  wrong.num_query = 1;
  EXPECT_EQ(scorer.Score(wrong, c.rows).status().code(), StatusCode::kInvalidArgument);
}

TEST(JobModelJsonTest, RoundTripsAndNamesTheKeyThatIsWrong) {
  LinearCase c;
  c.job.meta.algo = Algo::kMetaSgd;
  c.job.meta.inner_steps = 4;
  c.job.meta.inner_lr = 0.03f;
  c.job.meta.adapt_last_layers = 1;
  c.job.meta.first_layer = FirstLayer::kLowRank;
  c.job.model.loss = Loss::kBce;
  c.job.init_seed = 1234567890123ull;
  auto back = JobModelFromJson(JobModelToJson(c.job));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(JobModelToJson(*back), JobModelToJson(c.job));
  EXPECT_EQ(back->model.fields[1].pooling, Pooling::kMean);
  EXPECT_EQ(back->meta.first_layer, FirstLayer::kLowRank);
  EXPECT_EQ(back->dense_tensors.at("alpha"), 5u);
  EXPECT_EQ(back->sparse_tables.at("emb2"), 2u);
  EXPECT_EQ(back->InitialWeights(), c.job.InitialWeights());
  nlohmann::json j = JobModelToJson(c.job);
  j["meta"]["algo"] = "sgd";
  auto bad = JobModelFromJson(j);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("model.meta.algo"), std::string::npos) << bad.status();
  j = JobModelToJson(c.job);
  j["layers"] = {4, 2};  // the output must be one wide
  EXPECT_FALSE(JobModelFromJson(j).ok());
  j = JobModelToJson(c.job);
  j["fields"][0].erase("dim");
  bad = JobModelFromJson(j);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("model.fields"), std::string::npos) << bad.status();
}

}  // namespace
}  // namespace metaps::worker
