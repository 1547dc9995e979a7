// The pieces of a training job that every worker (and the launcher) derive the same way from the
// job config and the dataset: the model, its parameter tables, its initial MLP, and the tasks.
//
// Dense tensors live on the servers as offsets from a deterministic initial value: the server's
// "mlp" tensor starts at zero and a worker's weights are InitialWeights() + that offset (for
// Meta-SGD, "alpha" likewise starts at zero and rates are inner_lr + offset). Gradients with
// respect to the offset equal those with respect to the weights, so no worker ever has to write
// an initial value, and all of them agree on it. (An optimizer's L1/L2 terms act on the offset.)
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/config.h"
#include "common/status.h"
#include "worker/data/events.h"
#include "worker/data/split.h"
#include "worker/meta_learner.h"
#include "worker/model.h"
#include "worker/task_batch.h"
#include "worker/task_sampler.h"

namespace metaps::worker {

struct JobModel {
  ModelSpec model;
  MetaOptions meta;
  uint64_t init_seed = 7;
  // Sparse table per embedding width: "emb<dim>" (keys are unique across fields by construction).
  std::map<std::string, uint32_t> sparse_tables;
  std::map<std::string, size_t> dense_tensors;  // "mlp", and "alpha" for Meta-SGD

  static std::string TableFor(uint32_t dim) { return "emb" + std::to_string(dim); }
  std::vector<float> InitialWeights() const;  // He-normal weights, zero biases, from init_seed
};

// Reads [model] (hidden = [..], loss, init_seed) and [meta] against the dataset's fields.
Result<JobModel> BuildJobModel(const Config& root, const data::Dataset& dataset);

// The [[tables]] TOML the servers need for this model, with the [optimizer] section's settings
// (optimizer, lr, beta1, beta2, eps, l1, l2, init_scale) for every table.
Result<std::string> TablesToml(const Config& root, const JobModel& job);

// The model as a JSON object: what `metaps run` records in RUN_DIR/model.json and a snapshot's
// manifest carries, so that export and serving rebuild the JobModel without the data:
//   {"fields": [{"name", "dim", "pooling"}...], "layers": [...], "loss", "init_seed",
//    "meta": {"algo", "inner_steps", "inner_lr", "adapt_last_layers", "first_layer"}}
nlohmann::json JobModelToJson(const JobModel& job);
// The inverse; InvalidArgument naming the key that is missing or wrong, or an invalid model.
Result<JobModel> JobModelFromJson(const nlohmann::json& j);

// One task from the events `support` and `query` (indices into `dataset`).
Task MakeTask(const data::Dataset& dataset, uint64_t user, std::span<const uint32_t> support,
              std::span<const uint32_t> query);

// The events (indices into the dataset, user by user) of the train users whose position in
// `split.train` is w (mod workers): worker w's partition. TaskSampler::Create(options, dataset,
// events) reads them from the dataset in place, so a worker holds no second copy of its events.
std::vector<size_t> PartitionEvents(const data::Split& split, int worker, int workers);

}  // namespace metaps::worker
