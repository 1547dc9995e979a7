#include "worker/evaluator.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "common/keys.h"
#include "worker/adam.h"
#include "worker/scorer.h"

namespace metaps::worker {

Result<BaselineOptions> BaselineOptions::FromConfig(const Config& b) {
  BaselineOptions o;
  METAPS_RETURN_IF_ERROR(b.CheckKnownKeys({"epochs", "rows_per_step", "lr", "seed", "finetune_lrs"}));
  if (b.Has("finetune_lrs")) {
    METAPS_ASSIGN_OR_RETURN(Config::Floats lrs, b.GetDoubleArray("finetune_lrs"));
    if (lrs.empty()) return InvalidArgument(b.Path("finetune_lrs") + ": needs at least one rate");
    o.finetune_lrs.assign(lrs.begin(), lrs.end());
  }
  METAPS_ASSIGN_OR_RETURN(int64_t e, b.GetIntIn("epochs", o.epochs, 0, 1000));
  METAPS_ASSIGN_OR_RETURN(int64_t r, b.GetIntIn("rows_per_step", o.rows_per_step, 1, 1 << 20));
  METAPS_ASSIGN_OR_RETURN(double lr, b.GetDouble("lr", o.lr));
  METAPS_ASSIGN_OR_RETURN(int64_t seed, b.GetInt("seed", static_cast<int64_t>(o.seed)));
  o.epochs = static_cast<int>(e);
  o.rows_per_step = static_cast<int>(r);
  o.lr = static_cast<float>(lr);
  o.seed = static_cast<uint64_t>(seed);
  return o;
}

Evaluator::Evaluator(const JobModel& job, Kernels* kernels, const data::Dataset& dataset, size_t ndcg_k)
    : job_(job), kernels_(kernels), dataset_(dataset), ndcg_k_(ndcg_k), layout_(job.model.param_layout()) {}

std::vector<Task> Evaluator::Tasks(const std::vector<data::EvalTask>& users) const {
  std::vector<Task> out;
  out.reserve(users.size());
  for (const auto& u : users) out.push_back(MakeTask(dataset_, u.user, u.support, u.query));
  return out;
}

std::vector<Key> Evaluator::Keys(const std::vector<Task>& tasks) {
  std::vector<Key> keys;
  for (const auto& t : tasks) keys.insert(keys.end(), t.keys.begin(), t.keys.end());
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  return keys;
}

float Evaluator::Predict(const Task& t, int row, const float* w, const RowMap& rows) const {
  return PredictRow(job_.model, layout_, t, row, w, rows);
}

Result<data::EvalMetrics> Evaluator::Evaluate(const std::vector<Task>& tasks, const DenseParams& params,
                                              const RowMap& rows, bool adapt, const MetaOptions& adapt_options) {
  data::MetricsAccumulator acc(ndcg_k_, binary());
  MetaLearner learner(job_.model, adapt_options, kernels_);
  TaskBatchBuilder builder;
  TaskBatch batch;
  MetaGradient grad;
  std::vector<float> values;
  const size_t chunk = 32;
  const int64_t p = job_.model.num_params();
  for (size_t start = 0; start < tasks.size(); start += chunk) {
    size_t n = std::min(chunk, tasks.size() - start);
    std::vector<const Task*> ptrs;
    for (size_t i = 0; i < n; ++i) ptrs.push_back(&tasks[start + i]);
    if (adapt) {
      METAPS_RETURN_IF_ERROR(builder.Build(job_.model, ptrs, &batch));
      values.assign(batch.num_values(), 0.f);
      for (size_t k = 0; k < batch.keys.size(); ++k) {
        auto it = rows.find(batch.keys[k]);
        if (it != rows.end()) std::copy(it->second.begin(), it->second.end(), values.begin() + batch.row_offsets[k]);
      }
      METAPS_RETURN_IF_ERROR(learner.Compute(batch, params.weights, params.alpha, values, true, &grad));
    }
    for (size_t i = 0; i < n; ++i) {
      const Task& t = *ptrs[i];
      const float* w = adapt ? grad.adapted.data() + static_cast<int64_t>(i) * p : params.weights.data();
      std::vector<float> labels, preds;
      for (int r = t.num_support; r < t.rows(); ++r) {
        labels.push_back(t.labels[r]);
        preds.push_back(Predict(t, r, w, rows));
      }
      acc.AddUser(labels, preds);
    }
  }
  return acc.Compute();
}

Result<std::pair<DenseParams, RowMap>> Evaluator::TrainGlobal(const data::Split& split, const BaselineOptions& o) {
  // Plain minibatch training: each step is one "task" per chunk of rows whose support and query are
  // the same rows, with an inner rate of zero, so the engine returns the ordinary gradient at w0.
  MetaOptions plain = job_.meta;
  plain.algo = Algo::kFomaml;
  plain.inner_steps = 1;
  plain.inner_lr = 0.f;
  MetaLearner learner(job_.model, plain, kernels_);
  std::vector<uint32_t> events;
  for (const auto& u : split.train) events.insert(events.end(), u.events.begin(), u.events.end());
  DenseParams params;
  params.weights = job_.InitialWeights();
  RowMap rows;
  std::mt19937_64 rng(o.seed);
  Adam adam(AdamOptions{.lr = o.lr});
  std::vector<float> mw(params.weights.size(), 0.f), vw(params.weights.size(), 0.f);
  std::unordered_map<Key, std::pair<std::vector<float>, std::vector<float>>> moments;
  TaskBatchBuilder builder;
  TaskBatch batch;
  MetaGradient grad;
  std::vector<float> values;
  const int rows_per_task = 8;
  const int tasks_per_step = std::max(1, o.rows_per_step / rows_per_task);
  int64_t step = 0;
  auto row_of = [&](Key k, int dim) -> std::vector<float>& {
    auto [it, fresh] = rows.try_emplace(k);
    if (fresh) {
      // Deterministic small initial values, like the servers' initializer.
      std::mt19937_64 r(Mix64(k ^ o.seed));
      std::normal_distribution<float> n(0.f, o.init_scale);
      it->second.resize(dim);
      for (float& v : it->second) v = n(r);
    }
    return it->second;
  };
  for (int epoch = 0; epoch < o.epochs; ++epoch) {
    std::shuffle(events.begin(), events.end(), rng);
    for (size_t start = 0; start < events.size(); start += static_cast<size_t>(rows_per_task) * tasks_per_step) {
      std::vector<Task> tasks;
      for (int t = 0; t < tasks_per_step; ++t) {
        size_t b = start + static_cast<size_t>(t) * rows_per_task;
        if (b >= events.size()) break;
        size_t e = std::min(events.size(), b + rows_per_task);
        std::span<const uint32_t> ev(events.data() + b, e - b);
        tasks.push_back(MakeTask(dataset_, 0, ev, ev));
      }
      std::vector<const Task*> ptrs;
      for (auto& t : tasks) ptrs.push_back(&t);
      METAPS_RETURN_IF_ERROR(builder.Build(job_.model, ptrs, &batch));
      values.resize(batch.num_values());
      for (size_t k = 0; k < batch.keys.size(); ++k) {
        int dim = static_cast<int>(batch.row_offsets[k + 1] - batch.row_offsets[k]);
        auto& r = row_of(batch.keys[k], dim);
        std::copy(r.begin(), r.end(), values.begin() + batch.row_offsets[k]);
      }
      METAPS_RETURN_IF_ERROR(learner.Compute(batch, params.weights, {}, values, false, &grad));
      Adam::Step s = adam.At(++step);
      adam.Update(params.weights, grad.weights, mw, vw, s);
      for (size_t k = 0; k < batch.keys.size(); ++k) {
        int64_t b = batch.row_offsets[k], e = batch.row_offsets[k + 1];
        auto& r = rows[batch.keys[k]];
        auto& [m, v] = moments[batch.keys[k]];
        m.resize(e - b, 0.f);
        v.resize(e - b, 0.f);
        adam.Update(r, std::span<const float>(grad.rows.data() + b, e - b), m, v, s);
      }
    }
  }
  return std::make_pair(std::move(params), std::move(rows));
}

namespace {

// Metrics of the query rows of `users`, each row's prediction given by `predict(event)`.
template <typename Predict>
data::EvalMetrics ScoreQueries(const data::Dataset& dataset, const std::vector<data::EvalTask>& users,
                               size_t ndcg_k, bool binary, Predict predict) {
  data::MetricsAccumulator acc(ndcg_k, binary);
  std::vector<float> labels, preds;
  for (const auto& u : users) {
    labels.clear();
    preds.clear();
    for (uint32_t e : u.query) {
      labels.push_back(dataset.label(e));
      preds.push_back(predict(e));
    }
    acc.AddUser(labels, preds);
  }
  return acc.Compute();
}

// The mean label of the train users' events (0 without any).
float MeanTrainLabel(const data::Dataset& dataset, const data::Split& split) {
  double sum = 0;
  int64_t n = 0;
  for (const auto& u : split.train) {
    for (uint32_t e : u.events) {
      sum += dataset.label(e);
      ++n;
    }
  }
  return n ? static_cast<float>(sum / n) : 0.f;
}

}  // namespace

data::EvalMetrics Evaluator::ItemMean(const data::Split& split,
                                      const std::vector<data::EvalTask>& users) const {
  std::unordered_map<uint64_t, std::pair<double, int64_t>> items;  // item -> label sum, count
  for (const auto& u : split.train) {
    for (uint32_t e : u.events) {
      auto& s = items[dataset_.item(e)];
      s.first += dataset_.label(e);
      ++s.second;
    }
  }
  const float global = MeanTrainLabel(dataset_, split);
  return ScoreQueries(dataset_, users, ndcg_k_, binary(), [&](uint32_t e) {
    auto it = items.find(dataset_.item(e));
    return it == items.end() ? global : static_cast<float>(it->second.first / it->second.second);
  });
}

data::EvalMetrics Evaluator::GlobalMean(const data::Split& split,
                                        const std::vector<data::EvalTask>& users) const {
  const float global = MeanTrainLabel(dataset_, split);
  return ScoreQueries(dataset_, users, ndcg_k_, binary(), [&](uint32_t) { return global; });
}

nlohmann::json Evaluator::ToJson(const data::EvalMetrics& m) const {
  nlohmann::json j = {{"mae", m.mae}, {"rmse", m.rmse}, {"ndcg@" + std::to_string(ndcg_k_), m.ndcg},
                      {"rows", m.rows}, {"users", m.users}};
  if (m.binary) {
    j["auc"] = m.auc;
    j["logloss"] = m.logloss;
  }
  return j;
}

}  // namespace metaps::worker
