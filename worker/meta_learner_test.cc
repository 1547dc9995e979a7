// MetaLearner beyond the golden cases: exact second-order gradients checked against central
// differences of the meta-loss on varied shapes, batching of tasks of different sizes, adaptation of
// only some layers, and argument errors.
#include "worker/meta_learner.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "worker/onednn_kernels.h"
#include "worker/reference_kernels.h"

namespace metaps::worker {
namespace {

struct Problem {
  ModelSpec model;
  std::vector<Task> tasks;
  std::map<Key, std::vector<float>> emb;
  std::vector<float> weights;
  std::vector<float> alpha;
};

// Random tasks over a small vocabulary per field (so rows repeat within and across tasks).
Problem MakeProblem(std::vector<FieldSpec> fields, std::vector<int> layers, Loss loss, int num_tasks,
                    std::mt19937& rng) {
  Problem p;
  p.model.fields = std::move(fields);
  p.model.layers = std::move(layers);
  p.model.loss = loss;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> support(2, 6), query(1, 4), bag(1, 3), vocab(0, 5), label(1, 5);
  const int nf = p.model.num_fields();
  for (int t = 0; t < num_tasks; ++t) {
    Task task;
    task.user = t;
    task.num_support = support(rng);
    task.num_query = query(rng);
    for (int r = 0; r < task.rows(); ++r) {
      std::vector<std::vector<Key>> bags(nf);
      for (int f = 0; f < nf; ++f) {
        const int size = p.model.fields[f].pooling == Pooling::kMean ? bag(rng) : 1;
        for (int j = 0; j < size; ++j) bags[f].push_back(Key(f) * 1000 + vocab(rng));
      }
      const float y = loss == Loss::kMse ? float(label(rng)) : float(rng() % 2);
      task.AddRow(bags, y);
    }
    for (int i = 0; i < static_cast<int>(task.keys.size()); ++i) {
      const Key k = task.keys[i];
      if (!p.emb.count(k)) {
        std::vector<float> v(p.model.fields[k / 1000].dim);
        for (float& x : v) x = 0.5f * normal(rng);
        p.emb[k] = v;
      }
    }
    p.tasks.push_back(std::move(task));
  }
  std::vector<int> w = p.model.widths();
  for (const TensorSlot& s : p.model.param_layout()) {
    const float scale = s.rows > 1 ? std::sqrt(2.0f / s.rows) : 0.1f;
    for (int64_t i = 0; i < s.size(); ++i) p.weights.push_back(scale * normal(rng));
  }
  std::uniform_real_distribution<float> rate(0.01f, 0.06f);
  for (size_t i = 0; i < p.weights.size(); ++i) p.alpha.push_back(rate(rng));
  return p;
}

std::vector<float> RowsFor(const TaskBatch& batch, const std::map<Key, std::vector<float>>& emb) {
  std::vector<float> rows;
  for (Key k : batch.keys) rows.insert(rows.end(), emb.at(k).begin(), emb.at(k).end());
  return rows;
}

struct Outcome {
  MetaGradient grad;
  TaskBatch batch;
  double meta_loss = 0;
};

Outcome RunBatch(const Problem& p, const MetaOptions& options, Kernels* kernels, std::vector<const Task*> tasks = {}) {
  if (tasks.empty()) {
    for (const Task& t : p.tasks) tasks.push_back(&t);
  }
  Outcome o;
  TaskBatchBuilder builder;
  Status st = builder.Build(p.model, tasks, &o.batch);
  EXPECT_TRUE(st.ok()) << st;
  MetaLearner learner(p.model, options, kernels);
  const std::vector<float> rows = RowsFor(o.batch, p.emb);
  const std::span<const float> alpha =
      options.algo == Algo::kMetaSgd ? std::span<const float>(p.alpha) : std::span<const float>();
  st = learner.Compute(o.batch, p.weights, alpha, rows, true, &o.grad);
  EXPECT_TRUE(st.ok()) << st;
  for (float l : o.grad.query_loss) o.meta_loss += l;
  o.meta_loss /= o.grad.query_loss.size();
  return o;
}

struct Variant {
  const char* name;
  std::vector<FieldSpec> fields;
  std::vector<int> layers;
  Loss loss;
  int steps;
  float lr;
  int adapt_last;
};

std::vector<Variant> Variants() {
  return {
      {"mse_two_hidden", {{"a", 3, Pooling::kSum}, {"b", 4, Pooling::kMean}}, {7, 5, 1}, Loss::kMse, 3, 0.05f, 0},
      {"bce_linear", {{"a", 2, Pooling::kSum}, {"b", 2, Pooling::kSum}, {"c", 3, Pooling::kMean}}, {1}, Loss::kBce,
       2, 0.5f, 0},
      {"bce_deep_last2", {{"a", 4, Pooling::kMean}}, {8, 6, 4, 1}, Loss::kBce, 4, 0.3f, 2},
      {"mse_one_hidden_last1", {{"a", 3, Pooling::kSum}, {"b", 2, Pooling::kSum}}, {6, 1}, Loss::kMse, 2, 0.05f, 1},
  };
}

// d(meta-loss) along a random direction, by the engine and by central differences (relu kinks
// aside, the meta-loss is smooth; float32 limits agreement to ~1e-3).
TEST(MetaLearnerTest, SecondOrderGradientsMatchCentralDifferences) {
  ReferenceKernels kernels;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (Algo algo : {Algo::kMaml, Algo::kMetaSgd}) {
    for (const Variant& v : Variants()) {
     for (FirstLayer first : {FirstLayer::kDense, FirstLayer::kLowRank}) {
      SCOPED_TRACE(std::string(AlgoName(algo)) + " " + v.name + (first == FirstLayer::kDense ? " dense" : " low-rank"));
      Problem p = MakeProblem(v.fields, v.layers, v.loss, 3, rng);
      MetaOptions options{.algo = algo, .inner_steps = v.steps, .inner_lr = v.lr, .adapt_last_layers = v.adapt_last,
                          .first_layer = first};
      Outcome base = RunBatch(p, options, &kernels);
      // One direction at a time: weights, embedding rows, alpha.
      for (int what = 0; what < (algo == Algo::kMetaSgd ? 3 : 2); ++what) {
        std::vector<float>* target = what == 0 ? &p.weights : what == 2 ? &p.alpha : nullptr;
        std::map<Key, std::vector<float>> dir_emb;
        std::vector<float> dir;
        double norm = 0;
        if (target) {
          dir.resize(target->size());
          for (float& x : dir) {
            x = normal(rng);
            norm += double(x) * x;
          }
        } else {
          for (Key k : base.batch.keys) {
            std::vector<float>& d = dir_emb[k];
            d.resize(p.emb[k].size());
            for (float& x : d) {
              x = normal(rng);
              norm += double(x) * x;
            }
          }
        }
        // A unit direction, so the step stays small enough not to cross many ReLU kinks.
        const float inv = static_cast<float>(1.0 / std::sqrt(norm));
        double predicted = 0;
        if (target) {
          const std::vector<float>& g = what == 0 ? base.grad.weights : base.grad.alpha;
          for (size_t i = 0; i < dir.size(); ++i) predicted += double(dir[i] *= inv) * g[i];
        } else {
          for (size_t i = 0; i < base.batch.keys.size(); ++i) {
            std::vector<float>& d = dir_emb[base.batch.keys[i]];
            for (size_t j = 0; j < d.size(); ++j) {
              predicted += double(d[j] *= inv) * base.grad.rows[base.batch.row_offsets[i] + j];
            }
          }
        }
        const double eps = what == 2 ? 1e-4 : 1e-3;
        auto shifted = [&](double s) {
          Problem q = p;
          if (target) {
            std::vector<float>& t = what == 0 ? q.weights : q.alpha;
            for (size_t i = 0; i < t.size(); ++i) t[i] += static_cast<float>(s * dir[i]);
          } else {
            for (auto& [k, d] : dir_emb) {
              for (size_t j = 0; j < d.size(); ++j) q.emb[k][j] += static_cast<float>(s * d[j]);
            }
          }
          return RunBatch(q, options, &kernels).meta_loss;
        };
        const double numeric = (shifted(eps) - shifted(-eps)) / (2 * eps);
        EXPECT_NEAR(predicted, numeric, 2e-2 * std::fabs(numeric) + 2e-3) << "direction over " << what;
      }
     }
    }
  }
}

// A meta-batch of tasks with different support/query sizes (so with padding) gives the mean of the
// tasks computed one by one, for every algorithm.
TEST(MetaLearnerTest, BatchedTasksEqualTheMeanOfSingleTasks) {
  auto made = OneDnnKernels::Create();
  ASSERT_TRUE(made.ok()) << made.status();
  Kernels* kernels = made->get();
  std::mt19937 rng(5);
  for (Algo algo : {Algo::kFomaml, Algo::kMaml, Algo::kReptile, Algo::kMetaSgd}) {
   for (FirstLayer first : {FirstLayer::kDense, FirstLayer::kLowRank}) {
    const Variant v = Variants()[0];
    SCOPED_TRACE(std::string(AlgoName(algo)) + (first == FirstLayer::kDense ? " dense" : " low-rank"));
    Problem p = MakeProblem(v.fields, v.layers, v.loss, 4, rng);
    MetaOptions options{.algo = algo, .inner_steps = 3, .inner_lr = 0.05f, .first_layer = first};
    Outcome all = RunBatch(p, options, kernels);
    std::vector<float> weights(p.weights.size(), 0.0f), alpha(p.alpha.size(), 0.0f);
    std::map<Key, std::vector<float>> rows;
    for (size_t t = 0; t < p.tasks.size(); ++t) {
      Outcome one = RunBatch(p, options, kernels, {&p.tasks[t]});
      EXPECT_NEAR(one.grad.query_loss[0], all.grad.query_loss[t], 1e-5 * (1 + std::fabs(one.grad.query_loss[0])));
      for (size_t i = 0; i < weights.size(); ++i) weights[i] += one.grad.weights[i] / p.tasks.size();
      for (size_t i = 0; i < one.grad.alpha.size(); ++i) alpha[i] += one.grad.alpha[i] / p.tasks.size();
      for (size_t i = 0; i < one.batch.keys.size(); ++i) {
        std::vector<float>& r = rows[one.batch.keys[i]];
        r.resize(one.batch.row_offsets[i + 1] - one.batch.row_offsets[i], 0.0f);
        for (size_t j = 0; j < r.size(); ++j) r[j] += one.grad.rows[one.batch.row_offsets[i] + j] / p.tasks.size();
      }
      for (size_t i = 0; i < p.weights.size(); ++i) {
        EXPECT_NEAR(one.grad.adapted[i], all.grad.adapted[t * p.weights.size() + i], 1e-5);
      }
    }
    for (size_t i = 0; i < weights.size(); ++i) EXPECT_NEAR(weights[i], all.grad.weights[i], 1e-4) << i;
    if (algo == Algo::kMetaSgd) {
      ASSERT_EQ(all.grad.alpha.size(), alpha.size());
      for (size_t i = 0; i < alpha.size(); ++i) EXPECT_NEAR(alpha[i], all.grad.alpha[i], 1e-4) << i;
    }
    ASSERT_EQ(rows.size(), all.batch.keys.size());
    for (size_t i = 0; i < all.batch.keys.size(); ++i) {
      const std::vector<float>& r = rows[all.batch.keys[i]];
      for (size_t j = 0; j < r.size(); ++j) EXPECT_NEAR(r[j], all.grad.rows[all.batch.row_offsets[i] + j], 1e-4);
    }
   }
  }
}

// The two forms of the first layer are the same maths: on the benchmark's shapes (few rows, a wide
// input) they agree to float32 rounding for every algorithm.
TEST(MetaLearnerTest, LowRankFirstLayerEqualsDense) {
  auto made = OneDnnKernels::Create();
  ASSERT_TRUE(made.ok()) << made.status();
  std::mt19937 rng(21);
  Problem p = MakeProblem({{"a", 16, Pooling::kSum}, {"b", 16, Pooling::kMean}, {"c", 16, Pooling::kSum}}, {16, 8, 1},
                          Loss::kMse, 5, rng);
  for (Algo algo : {Algo::kFomaml, Algo::kMaml, Algo::kReptile}) {
    SCOPED_TRACE(AlgoName(algo));
    Outcome dense = RunBatch(p, {.algo = algo, .inner_steps = 4, .inner_lr = 0.02f, .first_layer = FirstLayer::kDense},
                             made->get());
    Outcome low = RunBatch(p, {.algo = algo, .inner_steps = 4, .inner_lr = 0.02f, .first_layer = FirstLayer::kLowRank},
                           made->get());
    EXPECT_LT(low.grad.flops, dense.grad.flops);
    auto close = [](const std::vector<float>& a, const std::vector<float>& b) {
      double d = 0, n = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        d += double(a[i] - b[i]) * (a[i] - b[i]);
        n += double(b[i]) * b[i];
      }
      return std::sqrt(d / std::max(n, 1e-30));
    };
    EXPECT_LT(close(low.grad.weights, dense.grad.weights), 1e-4);
    EXPECT_LT(close(low.grad.rows, dense.grad.rows), 1e-4);
    EXPECT_LT(close(low.grad.adapted, dense.grad.adapted), 1e-5);
    EXPECT_LT(close(low.grad.query_loss, dense.grad.query_loss), 1e-5);
  }
}

TEST(MetaLearnerTest, WithoutInnerStepsEveryGradientAlgorithmIsThePlainGradient) {
  ReferenceKernels kernels;
  std::mt19937 rng(3);
  const Variant v = Variants()[0];
  Problem p = MakeProblem(v.fields, v.layers, v.loss, 2, rng);
  Outcome fo = RunBatch(p, {.algo = Algo::kFomaml, .inner_steps = 0}, &kernels);
  Outcome so = RunBatch(p, {.algo = Algo::kMaml, .inner_steps = 0}, &kernels);
  for (size_t i = 0; i < fo.grad.weights.size(); ++i) EXPECT_NEAR(fo.grad.weights[i], so.grad.weights[i], 1e-6);
  for (size_t i = 0; i < fo.grad.rows.size(); ++i) EXPECT_NEAR(fo.grad.rows[i], so.grad.rows[i], 1e-6);
}

TEST(MetaLearnerTest, AdaptingTheLastLayersLeavesTheOthersAtTheirInitialValue) {
  ReferenceKernels kernels;
  std::mt19937 rng(9);
  const Variant v = Variants()[0];  // layers 7-5-1: tensors W0 b0 W1 b1 W2 b2
  Problem p = MakeProblem(v.fields, v.layers, v.loss, 2, rng);
  Outcome o = RunBatch(p, {.algo = Algo::kMaml, .inner_steps = 2, .inner_lr = 0.1f, .adapt_last_layers = 1}, &kernels);
  const auto slots = p.model.param_layout();
  const size_t frozen_end = slots[4].offset, n = p.weights.size();
  for (size_t t = 0; t < p.tasks.size(); ++t) {
    for (size_t i = 0; i < frozen_end; ++i) EXPECT_EQ(o.grad.adapted[t * n + i], p.weights[i]);
    double moved = 0;
    for (size_t i = frozen_end; i < n; ++i) moved += std::fabs(o.grad.adapted[t * n + i] - p.weights[i]);
    EXPECT_GT(moved, 0);
  }
}

TEST(MetaLearnerTest, RejectsInputsOfTheWrongSize) {
  ReferenceKernels kernels;
  std::mt19937 rng(1);
  const Variant v = Variants()[0];
  Problem p = MakeProblem(v.fields, v.layers, v.loss, 1, rng);
  TaskBatchBuilder builder;
  TaskBatch batch;
  const Task* tasks[] = {&p.tasks[0]};
  ASSERT_TRUE(builder.Build(p.model, tasks, &batch).ok());
  std::vector<float> rows = RowsFor(batch, p.emb);
  MetaGradient g;
  MetaLearner maml(p.model, {.algo = Algo::kMaml}, &kernels);
  std::vector<float> short_weights(p.weights.begin(), p.weights.end() - 1);
  EXPECT_EQ(maml.Compute(batch, short_weights, {}, rows, false, &g).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(maml.Compute(batch, p.weights, {}, std::span<const float>(rows).first(1), false, &g).code(),
            StatusCode::kInvalidArgument);
  MetaLearner metasgd(p.model, {.algo = Algo::kMetaSgd}, &kernels);
  EXPECT_EQ(metasgd.Compute(batch, p.weights, {}, rows, false, &g).code(), StatusCode::kInvalidArgument);
}

TEST(MetaLearnerTest, OptionsComeFromConfigWithKeysNamedInErrors) {
  auto c = Config::ParseString("[meta]\nalgo = \"metasgd\"\ninner_steps = 3\ninner_lr = 0.2\nadapt = \"last:2\"\n");
  ASSERT_TRUE(c.ok());
  auto o = MetaOptions::FromConfig(*c->GetTable("meta"));
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->algo, Algo::kMetaSgd);
  EXPECT_EQ(o->inner_steps, 3);
  EXPECT_FLOAT_EQ(o->inner_lr, 0.2f);
  EXPECT_EQ(o->adapt_last_layers, 2);
  auto bad = Config::ParseString("[meta]\nadapt = \"first:1\"\n");
  auto e = MetaOptions::FromConfig(*bad->GetTable("meta"));
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.status().message().find("meta.adapt"), std::string::npos) << e.status();
  auto m = Config::ParseString(
      "[model]\nlayers = [64, 1]\nloss = \"bce\"\n[[model.fields]]\nname = \"user\"\ndim = 8\n"
      "[[model.fields]]\nname = \"genre\"\ndim = 4\npooling = \"mean\"\n");
  ASSERT_TRUE(m.ok()) << m.status();
  auto spec = ModelSpec::FromConfig(*m->GetTable("model"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->input_width(), 12);
  EXPECT_EQ(spec->fields[1].pooling, Pooling::kMean);
  EXPECT_EQ(spec->num_params(), 12 * 64 + 64 + 64 + 1);
}

}  // namespace
}  // namespace metaps::worker
