#include "worker/data/metrics.h"

#include <gtest/gtest.h>

#include <cmath>

namespace metaps::data {
namespace {

using V = std::vector<float>;

TEST(MetricsTest, MaeAndRmseByHand) {
  // Errors 1, 0, -2, 0: MAE = 3/4 = 0.75; RMSE = sqrt((1 + 0 + 4 + 0) / 4) = sqrt(1.25) = 1.1180340.
  const V y = {1, 2, 3, 4}, p = {2, 2, 1, 4};
  EXPECT_DOUBLE_EQ(MeanAbsoluteError(y, p), 0.75);
  EXPECT_NEAR(RootMeanSquaredError(y, p), 1.1180340, 1e-7);
  EXPECT_TRUE(std::isnan(MeanAbsoluteError(V{}, V{})));
}

TEST(MetricsTest, NdcgByHand) {
  // Labels 3, 2, 0, 1; scores rank the rows 1, 2, 3, 0 (gains 2, 0, 1, 3).
  //   DCG@4  = 2/log2(2) + 0/log2(3) + 1/log2(4) + 3/log2(5) = 2 + 0 + 0.5 + 1.2920297 = 3.7920297
  //   IDCG@4 = 3/log2(2) + 2/log2(3) + 1/log2(4) + 0         = 3 + 1.2618595 + 0.5     = 4.7618595
  //   nDCG@4 = 0.7963335
  //   nDCG@2 = (2 + 0) / (3 + 1.2618595) = 0.4692787
  const V y = {3, 2, 0, 1}, s = {0.1f, 0.9f, 0.5f, 0.2f};
  EXPECT_NEAR(UserNdcgAtK(y, s, 4), 0.7963335, 1e-6);
  EXPECT_NEAR(UserNdcgAtK(y, s, 10), 0.7963335, 1e-6);  // k past the list: the whole list
  EXPECT_NEAR(UserNdcgAtK(y, s, 2), 0.4692787, 1e-6);
  EXPECT_NEAR(UserNdcgAtK(y, y, 4), 1.0, 1e-12);              // a perfect ranking
  EXPECT_TRUE(std::isnan(UserNdcgAtK(V{0, 0}, V{1, 2}, 2)));  // no gain at all: undefined
}

TEST(MetricsTest, AucWithTiesByHand) {
  // Scores ascending: 0.1 (neg) rank 1; 0.4 (neg) and 0.4 (pos) share ranks 2 and 3 -> 2.5; 0.8 (pos)
  // rank 4. AUC = (6.5 - 2*3/2) / (2*2) = 0.875. Pairwise: 1 + 1 + 0.5 (the tie) + 1 = 3.5 of 4.
  EXPECT_DOUBLE_EQ(Auc(V{1, 0, 1, 0}, V{0.8f, 0.4f, 0.4f, 0.1f}), 0.875);
  EXPECT_DOUBLE_EQ(Auc(V{1, 0}, V{0.9f, 0.1f}), 1.0);
  EXPECT_DOUBLE_EQ(Auc(V{1, 0}, V{0.1f, 0.9f}), 0.0);
  EXPECT_DOUBLE_EQ(Auc(V{1, 0, 1, 0}, V{0.5f, 0.5f, 0.5f, 0.5f}), 0.5);  // all tied
  EXPECT_TRUE(std::isnan(Auc(V{1, 1}, V{0.2f, 0.3f})));                  // one class only
}

TEST(MetricsTest, LogLossByHandAndClamped) {
  // -(ln 0.8 + ln(1 - 0.4)) / 2 = (0.2231436 + 0.5108256) / 2 = 0.3669846.
  EXPECT_NEAR(LogLoss(V{1, 0}, V{0.8f, 0.4f}), 0.3669846, 1e-6);
  // p = 0 for a positive is clamped to 1e-7: -ln(1e-7) = 16.1180957.
  EXPECT_NEAR(LogLoss(V{1}, V{0}), 16.1180957, 1e-5);
  EXPECT_TRUE(std::isfinite(LogLoss(V{0}, V{1})));
}

TEST(MetricsTest, AccumulatorAveragesNdcgOverUsersAndMerges) {
  MetricsAccumulator a(4, /*binary=*/false), b(4, false), all(4, false);
  const V y1 = {3, 2, 0, 1}, s1 = {0.1f, 0.9f, 0.5f, 0.2f};  // nDCG@4 0.7963335 (above)
  const V y2 = {1, 2}, s2 = {1, 2};                          // perfect: 1
  const V y3 = {0, 0}, s3 = {1, 1};                          // no gain: left out of the average
  a.AddUser(y1, s1);
  b.AddUser(y2, s2);
  b.AddUser(y3, s3);
  all.AddUser(y1, s1);
  all.AddUser(y2, s2);
  all.AddUser(y3, s3);
  a.Merge(b);
  const EvalMetrics m = a.Compute(), n = all.Compute();
  EXPECT_EQ(m.rows, 8u);
  EXPECT_EQ(m.users, 3u);
  EXPECT_EQ(m.ndcg_users, 2u);
  EXPECT_NEAR(m.ndcg, (0.7963335 + 1.0) / 2, 1e-6);
  EXPECT_DOUBLE_EQ(m.ndcg, n.ndcg);
  EXPECT_DOUBLE_EQ(m.rmse, n.rmse);
  EXPECT_TRUE(std::isnan(m.auc));
  EXPECT_EQ(m.ToString(4).rfind("rows=8 users=3 mae=", 0), 0u) << m.ToString(4);
}

TEST(MetricsTest, BinaryAccumulatorReportsAucAndLogLoss) {
  MetricsAccumulator acc(10, /*binary=*/true);
  acc.AddUser(V{1, 0}, V{0.8f, 0.4f});
  acc.AddUser(V{1, 0}, V{0.4f, 0.1f});
  const EvalMetrics m = acc.Compute();
  EXPECT_DOUBLE_EQ(m.auc, 0.875);  // the tie case above
  EXPECT_NEAR(m.logloss, -(std::log(0.8) + std::log(0.6) + std::log(0.4) + std::log(0.9)) / 4, 1e-6);
  EXPECT_NE(m.ToString(10).find("auc=0.8750"), std::string::npos) << m.ToString(10);
}

}  // namespace
}  // namespace metaps::data
