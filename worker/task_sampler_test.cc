// TaskSampler (events -> per-user tasks -> meta-batches) and TaskBatchBuilder (tasks -> kernel layout).
#include "worker/task_sampler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

namespace metaps::worker {
namespace {

// User u's event i has timestamp 100 * i (given out of order) and key 1000 * u + i in its only field.
std::vector<Event> Events(const std::vector<int>& counts) {
  std::vector<Event> events;
  for (size_t u = 0; u < counts.size(); ++u) {
    for (int i = counts[u] - 1; i >= 0; --i) {
      events.push_back({.user = u, .timestamp = 100 * i, .label = float(i), .fields = {{Key(1000 * u + i)}}});
    }
  }
  std::rotate(events.begin(), events.begin() + events.size() / 3, events.end());
  return events;
}

SamplerOptions Options() {
  return {.support_size = 4, .query_size = 2, .min_support = 2, .min_query = 1, .meta_batch = 2, .seed = 42};
}

TEST(TaskSamplerTest, SupportIsTheEarliestEventsAndQueryTheNextOnes) {
  SamplerOptions o = Options();
  o.window = TaskWindow::kFirst;
  auto s = TaskSampler::Create(o, 1, Events({10, 5, 3, 2}));
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->tasks().size(), 3u);  // user 3 (2 events) is below min_support + min_query
  EXPECT_EQ(s->skipped_users(), 1);
  for (const Task& t : s->tasks()) {
    // Labels are the event's rank in time.
    ASSERT_EQ(static_cast<int>(t.labels.size()), t.rows());
    for (int r = 0; r < t.rows(); ++r) EXPECT_EQ(t.labels[r], float(r)) << "user " << t.user;
    EXPECT_EQ(t.keys[0], Key(1000 * t.user));
  }
  // Every batch deals the same first window.
  for (int b = 0; b < 10; ++b) {
    for (const Task* t : s->NextMetaBatch()) EXPECT_EQ(t->labels.front(), 0.0f);
  }
  const Task& many = s->tasks()[0];  // 10 events: support 4, query 2
  EXPECT_EQ(many.num_support, 4);
  EXPECT_EQ(many.num_query, 2);
  const Task& five = s->tasks()[1];  // 5 events: support 4, query 1
  EXPECT_EQ(five.num_support, 4);
  EXPECT_EQ(five.num_query, 1);
  const Task& three = s->tasks()[2];  // 3 events: support 2 (3 - min_query), query 1
  EXPECT_EQ(three.num_support, 2);
  EXPECT_EQ(three.num_query, 1);
}

TEST(TaskSamplerTest, MetaBatchesAreDistinctTasksAndDeterministicPerSeed) {
  auto order = [](uint64_t seed) {
    SamplerOptions o = Options();
    o.seed = seed;
    o.meta_batch = 3;
    auto s = TaskSampler::Create(o, 1, Events({4, 4, 4, 4, 4, 4, 4}));
    EXPECT_TRUE(s.ok());
    std::vector<uint64_t> users;
    for (int b = 0; b < 6; ++b) {
      auto batch = s->NextMetaBatch();
      EXPECT_EQ(batch.size(), 3u);
      std::set<uint64_t> distinct;
      for (const Task* t : batch) {
        distinct.insert(t->user);
        users.push_back(t->user);
      }
      EXPECT_EQ(distinct.size(), 3u);
    }
    EXPECT_GE(s->epoch(), 2);
    return users;
  };
  EXPECT_EQ(order(7), order(7));
  EXPECT_NE(order(7), order(8));
}

// With random windows a task is a run of consecutive events of the user's history, support first,
// at an offset drawn each time it is dealt: over the epochs every event is used, and the draws
// depend only on the seed.
TEST(TaskSamplerTest, RandomWindowsCoverTheWholeHistoryInTimeOrder) {
  const std::vector<int> counts = {10, 5, 3};
  auto draws = [&](uint64_t seed, std::vector<std::set<int>>* covered, std::vector<std::set<int>>* starts) {
    SamplerOptions o = Options();
    o.window = TaskWindow::kRandom;
    o.meta_batch = 1;
    o.seed = seed;
    auto s = TaskSampler::Create(o, 1, Events(counts));
    EXPECT_TRUE(s.ok()) << s.status();
    std::vector<std::pair<uint64_t, int>> seen;
    for (int b = 0; b < 300; ++b) {
      auto batch = s->NextMetaBatch();
      EXPECT_EQ(batch.size(), 1u);
      const Task& t = *batch[0];
      const int count = counts[t.user];
      EXPECT_EQ(t.num_support, count == 3 ? 2 : 4) << "user " << t.user;
      EXPECT_EQ(t.num_query, count == 10 ? 2 : 1) << "user " << t.user;
      EXPECT_EQ(static_cast<int>(t.labels.size()), t.rows());
      EXPECT_EQ(t.offsets.size(), static_cast<size_t>(t.rows()) + 1);
      EXPECT_EQ(t.keys.size(), static_cast<size_t>(t.rows()));
      // Labels are ranks in time: the window is consecutive, in order, inside the history.
      const int start = static_cast<int>(t.labels.front());
      EXPECT_GE(start, 0);
      EXPECT_LE(start + t.rows(), count);
      for (int r = 0; r < t.rows(); ++r) {
        EXPECT_EQ(t.labels[r], float(start + r));
        EXPECT_EQ(t.keys[t.offsets[r]], Key(1000 * t.user + start + r)) << "user " << t.user << " row " << r;
        if (covered) (*covered)[t.user].insert(start + r);
      }
      if (starts) (*starts)[t.user].insert(start);
      seen.emplace_back(t.user, start);
    }
    return seen;
  };
  std::vector<std::set<int>> covered(counts.size()), starts(counts.size());
  const auto a = draws(11, &covered, &starts);
  for (size_t u = 0; u < counts.size(); ++u) {
    EXPECT_EQ(covered[u].size(), static_cast<size_t>(counts[u])) << "user " << u << ": some events never dealt";
  }
  EXPECT_EQ(starts[0], (std::set<int>{0, 1, 2, 3, 4}));  // 10 events, windows of 6
  EXPECT_EQ(starts[2], (std::set<int>{0}));              // 3 events: the one window
  EXPECT_EQ(draws(11, nullptr, nullptr), a);
  EXPECT_NE(draws(12, nullptr, nullptr), a);
}

// A resumed worker skips the batches it trained on: the next ones are those it would have drawn.
TEST(TaskSamplerTest, SkippedBatchesLeaveTheSamplerWhereDrawingThemWould) {
  for (TaskWindow window : {TaskWindow::kFirst, TaskWindow::kRandom}) {
    SamplerOptions o = Options();
    o.window = window;
    o.meta_batch = 2;
    auto drawn = TaskSampler::Create(o, 1, Events({10, 7, 5, 9, 3}));
    auto skipped = TaskSampler::Create(o, 1, Events({10, 7, 5, 9, 3}));
    ASSERT_TRUE(drawn.ok() && skipped.ok());
    for (int b = 0; b < 7; ++b) drawn->NextMetaBatch();
    skipped->SkipMetaBatches(7);
    EXPECT_EQ(skipped->epoch(), drawn->epoch());
    for (int b = 0; b < 5; ++b) {
      auto x = drawn->NextMetaBatch();
      auto y = skipped->NextMetaBatch();
      ASSERT_EQ(x.size(), y.size());
      for (size_t i = 0; i < x.size(); ++i) {
        EXPECT_EQ(x[i]->user, y[i]->user);
        EXPECT_EQ(x[i]->keys, y[i]->keys) << "batch " << b << " task " << i;
        EXPECT_EQ(x[i]->labels, y[i]->labels);
      }
    }
  }
}

TEST(TaskSamplerTest, ConfigAndInputErrorsAreReported) {
  auto c = Config::ParseString("[tasks]\nsupport_size = 2\nmin_support = 3\n");
  auto o = SamplerOptions::FromConfig(*c->GetTable("tasks"));
  ASSERT_FALSE(o.ok());
  EXPECT_NE(o.status().message().find("min_support"), std::string::npos) << o.status();
  auto ok = Config::ParseString("[tasks]\nsupport_size = 20\nquery_size = 10\nmeta_batch = 32\nseed = 3\n");
  auto parsed = SamplerOptions::FromConfig(*ok->GetTable("tasks"));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->meta_batch, 32);
  EXPECT_EQ(parsed->window, TaskWindow::kRandom);
  auto first = Config::ParseString("[tasks]\nwindow = \"first\"\n");
  EXPECT_EQ(SamplerOptions::FromConfig(*first->GetTable("tasks"))->window, TaskWindow::kFirst);
  auto bad = Config::ParseString("[tasks]\nwindow = \"middle\"\n");
  auto refused = SamplerOptions::FromConfig(*bad->GetTable("tasks"));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("tasks.window"), std::string::npos) << refused.status();
  EXPECT_EQ(TaskSampler::Create(Options(), 2, Events({5})).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(TaskSampler::Create(Options(), 1, Events({1, 2})).status().code(), StatusCode::kFailedPrecondition);
}

