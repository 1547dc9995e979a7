#include "scheduler/rounds.h"

#include <gtest/gtest.h>

namespace metaps::scheduler {
namespace {

using Released = std::vector<std::pair<int, uint64_t>>;

TEST(RoundClockTest, BspIsABarrierPerRound) {
  RoundClock c(Consistency::kBsp, 5, 3);  // staleness is ignored under BSP
  EXPECT_EQ(c.Advance(0, 1), Released{});
  EXPECT_EQ(c.Advance(1, 1), Released{});
  Released all = c.Advance(2, 1);
  EXPECT_EQ(all, (Released{{0, 1}, {1, 1}, {2, 1}}));
  // Nobody may run round 2 before everyone finished round 1 again.
  EXPECT_EQ(c.Advance(2, 2), Released{});
  EXPECT_TRUE(c.Waiting(2));
}

TEST(RoundClockTest, SspLetsFastWorkersRunAtMostSRoundsAhead) {
  RoundClock c(Consistency::kSsp, 2, 2);
  EXPECT_EQ(c.Advance(0, 1), (Released{{0, 1}}));  // 1 <= 0 + 2
  EXPECT_EQ(c.Advance(0, 2), (Released{{0, 2}}));  // 2 <= 0 + 2
  EXPECT_EQ(c.Advance(0, 3), Released{});          // 3 > 0 + 2: waits for the slow one
  EXPECT_EQ(c.Advance(1, 1), (Released{{0, 3}, {1, 1}}));
  EXPECT_EQ(c.MinClock(), 1u);
}

TEST(RoundClockTest, AspNeverWaits) {
  RoundClock c(Consistency::kAsp, 0, 2);
  EXPECT_EQ(c.Advance(0, 100), (Released{{0, 100}}));
}

TEST(RoundClockTest, DeadWorkersDoNotHoldTheBarrier) {
  RoundClock c(Consistency::kBsp, 0, 3);
  c.Advance(0, 1);
  c.Advance(1, 1);
  EXPECT_EQ(c.SetAlive(2, false), (Released{{0, 1}, {1, 1}}));
}

TEST(RoundClockTest, ParsesModesAndNamesTheBadOne) {
  EXPECT_EQ(*ParseConsistency("ssp"), Consistency::kSsp);
  EXPECT_NE(ParseConsistency("sync").status().message().find("'sync'"), std::string::npos);
}

}  // namespace
}  // namespace metaps::scheduler
