// Tasks and the meta-batch layout the engine computes on.
//
// A Task is one user's few-shot problem: support rows (a run of their events) to adapt on and query
// rows (the events right after it) to score the adapted model, each row a bag of feature keys per field plus a
// label. A TaskBatch is T tasks flattened for batched kernels: every task padded to the same number of
// support and query rows (padding rows carry no loss), keys deduplicated across the whole batch into
// local row indices, so each embedding row is pulled once and its gradient summed once.
//
// TaskBatchBuilder reuses its memory between batches; one per worker thread.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/keys.h"
#include "common/status.h"
#include "worker/kernels.h"
#include "worker/model.h"

namespace metaps::worker {

// One user's task, flattened: rows [0, num_support) are the support set in time order, rows
// [num_support, num_support + num_query) the query set. Row r, field f holds the keys
// keys[offsets[r * fields + f] .. offsets[r * fields + f + 1]).
struct Task {
  uint64_t user = 0;
  int fields = 0;
  int num_support = 0;
  int num_query = 0;
  std::vector<int32_t> offsets{0};
  std::vector<Key> keys;
  std::vector<float> labels;

  int rows() const { return num_support + num_query; }
  // Appends a row (one bag per field); used to build tasks by hand and by the sampler.
  void AddRow(std::span<const std::vector<Key>> bags, float label);
};

struct TaskBatch {
  int num_tasks = 0;
  int support_rows = 0;  // rows per task after padding: the largest support set of the batch
  int query_rows = 0;
  std::vector<int> support_count;  // real rows per task; rows past the count are padding
  std::vector<int> query_count;
  // CSR bags (see BagsView); task t's support row r is row t * support_rows + r. Ids are local.
  std::vector<int32_t> support_offsets, support_ids;
  std::vector<int32_t> query_offsets, query_ids;
  std::vector<float> support_y, query_y;  // per row, padding rows 0
  // Local row i is keys[i]; it occupies values [row_offsets[i], row_offsets[i + 1]) of a row buffer.
  std::vector<Key> keys;
  std::vector<int64_t> row_offsets{0};

  int fields = 0;
  int64_t num_values() const { return row_offsets.back(); }
  BagsView support_bags() const {
    return {int64_t{num_tasks} * support_rows, fields, support_offsets.data(), support_ids.data()};
  }
  BagsView query_bags() const {
    return {int64_t{num_tasks} * query_rows, fields, query_offsets.data(), query_ids.data()};
  }
  RowTableView table() const { return {row_offsets.data(), static_cast<int64_t>(keys.size())}; }
};

class TaskBatchBuilder {
 public:
  // Lays out `tasks` for `model`. InvalidArgument when a task's field count differs from the model's,
  // a task has no support or no query rows, or one key appears in fields of different dims.
  [[nodiscard]] Status Build(const ModelSpec& model, std::span<const Task* const> tasks, TaskBatch* out);

 private:
  // Open-addressing key -> local index map, reused across batches.
  int32_t FindOrInsert(Key key, bool* inserted);
  void Reset(size_t expected_keys);

  std::vector<Key> slot_keys_;
  std::vector<int32_t> slot_ids_;  // -1: empty
  std::vector<Key>* keys_ = nullptr;
};

}  // namespace metaps::worker
