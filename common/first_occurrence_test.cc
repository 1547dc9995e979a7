#include "common/first_occurrence.h"

#include <random>
#include <unordered_map>

#include <gtest/gtest.h>

namespace metaps {
namespace {

// Reference: the first position of each key, by a std::unordered_map.
std::vector<uint32_t> Expected(const std::vector<Key>& keys) {
  std::unordered_map<Key, uint32_t> first;
  std::vector<uint32_t> out;
  for (size_t i = 0; i < keys.size(); ++i) out.push_back(first.try_emplace(keys[i], static_cast<uint32_t>(i)).first->second);
  return out;
}

TEST(FirstOccurrenceTest, MatchesAReferenceOverBatchesOfManySizesAndDuplicateRates) {
  std::mt19937_64 rng(7);
  FirstOccurrence f;  // one table reused across batches, big ones followed by small ones
  for (size_t n : {0, 1, 2, 7, 8, 9, 100, 10000, 3, 50000, 16, 1000}) {
    for (uint64_t distinct : {uint64_t{1}, uint64_t{5}, n / 2 + 1, uint64_t{1} << 40}) {
      std::vector<Key> keys(n);
      for (auto& k : keys) k = rng() % distinct;  // small keys, many repeats
      f.Start(keys);
      const auto want = Expected(keys);
      for (size_t i = 0; i < n; ++i) {
        if (i + 4 < n) f.Prefetch(i + 4);
        ASSERT_EQ(f.Visit(i), want[i]) << "n=" << n << " distinct=" << distinct << " i=" << i;
      }
      // The same batch again through FindFirstRepeat and NumberUnique.
      size_t want_repeat = 0;
      while (want_repeat < n && want[want_repeat] == want_repeat) ++want_repeat;
      std::vector<uint32_t> want_number(n);
      uint32_t next = 0;
      for (size_t i = 0; i < n; ++i) want_number[i] = want[i] == i ? next++ : want_number[want[i]];
      f.Start(keys);
      const size_t repeat = f.FindFirstRepeat();
      ASSERT_EQ(repeat, want_repeat) << "n=" << n << " distinct=" << distinct;
      if (repeat == n) continue;
      std::vector<uint32_t> number;
      size_t calls = 0;
      const size_t unique = f.NumberUnique(repeat, &number, [&](size_t i, uint32_t u, bool first) {
        EXPECT_EQ(i, repeat + calls++);
        EXPECT_EQ(u, want_number[i]);
        EXPECT_EQ(first, want[i] == i);
      });
      EXPECT_EQ(calls, n - repeat);
      EXPECT_EQ(number, want_number) << "n=" << n << " distinct=" << distinct;
      EXPECT_EQ(unique, size_t{next});
    }
  }
}

TEST(FirstOccurrenceTest, VisitingARepeatAgainChangesNothing) {
  const std::vector<Key> keys = {9, 4, 9, 4, 1, 9};
  FirstOccurrence f;
  f.Start(keys);
  EXPECT_EQ(f.Visit(0), 0u);
  EXPECT_EQ(f.Visit(1), 1u);
  EXPECT_EQ(f.Visit(2), 0u);
  EXPECT_EQ(f.Visit(2), 0u);  // again: still the first 9
  EXPECT_EQ(f.Visit(3), 1u);
  EXPECT_EQ(f.Visit(4), 4u);
  EXPECT_EQ(f.Visit(5), 0u);
}

TEST(FirstOccurrenceTest, AStartForgetsTheLastBatch) {
  FirstOccurrence f;
  const std::vector<Key> a = {1, 2, 3};
  f.Start(a);
  for (size_t i = 0; i < a.size(); ++i) f.Visit(i);
  const std::vector<Key> b = {3, 2, 1, 3};
  f.Start(b);
  EXPECT_EQ(f.Visit(0), 0u);
  EXPECT_EQ(f.Visit(1), 1u);
  EXPECT_EQ(f.Visit(2), 2u);
  EXPECT_EQ(f.Visit(3), 0u);
}

}  // namespace
}  // namespace metaps
