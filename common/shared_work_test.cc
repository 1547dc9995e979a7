#include "common/shared_work.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

namespace metaps {
namespace {

TEST(SharedWorkTest, WithoutHelpersTheCallerRunsTheTaskItself) {
  SharedWork work(0, "t");
  std::vector<size_t> workers;
  std::thread::id ran_on;
  work.Run([&](size_t w) {
    workers.push_back(w);
    ran_on = std::this_thread::get_id();
  });
  EXPECT_EQ(workers, std::vector<size_t>{0});
  EXPECT_EQ(ran_on, std::this_thread::get_id());
}

// Chunks claimed from a shared counter are each done once, by the caller or a helper, in every
// one of many Runs (short ones too, where helpers often wake after the caller is done).
TEST(SharedWorkTest, EveryChunkIsDoneOnceAcrossManyRuns) {
  SharedWork work(3, "t");
  for (size_t chunks : {size_t{1}, size_t{3}, size_t{64}}) {
    for (int run = 0; run < 500; ++run) {
      std::vector<std::atomic<int>> done(chunks);
      std::atomic<size_t> next{0};
      std::atomic<bool> bad_worker{false};
      work.Run([&](size_t w) {
        if (w > 3) bad_worker = true;
        for (size_t c; (c = next.fetch_add(1)) < chunks;) done[c].fetch_add(1);
      });
      for (size_t c = 0; c < chunks; ++c) ASSERT_EQ(done[c].load(), 1) << "chunk " << c << " run " << run;
      ASSERT_FALSE(bad_worker);
    }
  }
}

// Helpers do join: the caller's part waits (bounded) until a helper has run the task, and every
// helper run has returned by the time Run does.
TEST(SharedWorkTest, HelpersJoinAndRunReturnsAfterThem) {
  SharedWork work(2, "t");
  std::atomic<int> helper_runs{0}, helper_done{0};
  work.Run([&](size_t w) {
    if (w == 0) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
      while (helper_runs.load() == 0 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
      return;
    }
    helper_runs.fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    helper_done.fetch_add(1);
  });
  EXPECT_GE(helper_runs.load(), 1);
  EXPECT_EQ(helper_done.load(), helper_runs.load());
  EXPECT_EQ(work.joins(), static_cast<size_t>(helper_runs.load()));
}

}  // namespace
}  // namespace metaps
