// Evaluation on held-out users (validation or test): adapt on each user's support events, score
// the query events, and compare with baselines on the same rows.
//
// Methods (report.json names):
//   meta             the meta-learned initialization adapted on the support by the job's inner loop
//   global           the same network trained without meta-learning (plain minibatch Adam on every
//                    event of the train users), not adapted
//   global_finetune  `global` fine-tuned on each user's support (same inner loop, plain SGD)
//   item_mean        the item's mean training label (global mean for unseen items)
//   global_mean      the mean training label
// Metrics: MAE, RMSE, nDCG@k within each user's query items, and AUC and logloss for binary labels
// (scores are probabilities there). Not thread-safe.
#pragma once

#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "worker/data/metrics.h"
#include "worker/data/split.h"
#include "worker/job.h"
#include "worker/kernels.h"
#include "worker/scorer.h"
#include "worker/trainer.h"

namespace metaps::worker {

struct BaselineOptions {
  int epochs = 3;
  int rows_per_step = 256;
  float lr = 0.005f;
  uint64_t seed = 11;
  float init_scale = 0.01f;
  // Candidate inner rates for global_finetune; the best on the validation users is used.
  std::vector<float> finetune_lrs = {0.001f, 0.003f, 0.01f, 0.03f, 0.1f};
  static Result<BaselineOptions> FromConfig(const Config& baseline);
};

class Evaluator {
 public:
  Evaluator(const JobModel& job, Kernels* kernels, const data::Dataset& dataset, size_t ndcg_k);

  // The tasks of `users`: support and query rows as the split made them.
  std::vector<Task> Tasks(const std::vector<data::EvalTask>& users) const;
  // Every key the tasks touch, for pulling their rows.
  static std::vector<Key> Keys(const std::vector<Task>& tasks);

  // Metrics of a model (weights, alpha, rows) on `tasks`, adapted on the support when `adapt`.
  // `adapt_options` is the inner loop used (the job's, or plain SGD for fine-tuning).
  Result<data::EvalMetrics> Evaluate(const std::vector<Task>& tasks, const DenseParams& params, const RowMap& rows,
                                     bool adapt, const MetaOptions& adapt_options);

  // Trains the no-meta network on the train users' events; returns its weights and rows.
  Result<std::pair<DenseParams, RowMap>> TrainGlobal(const data::Split& split, const BaselineOptions& options);

  data::EvalMetrics ItemMean(const data::Split& split, const std::vector<data::EvalTask>& users) const;
  data::EvalMetrics GlobalMean(const data::Split& split, const std::vector<data::EvalTask>& users) const;

  nlohmann::json ToJson(const data::EvalMetrics& m) const;

 private:
  // Prediction of one row: pooled embeddings through the MLP with `w` (sigmoid for BCE).
  float Predict(const Task& t, int row, const float* w, const RowMap& rows) const;
  bool binary() const { return job_.model.loss == Loss::kBce; }

  const JobModel& job_;
  Kernels* kernels_;
  const data::Dataset& dataset_;
  size_t ndcg_k_;
  std::vector<TensorSlot> layout_;
};

}  // namespace metaps::worker
