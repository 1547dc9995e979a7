#include "common/sharding.h"

#include <gtest/gtest.h>

#include <vector>

namespace metaps {
namespace {

TEST(ShardingTest, KeysSpreadEvenlyAcrossShards) {
  for (int32_t shards : {2, 3, 7, 16}) {
    std::vector<int> count(shards, 0);
    const int n = 200000;
    for (int i = 0; i < n; ++i) count[ShardOf(static_cast<Key>(i), shards)]++;  // sequential ids
    for (int c : count) {
      EXPECT_NEAR(static_cast<double>(c) / n, 1.0 / shards, 0.1 / shards) << "shards=" << shards;
    }
  }
}

TEST(ShardingTest, AddingAShardMovesAboutOneOverSPlusOneOnlyToTheNewShard) {
  for (int32_t s : {1, 4, 9}) {
    const int n = 200000;
    int moved = 0;
    for (int i = 0; i < n; ++i) {
      Key k = FeatureKey("item", std::to_string(i));
      int32_t before = ShardOf(k, s), after = ShardOf(k, s + 1);
      if (before != after) {
        ++moved;
        EXPECT_EQ(after, s) << "a moved key must go to the new shard";
      }
    }
    EXPECT_NEAR(static_cast<double>(moved) / n, 1.0 / (s + 1), 0.01) << "s=" << s;
  }
}

TEST(ShardingTest, PlacementIsStable) {
  // Persisted rows name their shard by this function: it must never change.
  EXPECT_EQ(ShardOf(FeatureKey("user", "42"), 8), ShardOf(FeatureKey("user", "42"), 8));
  EXPECT_NE(FeatureKey("user", "42"), FeatureKey("item", "42"));
  EXPECT_EQ(JumpConsistentHash(0, 1), 0);
  EXPECT_EQ(FeatureKey("user", "1"), FeatureKey("user", "1"));
}

}  // namespace
}  // namespace metaps
