#include "worker/data/datagen.h"

#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "worker/data/internal/test_files.h"
#include "worker/data/readers.h"
#include "worker/data/split.h"

namespace metaps::data {
namespace {

using testing::TempDir;

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

double Correlation(const std::vector<double>& x, const std::vector<double>& y) {
  const double n = static_cast<double>(x.size());
  double mx = 0, my = 0;
  for (size_t i = 0; i < x.size(); ++i) mx += x[i] / n, my += y[i] / n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  return sxy / std::sqrt(sxx * syy);
}

TEST(DatagenTest, SameSeedSameSetOtherSeedOtherSet) {
  DatagenOptions o;
  o.users = 200;
  o.items = 100;
  o.seed = 5;
  auto a = GenerateSynthetic(o), b = GenerateSynthetic(o);
  ASSERT_TRUE(a.ok() && b.ok());
  TempDir d1, d2, d3;
  ASSERT_TRUE(WriteSynthetic(*a, d1.path()).ok());
  ASSERT_TRUE(WriteSynthetic(*b, d2.path()).ok());
  EXPECT_EQ(Slurp(d1.File("events.csv")), Slurp(d2.File("events.csv")));
  o.seed = 6;
  auto c = GenerateSynthetic(o);
  ASSERT_TRUE(WriteSynthetic(*c, d3.path()).ok());
  EXPECT_NE(Slurp(d1.File("events.csv")), Slurp(d3.File("events.csv")));
  EXPECT_FALSE(GenerateSynthetic(DatagenOptions{.users = 0}).ok());
}

TEST(DatagenTest, RatingsFollowTheUsersLatentTaste) {
  DatagenOptions o;
  o.users = 600;
  o.items = 300;
  o.events_per_user = 40;
  auto set = GenerateSynthetic(o);
  ASSERT_TRUE(set.ok());
  const auto& ev = set->events;

  // Per user: mean rating against mean latent affinity; users differ a lot and taste explains it.
  std::vector<double> sum_y(o.users), sum_a(o.users), count(o.users);
  std::vector<double> item_sum(o.items), item_n(o.items);
  for (size_t i = 0; i < ev.size(); ++i) {
    sum_y[ev[i].user] += ev[i].label;
    sum_a[ev[i].user] += ev[i].affinity;
    count[ev[i].user] += 1;
    item_sum[ev[i].item] += ev[i].label;
    item_n[ev[i].item] += 1;
    if (i > 0 && ev[i - 1].user == ev[i].user) {
      EXPECT_LT(ev[i - 1].timestamp, ev[i].timestamp);
    }
  }
  std::vector<double> mean_y, mean_a;
  for (uint32_t u = 0; u < o.users; ++u) {
    ASSERT_GE(count[u], 20);  // 20..60 events each
    mean_y.push_back(sum_y[u] / count[u]);
    mean_a.push_back(sum_a[u] / count[u]);
  }
  double m = 0, var = 0;
  for (double y : mean_y) m += y / o.users;
  for (double y : mean_y) var += (y - m) * (y - m) / o.users;
  EXPECT_GT(std::sqrt(var), 0.5) << "per-user mean ratings barely differ";
  EXPECT_GT(Correlation(mean_y, mean_a), 0.9);

  // A global model (item mean) against one that adapts to the first 10 events of each user (a
  // user offset plus shrunk per-genre and per-category residuals: a crude inner loop), both scored
  // on each user's last 10 events: adapting to a few events must truly help.
  auto item_mean = [&](uint32_t i) { return item_n[i] ? item_sum[i] / item_n[i] : 3.0; };
  double se_global = 0, se_offset = 0, se_adapted = 0, n = 0;
  size_t begin = 0;
  while (begin < ev.size()) {
    size_t end = begin;
    while (end < ev.size() && ev[end].user == ev[begin].user) ++end;
    double offset = 0;
    for (size_t i = begin; i < begin + 10; ++i) offset += (ev[i].label - item_mean(ev[i].item)) / 10;
    std::vector<double> g_sum(o.genres), g_n(o.genres), c_sum(o.categories), c_n(o.categories);
    for (size_t i = begin; i < begin + 10; ++i) {
      const SyntheticItem& it = set->items[ev[i].item];
      const double r = ev[i].label - item_mean(ev[i].item) - offset;
      for (uint32_t g : it.genres) g_sum[g] += r, g_n[g] += 1;
      c_sum[it.category] += r, c_n[it.category] += 1;
    }
    for (size_t i = end - 10; i < end; ++i) {
      const SyntheticItem& it = set->items[ev[i].item];
      const double g = item_mean(ev[i].item);
      double taste = 0;
      for (uint32_t k : it.genres) taste += g_sum[k] / (g_n[k] + 1.0) / static_cast<double>(it.genres.size());
      taste += 0.5 * c_sum[it.category] / (c_n[it.category] + 1.0);
      se_global += (ev[i].label - g) * (ev[i].label - g);
      se_offset += (ev[i].label - g - offset) * (ev[i].label - g - offset);
      se_adapted += (ev[i].label - g - offset - taste) * (ev[i].label - g - offset - taste);
      n += 1;
    }
    begin = end;
  }
  const double rmse_global = std::sqrt(se_global / n), rmse_offset = std::sqrt(se_offset / n),
               rmse_adapted = std::sqrt(se_adapted / n);
  std::printf("query RMSE: item mean %.3f, + user offset %.3f, + genre/category taste %.3f\n", rmse_global,
              rmse_offset, rmse_adapted);
  EXPECT_LT(rmse_offset, 0.95 * rmse_global);
  EXPECT_LT(rmse_adapted, 0.85 * rmse_global);
}

TEST(DatagenTest, ClicksAreBinaryAndBalancedEnough) {
  DatagenOptions o;
  o.users = 300;
  o.items = 200;
  o.binary = true;
  auto set = GenerateSynthetic(o);
  ASSERT_TRUE(set.ok());
  double clicks = 0;
  std::vector<double> a, y;
  for (const auto& e : set->events) {
    ASSERT_TRUE(e.label == 0 || e.label == 1);
    clicks += e.label;
    a.push_back(e.affinity);
    y.push_back(e.label);
  }
  const double rate = clicks / static_cast<double>(set->events.size());
  EXPECT_GT(rate, 0.2);
  EXPECT_LT(rate, 0.8);
  EXPECT_GT(Correlation(a, y), 0.4);
}

TEST(DatagenTest, WrittenSetReadsBackWithItsOwnConfig) {
  DatagenOptions o;
  o.users = 100;
  o.items = 80;
  o.binary = true;
  auto set = GenerateSynthetic(o);
  ASSERT_TRUE(set.ok());
  TempDir dir;
  ASSERT_TRUE(WriteSynthetic(*set, dir.path()).ok());
  auto cfg = Config::ParseFile(dir.File("data.toml"));
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto ds = LoadDataset(*cfg->GetTable("data"));
  ASSERT_TRUE(ds.ok()) << ds.status();
  ASSERT_EQ(ds->size(), set->events.size());
  EXPECT_EQ(ds->bad.bad, 0u);
  EXPECT_EQ(ds->num_fields(), 7u);  // user, age_group, region, item, category, genres, price
  EXPECT_TRUE(ds->binary_labels());
  for (size_t i = 0; i < ds->size(); ++i) {
    ASSERT_EQ(ds->label(i), set->events[i].label);
    ASSERT_EQ(ds->user(i), set->events[i].user + 1u);
    ASSERT_EQ(ds->keys(i, ds->FieldIndex("genres")).size(), set->items[set->events[i].item].genres.size());
  }
  auto split_options = SplitOptionsFromConfig(*cfg->GetTable("eval"));
  ASSERT_TRUE(split_options.ok()) << split_options.status();
  auto split = SplitUsers(*ds, *split_options);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_EQ(split->stats.test_users, 20u);
}

}  // namespace
}  // namespace metaps::data
