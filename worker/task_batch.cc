#include "worker/task_batch.h"

#include <algorithm>
#include <string>

namespace metaps::worker {

void Task::AddRow(std::span<const std::vector<Key>> bags, float label) {
  fields = static_cast<int>(bags.size());
  for (const std::vector<Key>& bag : bags) {
    keys.insert(keys.end(), bag.begin(), bag.end());
    offsets.push_back(static_cast<int32_t>(keys.size()));
  }
  labels.push_back(label);
}

void TaskBatchBuilder::Reset(size_t expected_keys) {
  size_t cap = 16;
  while (cap < 2 * expected_keys) cap <<= 1;
  slot_keys_.resize(cap);
  slot_ids_.assign(cap, -1);
}

int32_t TaskBatchBuilder::FindOrInsert(Key key, bool* inserted) {
  const size_t mask = slot_ids_.size() - 1;
  for (size_t i = Mix64(key) & mask;; i = (i + 1) & mask) {
    if (slot_ids_[i] < 0) {
      slot_keys_[i] = key;
      slot_ids_[i] = static_cast<int32_t>(keys_->size());
      keys_->push_back(key);
      *inserted = true;
      return slot_ids_[i];
    }
    if (slot_keys_[i] == key) {
      *inserted = false;
      return slot_ids_[i];
    }
  }
}

Status TaskBatchBuilder::Build(const ModelSpec& model, std::span<const Task* const> tasks, TaskBatch* out) {
  const int nf = model.num_fields();
  out->num_tasks = static_cast<int>(tasks.size());
  out->fields = nf;
  out->support_rows = 0;
  out->query_rows = 0;
  out->support_count.clear();
  out->query_count.clear();
  size_t total_keys = 0;
  for (size_t t = 0; t < tasks.size(); ++t) {
    const Task& task = *tasks[t];
    if (task.fields != nf) {
      return InvalidArgument("task " + std::to_string(t) + " has " + std::to_string(task.fields) +
                             " fields, the model " + std::to_string(nf));
    }
    if (task.num_support <= 0 || task.num_query <= 0) {
      return InvalidArgument("task " + std::to_string(t) + " needs support and query rows");
    }
    if (static_cast<int64_t>(task.offsets.size()) != int64_t{task.rows()} * nf + 1 ||
        static_cast<int>(task.labels.size()) != task.rows()) {
      return InvalidArgument("task " + std::to_string(t) + " is malformed");
    }
    out->support_rows = std::max(out->support_rows, task.num_support);
    out->query_rows = std::max(out->query_rows, task.num_query);
    out->support_count.push_back(task.num_support);
    out->query_count.push_back(task.num_query);
    total_keys += task.keys.size();
  }
  out->keys.clear();
  out->row_offsets.assign(1, 0);
  keys_ = &out->keys;
  Reset(total_keys);

  // Lays out one side (support or query) of every task, padding each to `rows` rows.
  auto lay_out = [&](bool support, int rows, std::vector<int32_t>* offsets, std::vector<int32_t>* ids,
                     std::vector<float>* y) -> Status {
    offsets->assign(1, 0);
    ids->clear();
    y->assign(static_cast<size_t>(tasks.size()) * rows, 0.0f);
    for (size_t t = 0; t < tasks.size(); ++t) {
      const Task& task = *tasks[t];
      const int first = support ? 0 : task.num_support;
      const int count = support ? task.num_support : task.num_query;
      for (int r = 0; r < rows; ++r) {
        if (r >= count) {  // padding: empty bags
          offsets->insert(offsets->end(), nf, static_cast<int32_t>(ids->size()));
          continue;
        }
        (*y)[t * rows + r] = task.labels[first + r];
        for (int f = 0; f < nf; ++f) {
          const int64_t cell = int64_t{first + r} * nf + f;
          const int dim = model.fields[f].dim;
          for (int32_t j = task.offsets[cell]; j < task.offsets[cell + 1]; ++j) {
            bool inserted;
            const int32_t id = FindOrInsert(task.keys[j], &inserted);
            if (inserted) {
              out->row_offsets.push_back(out->row_offsets.back() + dim);
            } else if (out->row_offsets[id + 1] - out->row_offsets[id] != dim) {
              return InvalidArgument("key " + std::to_string(task.keys[j]) + " is used by fields of different dims");
            }
            ids->push_back(id);
          }
          offsets->push_back(static_cast<int32_t>(ids->size()));
        }
      }
    }
    return Status::Ok();
  };
  METAPS_RETURN_IF_ERROR(lay_out(true, out->support_rows, &out->support_offsets, &out->support_ids, &out->support_y));
  METAPS_RETURN_IF_ERROR(lay_out(false, out->query_rows, &out->query_offsets, &out->query_ids, &out->query_y));
  keys_ = nullptr;
  return Status::Ok();
}

}  // namespace metaps::worker
