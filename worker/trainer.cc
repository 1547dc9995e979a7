#include "worker/trainer.h"

#include <cstring>
#include <map>
#include <string>

namespace metaps::worker {
namespace {

// Groups a batch's local rows by width (= table); returns the local ids per group.
void GroupByWidth(std::span<const int64_t> row_offsets, std::map<uint32_t, std::vector<int64_t>>* groups) {
  for (size_t i = 0; i + 1 < row_offsets.size(); ++i) {
    (*groups)[static_cast<uint32_t>(row_offsets[i + 1] - row_offsets[i])].push_back(static_cast<int64_t>(i));
  }
}

// Copies a table's pulled values `v` (the rows of local ids `ids`, in that order) to their places
// in `rows`, laid out by `offsets`. A reply of another size (a server whose table has another dim
// than this job's model) is an error naming the table, not a read past its end.
Status ScatterRows(const std::string& table, const std::vector<float>& v, std::span<const int64_t> ids,
                   std::span<const int64_t> offsets, float* rows) {
  size_t want = 0;
  for (int64_t id : ids) want += static_cast<size_t>(offsets[id + 1] - offsets[id]);
  if (v.size() != want) {
    return FailedPrecondition("table '" + table + "': the pull returned " + std::to_string(v.size()) +
                              " values for " + std::to_string(ids.size()) + " rows, expected " +
                              std::to_string(want));
  }
  size_t pos = 0;
  for (int64_t id : ids) {
    const int64_t w = offsets[id + 1] - offsets[id];
    std::memcpy(rows + offsets[id], v.data() + pos, w * sizeof(float));
    pos += w;
  }
  return Status::Ok();
}

// The server keeps offsets from the job's initial values: weights = initial + offset, Meta-SGD's
// rates = inner_lr + offset (worker/job.h).
Status AddInitialValues(const JobModel& job, std::span<const float> init, DenseParams* d) {
  if (d->weights.size() != init.size()) {
    return FailedPrecondition("server tensor 'mlp' has " + std::to_string(d->weights.size()) +
                              " values, the model has " + std::to_string(init.size()));
  }
  for (size_t i = 0; i < init.size(); ++i) d->weights[i] += init[i];
  if (!d->alpha.empty() && d->alpha.size() != init.size()) {
    return FailedPrecondition("server tensor 'alpha' has " + std::to_string(d->alpha.size()) +
                              " values, the model has " + std::to_string(init.size()));
  }
  for (float& a : d->alpha) a += job.meta.inner_lr;
  return Status::Ok();
}

}  // namespace

Result<DenseParams> PullDense(ParamClient& params, const JobModel& job) {
  DenseParams d;
  auto mlp = params.PullDense("mlp");
  std::future<Result<std::vector<float>>> alpha;
  if (job.dense_tensors.count("alpha")) alpha = params.PullDense("alpha");
  METAPS_ASSIGN_OR_RETURN(d.weights, mlp.get());
  if (alpha.valid()) {
    METAPS_ASSIGN_OR_RETURN(d.alpha, alpha.get());
  }
  METAPS_RETURN_IF_ERROR(AddInitialValues(job, job.InitialWeights(), &d));
  return d;
}

Result<uint64_t> PullRows(ParamClient& params, std::span<const Key> keys, std::span<const int64_t> row_offsets,
                          std::vector<float>* values) {
  std::map<uint32_t, std::vector<int64_t>> groups;
  GroupByWidth(row_offsets, &groups);
  values->resize(row_offsets.back());
  std::vector<std::pair<uint32_t, std::future<Result<std::vector<float>>>>> pulls;
  for (auto& [dim, ids] : groups) {
    std::vector<Key> k(ids.size());
    for (size_t j = 0; j < ids.size(); ++j) k[j] = keys[ids[j]];
    pulls.emplace_back(dim, params.Pull(JobModel::TableFor(dim), k));
  }
  uint64_t rows = 0;
  for (auto& [dim, fut] : pulls) {
    METAPS_ASSIGN_OR_RETURN(std::vector<float> v, fut.get());
    const std::vector<int64_t>& ids = groups[dim];
    METAPS_RETURN_IF_ERROR(ScatterRows(JobModel::TableFor(dim), v, ids, row_offsets, values->data()));
    rows += ids.size();
  }
  return rows;
}

Trainer::Trainer(const JobModel& job, TaskSampler sampler, Kernels* kernels, ParamClient* params, bool prefetch)
    : job_(job),
      sampler_(std::move(sampler)),
      params_(params),
      prefetch_(prefetch),
      learner_(job.model, job.meta, kernels),
      init_weights_(job.InitialWeights()) {}

Status Trainer::Prepare(Pending* p) {
  std::vector<const Task*> tasks = sampler_.NextMetaBatch();
  if (tasks.empty()) return FailedPrecondition("this worker has no training tasks");
  METAPS_RETURN_IF_ERROR(builder_.Build(job_.model, tasks, &p->batch));
  std::map<uint32_t, std::vector<int64_t>> groups;
  GroupByWidth(p->batch.row_offsets, &groups);
  for (auto& [dim, ids] : groups) {
    std::vector<Key> k(ids.size());
    for (size_t j = 0; j < ids.size(); ++j) k[j] = p->batch.keys[ids[j]];
    p->row_pulls.push_back(params_->Pull(JobModel::TableFor(dim), k));
    p->group_index.push_back(std::move(ids));
    p->group_table.push_back(JobModel::TableFor(dim));
  }
  p->mlp = params_->PullDense("mlp");
  if (job_.dense_tensors.count("alpha")) p->alpha = params_->PullDense("alpha");
  return Status::Ok();
}

Result<uint64_t> Trainer::Collect(Pending* p, std::vector<float>* rows, DenseParams* dense) {
  const auto& offsets = p->batch.row_offsets;
  rows->resize(offsets.back());
  uint64_t pulled = 0;
  for (size_t g = 0; g < p->row_pulls.size(); ++g) {
    METAPS_ASSIGN_OR_RETURN(std::vector<float> v, p->row_pulls[g].get());
    METAPS_RETURN_IF_ERROR(ScatterRows(p->group_table[g], v, p->group_index[g], offsets, rows->data()));
    pulled += p->group_index[g].size();
  }
  METAPS_ASSIGN_OR_RETURN(dense->weights, p->mlp.get());
  if (p->alpha.valid()) {
    METAPS_ASSIGN_OR_RETURN(dense->alpha, p->alpha.get());
  }
  METAPS_RETURN_IF_ERROR(AddInitialValues(job_, init_weights_, dense));
  return pulled;
}

Result<RoundStats> Trainer::RunRound(uint64_t step) {
  Pending current;
  if (next_) {
    current = std::move(*next_);
    next_.reset();
  } else {
    METAPS_RETURN_IF_ERROR(Prepare(&current));
  }
  RoundStats stats;
  DenseParams dense;
  METAPS_ASSIGN_OR_RETURN(stats.rows_pulled, Collect(&current, &rows_, &dense));
  METAPS_RETURN_IF_ERROR(learner_.Compute(current.batch, dense.weights, dense.alpha, rows_, false, &grad_));
  stats.tasks = current.batch.num_tasks;
  stats.flops = grad_.flops;
  for (float l : grad_.query_loss) stats.loss += l;
  stats.loss /= std::max(1, stats.tasks);

  // Push: rows per table, then the dense tensors.
  std::vector<std::future<Status>> acks;
  const auto& offsets = current.batch.row_offsets;
  for (size_t g = 0; g < current.group_index.size(); ++g) {
    const auto& ids = current.group_index[g];
    std::vector<Key> k(ids.size());
    std::vector<float> gr;
    gr.reserve(ids.size() * (offsets[ids.empty() ? 0 : ids[0] + 1] - offsets[ids.empty() ? 0 : ids[0]]));
    for (size_t j = 0; j < ids.size(); ++j) {
      k[j] = current.batch.keys[ids[j]];
      gr.insert(gr.end(), grad_.rows.begin() + offsets[ids[j]], grad_.rows.begin() + offsets[ids[j] + 1]);
    }
    acks.push_back(params_->Push(current.group_table[g], k, gr, step));
    stats.rows_pushed += ids.size();
  }
  acks.push_back(params_->PushDense("mlp", grad_.weights, step));
  if (!grad_.alpha.empty()) acks.push_back(params_->PushDense("alpha", grad_.alpha, step));
  if (prefetch_) {
    next_.emplace();
    if (Status s = Prepare(&*next_); !s.ok()) {
      next_.reset();
      return s;
    }
  }
  for (auto& a : acks) METAPS_RETURN_IF_ERROR(a.get());
  return stats;
}

}  // namespace metaps::worker
