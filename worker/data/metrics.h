// Evaluation metrics on query rows after adaptation: MAE, RMSE, nDCG@k within each user's query
// items, and for binary labels AUC and logloss.
//
// Definitions (fixed; results are compared across runs):
//  - MAE = mean |y - p|, RMSE = sqrt(mean (y - p)^2), over all query rows of all users.
//  - nDCG@k per user: DCG = sum_{r=1..min(k,n)} y_(r) / log2(r + 1) with rows ordered by predicted
//    score, descending (ties keep input order); ideal DCG orders by true label. Gain is the label
//    itself (linear). Users whose ideal DCG is 0 (no positive label) are left out of the average;
//    the result is the mean over the remaining users.
//  - AUC: rank-based (Mann-Whitney) over all rows, a row positive when its label > 0.5; tied scores
//    get their average rank, so a tie counts one half. NaN when one class is absent.
//  - Logloss: -mean(y log p + (1 - y) log(1 - p)) with p clamped to [1e-7, 1 - 1e-7]; `p` must be
//    probabilities (apply the sigmoid to logits first).
// Functions are pure. MetricsAccumulator is single-threaded (one per evaluating thread; merge them).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace metaps::data {

// REQUIRES: labels.size() == predictions.size(). Empty input gives NaN.
double MeanAbsoluteError(std::span<const float> labels, std::span<const float> predictions);
double RootMeanSquaredError(std::span<const float> labels, std::span<const float> predictions);
// One user's nDCG@k; NaN when the ideal DCG is 0 or k == 0.
double UserNdcgAtK(std::span<const float> labels, std::span<const float> scores, size_t k);
double Auc(std::span<const float> labels, std::span<const float> scores);
double LogLoss(std::span<const float> labels, std::span<const float> probabilities);

struct EvalMetrics {
  uint64_t rows = 0;
  uint64_t users = 0;       // users added
  uint64_t ndcg_users = 0;  // users that entered the nDCG average
  double mae = 0, rmse = 0, ndcg = 0;
  double auc = 0, logloss = 0;  // only when binary; NaN otherwise
  bool binary = false;
  // "rows=.. users=.. mae=.. rmse=.. ndcg@k=.. [auc=.. logloss=..]"
  std::string ToString(size_t k) const;
};

// Collects per-user query rows and computes every metric at the end.
class MetricsAccumulator {
 public:
  // `binary`: labels are 0/1 and predictions are probabilities (AUC and logloss computed).
  MetricsAccumulator(size_t ndcg_k, bool binary) : k_(ndcg_k), binary_(binary) {}

  // One user's query rows. REQUIRES: labels.size() == predictions.size().
  void AddUser(std::span<const float> labels, std::span<const float> predictions);
  void Merge(const MetricsAccumulator& other);
  EvalMetrics Compute() const;

 private:
  size_t k_;
  bool binary_;
  std::vector<float> labels_, predictions_;
  uint64_t users_ = 0, ndcg_users_ = 0;
  double ndcg_sum_ = 0;
};

}  // namespace metaps::data