TEST(TaskSamplerTest, DatasetEventsGiveTheSameTasks) {
  const std::vector<Event> events = Events({6, 3, 1});
  data::Dataset dataset({data::FieldSpec{.name = "item"}});
  for (const Event& e : events) {
    dataset.BeginEvent(e.user, 0, e.label, e.timestamp);
    for (Key k : e.fields[0]) dataset.AddKey(k);
    dataset.EndField();
  }
  auto from_events = TaskSampler::Create(Options(), 1, events);
  auto from_dataset = TaskSampler::Create(Options(), dataset);
  ASSERT_TRUE(from_events.ok() && from_dataset.ok());
  ASSERT_EQ(from_events->tasks().size(), from_dataset->tasks().size());
  for (size_t i = 0; i < from_events->tasks().size(); ++i) {
    const Task& a = from_events->tasks()[i];
    const Task& b = from_dataset->tasks()[i];
    EXPECT_EQ(a.user, b.user);
    EXPECT_EQ(a.keys, b.keys);
    EXPECT_EQ(a.labels, b.labels);
    EXPECT_EQ(a.num_support, b.num_support);
  }
  // A subset of events: only user 0's.
  std::vector<size_t> pick;
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i].user == 0) pick.push_back(i);
  }
  auto subset = TaskSampler::Create(Options(), dataset, pick);
  ASSERT_TRUE(subset.ok()) << subset.status();
  ASSERT_EQ(subset->tasks().size(), 1u);
  EXPECT_EQ(subset->tasks()[0].user, 0u);
}

