// Trainer: one worker's meta-training rounds against the parameter servers.
//
// A round: take the next meta-batch of tasks, pull the embedding rows it touches (each unique key
// once, grouped into one table per width) and the dense tensors, compute the meta-gradient with the
// engine, push the row gradients and the dense gradients, wait for the acknowledgements.
//
// Prefetch: with `prefetch`, the next meta-batch is laid out and its pulls are sent right after this
// round's pushes, so they travel while the worker waits for acknowledgements and the round barrier.
// Each connection is ordered, so those pulls see this worker's own pushes; other workers' pushes of
// the same round may or may not have landed (staleness of at most one round, as under SSP with s=1).
//
// Not thread-safe; one per worker process.
#pragma once

#include <future>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/job.h"
#include "worker/kernels.h"
#include "worker/meta_learner.h"
#include "worker/param_client.h"
#include "worker/task_batch.h"
#include "worker/task_sampler.h"

namespace metaps::worker {

struct RoundStats {
  int tasks = 0;
  double loss = 0;  // mean query loss over the meta-batch, at the adapted weights
  uint64_t rows_pulled = 0;
  uint64_t rows_pushed = 0;
  int64_t flops = 0;
};

// Parameters as a worker sees them: weights = initial + server offset.
struct DenseParams {
  std::vector<float> weights;
  std::vector<float> alpha;  // Meta-SGD only
};

// Pulls the dense tensors and adds the job's initial values.
Result<DenseParams> PullDense(ParamClient& params, const JobModel& job);
// The dense parameters from the values the servers hold for "mlp" and (Meta-SGD) "alpha": the
// job's initial values added (worker/job.h). FailedPrecondition when a size does not match.
Result<DenseParams> DenseFromServerValues(const JobModel& job, std::vector<float> mlp,
                                          std::vector<float> alpha);

// One table's share of a batch's rows (the rows of one width) and its pull in flight.
struct TablePull {
  std::string table;
  std::vector<int64_t> ids;  // local row ids, in the order of `keys`
  std::vector<Key> keys;
  std::future<Result<std::vector<float>>> values;
};

// Pulls the rows of `keys` (each of width dims[i]) from their tables into a buffer laid out by
// `row_offsets` (as TaskBatch does). Returns the number of rows pulled.
Result<uint64_t> PullRows(ParamClient& params, std::span<const Key> keys, std::span<const int64_t> row_offsets,
                          std::vector<float>* values);

class Trainer {
 public:
  Trainer(const JobModel& job, TaskSampler sampler, Kernels* kernels, ParamClient* params, bool prefetch);

  // Runs round `step` (its clock value is stored with the pushed rows).
  Result<RoundStats> RunRound(uint64_t step);
  int64_t tasks_available() const { return static_cast<int64_t>(sampler_.tasks().size()); }

 private:
  struct Pending {
    TaskBatch batch;
    std::vector<TablePull> rows;  // one per table; the round pushes the same groups
    std::future<Result<std::vector<float>>> mlp, alpha;
  };
  Status Prepare(Pending* p);
  Result<uint64_t> Collect(Pending* p, std::vector<float>* rows, DenseParams* dense);

  const JobModel& job_;
  TaskSampler sampler_;
  ParamClient* params_;
  bool prefetch_;
  TaskBatchBuilder builder_;
  MetaLearner learner_;
  std::vector<float> init_weights_;
  std::optional<Pending> next_;
  std::vector<float> rows_;
  MetaGradient grad_;
};

}  // namespace metaps::worker
