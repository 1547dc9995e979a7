#include "ps/dedupe_window.h"

#include <gtest/gtest.h>

namespace metaps::ps {
namespace {

TEST(DedupeWindowTest, RemembersTheNewestIdsOfTheNewestSenders) {
  DedupeWindow w(/*senders=*/2, /*per_sender=*/3);
  for (uint64_t id = 1; id <= 4; ++id) w.Add("a", id);
  EXPECT_FALSE(w.Seen("a", 1));  // the oldest of a's ids went first
  for (uint64_t id = 2; id <= 4; ++id) EXPECT_TRUE(w.Seen("a", id));
  EXPECT_FALSE(w.Seen("b", 2));
  w.Add("b", 1);
  w.Add("a", 5);  // a is now the most recent sender
  w.Add("c", 1);  // evicts b, the least recently active
  EXPECT_FALSE(w.Seen("b", 1));
  EXPECT_TRUE(w.Seen("a", 5));
  EXPECT_TRUE(w.Seen("c", 1));
}

TEST(DedupeWindowTest, EncodeDecodeKeepsIdsAndRecency) {
  DedupeWindow w(3, 4);
  w.Add("old", 10);
  w.Add("mid", 20);
  w.Add("new", 30);
  w.Add("new", 31);
  DedupeWindow back(3, 4);
  ASSERT_TRUE(back.Decode(w.Encode()).ok());
  EXPECT_EQ(back.num_senders(), 3u);
  EXPECT_TRUE(back.Seen("old", 10) && back.Seen("mid", 20) && back.Seen("new", 30) && back.Seen("new", 31));
  back.Add("fourth", 1);  // recency survived: "old" is the one evicted
  EXPECT_FALSE(back.Seen("old", 10));
  EXPECT_TRUE(back.Seen("mid", 20));
  // Decoding into a smaller window keeps the newest of everything.
  DedupeWindow small(1, 1);
  ASSERT_TRUE(small.Decode(w.Encode()).ok());
  EXPECT_TRUE(small.Seen("new", 31));
  EXPECT_FALSE(small.Seen("new", 30));
  EXPECT_FALSE(small.Seen("mid", 20));
}

TEST(DedupeWindowTest, DecodeRefusesBytesThatAreNotAWindow) {
  DedupeWindow w;
  w.Add("sender", 1);
  const std::string good = w.Encode();
  DedupeWindow back;
  EXPECT_EQ(back.Decode("junk").code(), StatusCode::kDataLoss);
  EXPECT_EQ(back.Decode(good.substr(0, good.size() - 1)).code(), StatusCode::kDataLoss);
  EXPECT_EQ(back.Decode(good + "x").code(), StatusCode::kDataLoss);
  EXPECT_TRUE(back.empty());
  EXPECT_TRUE(back.Decode(DedupeWindow().Encode()).ok());
}

}  // namespace
}  // namespace metaps::ps
