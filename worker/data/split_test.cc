#include "worker/data/split.h"

#include <gtest/gtest.h>

#include <set>

#include "worker/data/internal/test_files.h"

namespace metaps::data {
namespace {

using testing::TempDir;

bool Contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// `users` users (ids 1..users); user u has 15 + (u % 20) events whose timestamps are scrambled
// in file order. One field (the user id).
Dataset MakeDataset(int users) {
  Dataset ds({FieldSpec{"user"}});
  for (int u = 1; u <= users; ++u) {
    const int n = 15 + u % 20;
    for (int e = 0; e < n; ++e) {
      const int64_t ts = 1000 + (e * 7919) % n;  // a permutation of 1000..1000+n-1
      ds.BeginEvent(static_cast<uint64_t>(u), static_cast<uint64_t>(e), static_cast<float>(e % 5 + 1), ts);
      ds.AddKey(FeatureKey("user", std::to_string(u)));
      ds.EndField();
    }
  }
  return ds;
}

std::set<uint64_t> UsersOf(const std::vector<EvalTask>& tasks) {
  std::set<uint64_t> out;
  for (const auto& t : tasks) out.insert(t.user);
  return out;
}

TEST(SplitTest, RandomSplitHasExactFractionsAndIsDeterministic) {
  const Dataset ds = MakeDataset(200);
  SplitOptions o;
  o.validation_fraction = 0.1;
  o.test_fraction = 0.2;
  o.seed = 7;
  o.support = 5;
  o.query = 5;  // every user has >= 15 events: nobody skipped
  auto a = SplitUsers(ds, o);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->stats.users, 200u);
  EXPECT_EQ(a->stats.test_users, 40u);
  EXPECT_EQ(a->stats.validation_users, 20u);
  EXPECT_EQ(a->stats.train_users, 140u);
  EXPECT_EQ(a->test.size(), 40u);
  EXPECT_EQ(a->validation.size(), 20u);
  EXPECT_EQ(a->train.size(), 140u);

  auto b = SplitUsers(ds, o);
  EXPECT_EQ(UsersOf(a->test), UsersOf(b->test));
  EXPECT_EQ(UsersOf(a->validation), UsersOf(b->validation));
  o.seed = 8;
  auto c = SplitUsers(ds, o);
  EXPECT_NE(UsersOf(a->test), UsersOf(c->test));

  // Disjoint, and every event of a train user is kept.
  std::set<uint64_t> seen = UsersOf(a->test);
  for (uint64_t u : UsersOf(a->validation)) EXPECT_TRUE(seen.insert(u).second);
  size_t train_events = 0;
  for (const auto& u : a->train) {
    EXPECT_TRUE(seen.insert(u.user).second);
    train_events += u.events.size();
    EXPECT_EQ(u.events.size(), static_cast<size_t>(15 + u.user % 20));
    for (size_t i = 1; i < u.events.size(); ++i) {
      EXPECT_LE(ds.timestamp(u.events[i - 1]), ds.timestamp(u.events[i]));
    }
  }
  EXPECT_EQ(seen.size(), 200u);
}

TEST(SplitTest, SupportIsTheFirstKAndQueryTheLastQByTime) {
  const Dataset ds = MakeDataset(50);
  SplitOptions o;
  o.validation_fraction = 0;
  o.test_fraction = 1;
  o.support = 10;
  o.query = 10;
  auto s = SplitUsers(ds, o);
  ASSERT_TRUE(s.ok()) << s.status();
  // Users with 15 + u % 20 < 20 events, i.e. u % 20 < 5, are skipped and counted: 14 of 1..50
  // (u = 1-4, 20-24, 40-44).
  EXPECT_EQ(s->stats.test_users, 50u);
  EXPECT_EQ(s->stats.test_skipped, 14u);
  ASSERT_EQ(s->test.size(), 36u);
  for (const EvalTask& t : s->test) {
    ASSERT_EQ(t.support.size(), 10u);
    ASSERT_EQ(t.query.size(), 10u);
    const int64_t n = 15 + static_cast<int64_t>(t.user % 20);
    // Timestamps are 1000..1000+n-1: the support holds the earliest ten, the query the latest ten.
    for (size_t i = 0; i < 10; ++i) {
      EXPECT_EQ(ds.timestamp(t.support[i]), 1000 + static_cast<int64_t>(i));
      EXPECT_EQ(ds.timestamp(t.query[i]), 1000 + n - 10 + static_cast<int64_t>(i));
      EXPECT_EQ(ds.user(t.query[i]), t.user);
    }
  }
  EXPECT_TRUE(s->train.empty());
  const auto bags = ds.FieldBags(s->test[0].query[0]);
  ASSERT_EQ(bags.size(), 1u);
  EXPECT_EQ(bags[0], std::vector<Key>{FeatureKey("user", std::to_string(s->test[0].user))});
}

TEST(SplitTest, FilesListValidationAndTestUsers) {
  TempDir dir;
  const Dataset ds = MakeDataset(30);
  dir.Write("test.txt", "# test users\n3\n5\n\n7,extra column\n999\n");
  dir.Write("val.txt", "4\n6\n");
  auto cfg =
      Config::ParseString("[eval]\nsplit = \"files\"\ntest_users = \"" + dir.File("test.txt") +
                          "\"\nvalidation_users = \"" + dir.File("val.txt") + "\"\nsupport = 2\nquery = 3\n");
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto o = SplitOptionsFromConfig(*cfg->GetTable("eval"));
  ASSERT_TRUE(o.ok()) << o.status();
  auto s = SplitUsers(ds, *o);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(UsersOf(s->test), (std::set<uint64_t>{3, 5, 7}));
  EXPECT_EQ(UsersOf(s->validation), (std::set<uint64_t>{4, 6}));
  EXPECT_EQ(s->train.size(), 25u);
  EXPECT_EQ(s->stats.listed_but_absent, 1u);  // 999

  dir.Write("val.txt", "4\n5\n");
  auto overlap = SplitUsers(ds, *o);
  ASSERT_FALSE(overlap.ok());
  EXPECT_TRUE(
      Contains(overlap.status().message(), "eval.validation_users: user 5 is also listed in eval.test_users"))
      << overlap.status();

  o->test_users_file = dir.File("missing.txt");
  auto missing = SplitUsers(ds, *o);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "eval.test_users: file missing.txt not found in " + dir.path());
}

TEST(SplitTest, ConfigErrorsNameTheKey) {
  auto check = [](const std::string& toml, const std::string& expected) {
    auto cfg = Config::ParseString("[eval]\n" + toml);
    ASSERT_TRUE(cfg.ok()) << cfg.status();
    auto o = SplitOptionsFromConfig(*cfg->GetTable("eval"));
    ASSERT_FALSE(o.ok()) << toml;
    EXPECT_TRUE(Contains(o.status().message(), expected)) << o.status();
  };
  check("test_fraction = 0.7\nvalidation_fraction = 0.5\n",
        "eval.test_fraction: validation_fraction + test_fraction");
  check("test_fraction = -0.1\n", "eval.test_fraction: must be within [0, 1]");
  check("split = \"halves\"\n", "eval.split: expected one of random, files");
  check("split = \"files\"\n", "eval.test_users: required key is missing");
  check("support = 0\n", "eval.support: 0 is outside");
  check("suport = 3\n", "eval.suport: unknown key");
}

}  // namespace
}  // namespace metaps::data