TEST(TaskBatchBuilderTest, DeduplicatesKeysAndPadsTasks) {
  ModelSpec model;
  model.fields = {{"user", 2, Pooling::kSum}, {"tags", 3, Pooling::kMean}};
  model.layers = {1};
  Task a, b;
  a.AddRow(std::vector<std::vector<Key>>{{1}, {7, 8}}, 1.0f);
  a.AddRow(std::vector<std::vector<Key>>{{1}, {8}}, 2.0f);
  a.AddRow(std::vector<std::vector<Key>>{{1}, {}}, 3.0f);
  a.num_support = 2;
  a.num_query = 1;
  b.AddRow(std::vector<std::vector<Key>>{{2}, {7}}, 4.0f);
  b.AddRow(std::vector<std::vector<Key>>{{2}, {9}}, 5.0f);
  b.num_support = 1;
  b.num_query = 1;
  TaskBatchBuilder builder;
  TaskBatch batch;
  const Task* tasks[] = {&a, &b};
  ASSERT_TRUE(builder.Build(model, tasks, &batch).ok());
  EXPECT_EQ(batch.keys, (std::vector<Key>{1, 7, 8, 2, 9}));
  EXPECT_EQ(batch.row_offsets, (std::vector<int64_t>{0, 2, 5, 8, 10, 13}));
  EXPECT_EQ(batch.support_rows, 2);
  EXPECT_EQ(batch.query_rows, 1);
  EXPECT_EQ(batch.support_count, (std::vector<int>{2, 1}));
  // Task b's second support row is padding: empty bags, label 0.
  EXPECT_EQ(batch.support_y, (std::vector<float>{1, 2, 4, 0}));
  EXPECT_EQ(batch.support_offsets, (std::vector<int32_t>{0, 1, 3, 4, 5, 6, 7, 7, 7}));
  EXPECT_EQ(batch.query_ids, (std::vector<int32_t>{0, 3, 4}));

  Task bad = a;
  bad.keys[0] = 7;  // key 7 in the dim-2 field and the dim-3 field
  const Task* bad_tasks[] = {&bad};
  EXPECT_EQ(builder.Build(model, bad_tasks, &batch).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace metaps::worker
