#include "worker/trainer.h"

#include <cstring>
#include <map>
#include <string>

namespace metaps::worker {
namespace {

// Groups a batch's local rows by width (= table) and sends one pull per table.
std::vector<TablePull> PullByTable(ParamClient& params, std::span<const Key> keys,
                                   std::span<const int64_t> row_offsets) {
  std::map<uint32_t, std::vector<int64_t>> by_width;
  for (size_t i = 0; i + 1 < row_offsets.size(); ++i) {
    by_width[static_cast<uint32_t>(row_offsets[i + 1] - row_offsets[i])].push_back(static_cast<int64_t>(i));
  }
  std::vector<TablePull> pulls;
  for (auto& [dim, ids] : by_width) {
    TablePull& p = pulls.emplace_back();
    p.table = JobModel::TableFor(dim);
    p.keys.resize(ids.size());
    for (size_t j = 0; j < ids.size(); ++j) p.keys[j] = keys[ids[j]];
    p.ids = std::move(ids);
    p.values = params.Pull(p.table, p.keys);
  }
  return pulls;
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

// Waits for `pulls` and copies their rows into `rows` (laid out by `offsets`); returns the rows.
Result<uint64_t> CollectRows(std::vector<TablePull>& pulls, std::span<const int64_t> offsets,
                             std::vector<float>* rows) {
  rows->resize(offsets.back());
  uint64_t pulled = 0;
  for (TablePull& p : pulls) {
    METAPS_ASSIGN_OR_RETURN(std::vector<float> v, p.values.get());
    METAPS_RETURN_IF_ERROR(ScatterRows(p.table, v, p.ids, offsets, rows->data()));
    pulled += p.ids.size();
  }
  return pulled;
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

Result<DenseParams> DenseFromServerValues(const JobModel& job, std::vector<float> mlp,
                                          std::vector<float> alpha) {
  DenseParams d;
  d.weights = std::move(mlp);
  d.alpha = std::move(alpha);
  if (job.dense_tensors.count("alpha") && d.alpha.empty()) {
    return FailedPrecondition("the model is Meta-SGD but there are no values for tensor 'alpha'");
  }
  METAPS_RETURN_IF_ERROR(AddInitialValues(job, job.InitialWeights(), &d));
  return d;
}

Result<uint64_t> PullRows(ParamClient& params, std::span<const Key> keys, std::span<const int64_t> row_offsets,
                          std::vector<float>* values) {
  std::vector<TablePull> pulls = PullByTable(params, keys, row_offsets);
  return CollectRows(pulls, row_offsets, values);
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
  p->rows = PullByTable(*params_, p->batch.keys, p->batch.row_offsets);
  p->mlp = params_->PullDense("mlp");
  if (job_.dense_tensors.count("alpha")) p->alpha = params_->PullDense("alpha");
  return Status::Ok();
}

Result<uint64_t> Trainer::Collect(Pending* p, std::vector<float>* rows, DenseParams* dense) {
  METAPS_ASSIGN_OR_RETURN(uint64_t pulled, CollectRows(p->rows, p->batch.row_offsets, rows));
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
  for (const TablePull& g : current.rows) {
    std::vector<float> gr;
    gr.reserve(g.ids.empty() ? 0 : g.ids.size() * (offsets[g.ids[0] + 1] - offsets[g.ids[0]]));
    for (int64_t id : g.ids)
      gr.insert(gr.end(), grad_.rows.begin() + offsets[id], grad_.rows.begin() + offsets[id + 1]);
    acks.push_back(params_->Push(g.table, g.keys, gr, step));
    stats.rows_pushed += g.ids.size();
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
