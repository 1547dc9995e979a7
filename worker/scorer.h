// Scorer: what serving computes per request. It adapts the meta-learned initialization to one
// user's few events with the job's own inner loop (algorithm, steps, rate; Meta-SGD's learned
// rates) and scores candidate events with the adapted MLP, exactly as evaluation scores a held-out
// user's query events (worker/evaluator.h). Not thread-safe: one per thread, or a lock around it.
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "common/keys.h"
#include "common/status.h"
#include "worker/job.h"
#include "worker/kernels.h"
#include "worker/meta_learner.h"
#include "worker/task_batch.h"
#include "worker/trainer.h"

namespace metaps::worker {

using RowMap = std::unordered_map<Key, std::vector<float>>;

// The model's prediction for row `row` of `task`: pooled embedding rows through the MLP with the
// flat weights `w` (a probability for BCE). Keys missing from `rows` count as zero vectors.
// `layout` is model.param_layout().
float PredictRow(const ModelSpec& model, std::span<const TensorSlot> layout, const Task& task, int row,
                 const float* w, const RowMap& rows);

class Scorer {
 public:
  // REQUIRES: kernels outlives this object; params match job (weights, and alpha for Meta-SGD).
  Scorer(const JobModel& job, DenseParams params, Kernels* kernels);

  // `task`: rows [0, num_support) are the user's events, with labels, to adapt on (there may be
  // none: then nothing adapts); rows [num_support, rows()) are the candidates to score (their
  // labels are ignored; at least one). `rows` holds the embedding rows of the task's keys.
  // Returns one score per candidate. *adapted (optional) tells whether an inner loop ran.
  Result<std::vector<float>> Score(const Task& task, const RowMap& rows, bool* adapted = nullptr);

  const JobModel& job() const { return job_; }

 private:
  JobModel job_;
  DenseParams params_;
  MetaLearner learner_;
  std::vector<TensorSlot> layout_;
  TaskBatchBuilder builder_;
  TaskBatch batch_;
  MetaGradient grad_;
  std::vector<float> values_;
};

}  // namespace metaps::worker
