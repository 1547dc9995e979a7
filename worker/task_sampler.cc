#include "worker/task_sampler.h"

#include <algorithm>
#include <numeric>
#include <string>
#include <unordered_map>

namespace metaps::worker {

Result<SamplerOptions> SamplerOptions::FromConfig(const Config& tasks) {
  METAPS_RETURN_IF_ERROR(
      tasks.CheckKnownKeys({"support_size", "query_size", "min_support", "min_query", "meta_batch", "seed", "window"}));
  SamplerOptions o;
  METAPS_ASSIGN_OR_RETURN(int64_t support, tasks.GetIntIn("support_size", o.support_size, 1, 1 << 20));
  METAPS_ASSIGN_OR_RETURN(int64_t query, tasks.GetIntIn("query_size", o.query_size, 1, 1 << 20));
  METAPS_ASSIGN_OR_RETURN(int64_t min_support, tasks.GetIntIn("min_support", o.min_support, 1, 1 << 20));
  METAPS_ASSIGN_OR_RETURN(int64_t min_query, tasks.GetIntIn("min_query", o.min_query, 1, 1 << 20));
  METAPS_ASSIGN_OR_RETURN(int64_t batch, tasks.GetIntIn("meta_batch", o.meta_batch, 1, 1 << 16));
  METAPS_ASSIGN_OR_RETURN(int64_t seed, tasks.GetInt("seed", static_cast<int64_t>(o.seed)));
  o.support_size = static_cast<int>(support);
  o.query_size = static_cast<int>(query);
  o.min_support = static_cast<int>(min_support);
  o.min_query = static_cast<int>(min_query);
  o.meta_batch = static_cast<int>(batch);
  o.seed = static_cast<uint64_t>(seed);
  METAPS_ASSIGN_OR_RETURN(std::string window, tasks.GetString("window", "random"));
  if (window == "random") {
    o.window = TaskWindow::kRandom;
  } else if (window == "first") {
    o.window = TaskWindow::kFirst;
  } else {
    return InvalidArgument(tasks.Path("window") + ": expected \"first\" or \"random\", got \"" + window + "\"");
  }
  Status valid = o.Validate();
  if (!valid.ok()) return valid.WithContext(tasks.path().empty() ? "tasks" : tasks.path());
  return o;
}

Status SamplerOptions::Validate() const {
  if (support_size < 1 || query_size < 1 || min_support < 1 || min_query < 1 || meta_batch < 1) {
    return InvalidArgument("sizes, minimum counts and meta_batch must be >= 1");
  }
  if (min_support > support_size) return InvalidArgument("min_support exceeds support_size");
  if (min_query > query_size) return InvalidArgument("min_query exceeds query_size");
  return Status::Ok();
}

template <typename Source>
Result<TaskSampler> TaskSampler::Build(const SamplerOptions& options, int fields, size_t n, const Source& source) {
  METAPS_RETURN_IF_ERROR(options.Validate());
  std::unordered_map<uint64_t, size_t> user_index;
  std::vector<std::vector<size_t>> by_user;
  std::vector<uint64_t> users;
  for (size_t i = 0; i < n; ++i) {
    auto [it, inserted] = user_index.emplace(source.user(i), by_user.size());
    if (inserted) {
      by_user.emplace_back();
      users.push_back(source.user(i));
    }
    by_user[it->second].push_back(i);
  }
  std::vector<Task> tasks;
  int64_t skipped = 0;
  for (size_t u = 0; u < by_user.size(); ++u) {
    std::vector<size_t>& idx = by_user[u];
    const int count = static_cast<int>(idx.size());
    if (count < options.min_support + options.min_query) {
      ++skipped;
      continue;
    }
    std::stable_sort(idx.begin(), idx.end(),
                     [&](size_t a, size_t b) { return source.timestamp(a) < source.timestamp(b); });
    Task task;
    task.user = users[u];
    task.fields = fields;
    task.num_support = std::min(options.support_size, count - options.min_query);
    task.num_query = std::min(options.query_size, count - task.num_support);
    // kRandom keeps the whole history; Draw cuts the windows from it.
    const int keep = options.window == TaskWindow::kRandom ? count : task.num_support + task.num_query;
    for (int r = 0; r < keep; ++r) {
      const size_t e = idx[r];
      for (int f = 0; f < fields; ++f) {
        const auto bag = source.bag(e, f);
        task.keys.insert(task.keys.end(), bag.begin(), bag.end());
        task.offsets.push_back(static_cast<int32_t>(task.keys.size()));
      }
      task.labels.push_back(source.label(e));
    }
    tasks.push_back(std::move(task));
  }
  if (tasks.empty()) {
    return FailedPrecondition("no user has min_support + min_query = " +
                              std::to_string(options.min_support + options.min_query) + " events");
  }
  return TaskSampler(options, std::move(tasks), skipped);
}

Result<TaskSampler> TaskSampler::Create(const SamplerOptions& options, int fields, std::vector<Event> events) {
  for (size_t i = 0; i < events.size(); ++i) {
    if (static_cast<int>(events[i].fields.size()) != fields) {
      return InvalidArgument("event " + std::to_string(i) + " has " + std::to_string(events[i].fields.size()) +
                             " fields, expected " + std::to_string(fields));
    }
  }
  struct Source {
    const std::vector<Event>& e;
    uint64_t user(size_t i) const { return e[i].user; }
    int64_t timestamp(size_t i) const { return e[i].timestamp; }
    float label(size_t i) const { return e[i].label; }
    std::span<const Key> bag(size_t i, int f) const { return e[i].fields[f]; }
  };
  return Build(options, fields, events.size(), Source{events});
}

namespace {

// Events of a Dataset for TaskSampler::Build: event i is pick[i], or i itself without a pick.
struct DatasetSource {
  const data::Dataset& d;
  const size_t* pick;  // null: every event
  size_t at(size_t i) const { return pick == nullptr ? i : pick[i]; }
  uint64_t user(size_t i) const { return d.user(at(i)); }
  int64_t timestamp(size_t i) const { return d.timestamp(at(i)); }
  float label(size_t i) const { return d.label(at(i)); }
  std::span<const Key> bag(size_t i, int f) const { return d.keys(at(i), f); }
};

}  // namespace

Result<TaskSampler> TaskSampler::Create(const SamplerOptions& options, const data::Dataset& dataset) {
  return Build(options, static_cast<int>(dataset.num_fields()), dataset.size(),
               DatasetSource{dataset, nullptr});
}

Result<TaskSampler> TaskSampler::Create(const SamplerOptions& options, const data::Dataset& dataset,
                                        std::span<const size_t> events) {
  for (size_t e : events) {
    if (e >= dataset.size()) return OutOfRange("event index " + std::to_string(e) + " outside the dataset");
  }
  return Build(options, static_cast<int>(dataset.num_fields()), events.size(),
               DatasetSource{dataset, events.data()});
}

TaskSampler::TaskSampler(SamplerOptions options, std::vector<Task> tasks, int64_t skipped)
    : options_(options), tasks_(std::move(tasks)), skipped_(skipped), rng_(options.seed) {
  order_.resize(tasks_.size());
  std::iota(order_.begin(), order_.end(), size_t{0});
  std::shuffle(order_.begin(), order_.end(), rng_);
}

std::vector<const Task*> TaskSampler::NextMetaBatch() { return Draw(true); }

void TaskSampler::SkipMetaBatches(uint64_t n) {
  for (uint64_t i = 0; i < n; ++i) Draw(false);
}

std::vector<const Task*> TaskSampler::Draw(bool build) {
  const size_t want = std::min<size_t>(options_.meta_batch, tasks_.size());
  std::vector<const Task*> batch;
  if (build) batch.reserve(want);
  if (next_ + want > order_.size()) {  // too few left: a new epoch, so no batch repeats a task
    std::shuffle(order_.begin(), order_.end(), rng_);
    next_ = 0;
    ++epoch_;
  }
  if (options_.window == TaskWindow::kFirst) {
    for (size_t i = 0; i < want; ++i) {
      const Task* t = &tasks_[order_[next_++]];
      if (build) batch.push_back(t);
    }
    return batch;
  }
  if (build) windows_.resize(want);
  for (size_t i = 0; i < want; ++i) {
    const Task& history = tasks_[order_[next_++]];
    const int rows = history.num_support + history.num_query;
    const int last_start = static_cast<int>(history.labels.size()) - rows;
    // A plain modulo (bias below 2^-40) rather than a std:: distribution, whose algorithm differs
    // between standard libraries.
    const int start = last_start > 0 ? static_cast<int>(rng_() % static_cast<uint64_t>(last_start + 1)) : 0;
    if (!build) continue;
    Task& w = windows_[i];
    w.user = history.user;
    w.fields = history.fields;
    w.num_support = history.num_support;
    w.num_query = history.num_query;
    const size_t first = static_cast<size_t>(start) * history.fields;
    const size_t end = first + static_cast<size_t>(rows) * history.fields;
    const int32_t base = history.offsets[first];
    w.offsets.resize(end - first + 1);
    for (size_t j = first; j <= end; ++j) w.offsets[j - first] = history.offsets[j] - base;
    w.keys.assign(history.keys.begin() + base, history.keys.begin() + history.offsets[end]);
    w.labels.assign(history.labels.begin() + start, history.labels.begin() + start + rows);
    batch.push_back(&w);
  }
  return batch;
}

}  // namespace metaps::worker
