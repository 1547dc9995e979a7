// TaskSampler: turns an event log into per-user tasks and deals them out as meta-batches.
//
// Each user is a task. Their events are ordered by timestamp (ties keep input order); a task's support
// set is a run of consecutive events and its query set the events right after it:
//   support = min(support_size, n - min_query) events, query = the next min(query_size, rest).
// `window` says where the run starts: `kFirst`, always at the user's earliest event (the same task
// every epoch: the events after the window are never seen); `kRandom`, at an offset drawn uniformly
// each time the task is dealt, so that over the epochs every event of a long history is used, each
// query still after its support in time. Users with fewer than min_support + min_query events are
// skipped. Meta-batches are T distinct tasks taken in turn from a shuffled order; when fewer than T
// remain a new epoch reshuffles (the few left over wait for a later epoch). The shuffle and the
// offsets depend only on the seed, so a run is reproducible (and a resumed worker that draws the same
// number of batches again is where it was). Owns its tasks; not thread-safe.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "common/config.h"
#include "common/keys.h"
#include "common/status.h"
#include "worker/data/events.h"
#include "worker/task_batch.h"

namespace metaps::worker {

struct Event {
  uint64_t user = 0;
  int64_t timestamp = 0;
  float label = 0;
  std::vector<std::vector<Key>> fields;  // one bag of keys per model field
};

enum class TaskWindow { kFirst, kRandom };

struct SamplerOptions {
  int support_size = 20;  // Default: 20
  int query_size = 10;    // Default: 10
  int min_support = 1;    // Default: 1
  int min_query = 1;      // Default: 1
  int meta_batch = 32;    // tasks per meta-batch. Default: 32
  uint64_t seed = 1;      // Default: 1
  TaskWindow window = TaskWindow::kRandom;  // Default: random ("first" or "random" in config)

  // Reads a [tasks] table with the keys above (support_size, query_size, min_support, min_query,
  // meta_batch, seed, window). InvalidArgument when min_support > support_size or min_query > query_size.
  static Result<SamplerOptions> FromConfig(const Config& tasks);
  Status Validate() const;
};

class TaskSampler {
 public:
  // Groups `events` by user. Every event must have `fields` bags. FailedPrecondition when no user
  // has enough events.
  static Result<TaskSampler> Create(const SamplerOptions& options, int fields, std::vector<Event> events);
  // The same from a data layer Dataset (fields in schema order), read in place: all its events,
  // or exactly `events` (indices, e.g. a worker's partition; none when empty).
  static Result<TaskSampler> Create(const SamplerOptions& options, const data::Dataset& dataset);
  static Result<TaskSampler> Create(const SamplerOptions& options, const data::Dataset& dataset,
                                    std::span<const size_t> events);

  // Tasks in order of first appearance of their user. With kFirst each is the task itself; with
  // kRandom each holds the user's whole ordered history (labels.size() events; rows() is the window's
  // size), of which NextMetaBatch deals windows of num_support + num_query rows.
  const std::vector<Task>& tasks() const { return tasks_; }
  // Users skipped for having too few events.
  int64_t skipped_users() const { return skipped_; }
  int64_t epoch() const { return epoch_; }

  // The next min(meta_batch, tasks) tasks; the pointers stay valid until the next call.
  std::vector<const Task*> NextMetaBatch();
  // Draws n batches as NextMetaBatch would, without building them: a resumed worker skips the
  // batches it had trained on and goes on where it was.
  void SkipMetaBatches(uint64_t n);

 private:
  TaskSampler(SamplerOptions options, std::vector<Task> tasks, int64_t skipped);
  // Groups events 0..n-1 by user through accessors: user(i), timestamp(i), label(i), and
  // bag(i, f) -> a range of keys.
  template <typename Source>
  static Result<TaskSampler> Build(const SamplerOptions& options, int fields, size_t n, const Source& source);
  // The next batch's draws (order, epoch, window offsets); builds and returns it when `build`.
  std::vector<const Task*> Draw(bool build);

  SamplerOptions options_;
  std::vector<Task> tasks_;
  int64_t skipped_ = 0;
  std::vector<size_t> order_;
  size_t next_ = 0;
  int64_t epoch_ = 0;
  std::mt19937_64 rng_;
  std::vector<Task> windows_;  // kRandom: the last batch's windows
};

}  // namespace metaps::worker
