#include "worker/data/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>

#include "common/status.h"

namespace metaps::data {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kProbClamp = 1e-7;

double Dcg(std::span<const float> labels, const std::vector<uint32_t>& order, size_t k) {
  double dcg = 0;
  for (size_t r = 0; r < std::min(k, order.size()); ++r) {
    dcg += static_cast<double>(labels[order[r]]) / std::log2(static_cast<double>(r) + 2.0);
  }
  return dcg;
}

}  // namespace

double MeanAbsoluteError(std::span<const float> labels, std::span<const float> predictions) {
  METAPS_CHECK(labels.size() == predictions.size());
  if (labels.empty()) return kNaN;
  double sum = 0;
  for (size_t i = 0; i < labels.size(); ++i) sum += std::fabs(double{labels[i]} - double{predictions[i]});
  return sum / static_cast<double>(labels.size());
}

double RootMeanSquaredError(std::span<const float> labels, std::span<const float> predictions) {
  METAPS_CHECK(labels.size() == predictions.size());
  if (labels.empty()) return kNaN;
  double sum = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    const double d = double{labels[i]} - double{predictions[i]};
    sum += d * d;
  }
  return std::sqrt(sum / static_cast<double>(labels.size()));
}

double UserNdcgAtK(std::span<const float> labels, std::span<const float> scores, size_t k) {
  METAPS_CHECK(labels.size() == scores.size());
  if (k == 0 || labels.empty()) return kNaN;
  std::vector<uint32_t> order(labels.size());
  std::iota(order.begin(), order.end(), 0u);
  std::vector<uint32_t> ideal = order;
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return scores[a] > scores[b]; });
  std::stable_sort(ideal.begin(), ideal.end(), [&](uint32_t a, uint32_t b) { return labels[a] > labels[b]; });
  const double idcg = Dcg(labels, ideal, k);
  if (!(idcg > 0)) return kNaN;
  return Dcg(labels, order, k) / idcg;
}

double Auc(std::span<const float> labels, std::span<const float> scores) {
  METAPS_CHECK(labels.size() == scores.size());
  const size_t n = labels.size();
  std::vector<uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return scores[a] < scores[b]; });
  // Sum of the (average, 1-based) ranks of the positives.
  double positive_rank_sum = 0;
  uint64_t positives = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j < n && scores[order[j]] == scores[order[i]]) ++j;
    const double avg_rank = (static_cast<double>(i + 1) + static_cast<double>(j)) / 2.0;
    for (size_t t = i; t < j; ++t) {
      if (labels[order[t]] > 0.5f) {
        positive_rank_sum += avg_rank;
        ++positives;
      }
    }
    i = j;
  }
  const uint64_t negatives = n - positives;
  if (positives == 0 || negatives == 0) return kNaN;
  const double p = static_cast<double>(positives);
  return (positive_rank_sum - p * (p + 1) / 2.0) / (p * static_cast<double>(negatives));
}

double LogLoss(std::span<const float> labels, std::span<const float> probabilities) {
  METAPS_CHECK(labels.size() == probabilities.size());
  if (labels.empty()) return kNaN;
  double sum = 0;
  for (size_t i = 0; i < labels.size(); ++i) {
    const double p = std::clamp(double{probabilities[i]}, kProbClamp, 1.0 - kProbClamp);
    const double y = labels[i];
    sum -= y * std::log(p) + (1.0 - y) * std::log(1.0 - p);
  }
  return sum / static_cast<double>(labels.size());
}

std::string EvalMetrics::ToString(size_t k) const {
  char buf[256];
  int n = std::snprintf(buf, sizeof(buf), "rows=%llu users=%llu mae=%.4f rmse=%.4f ndcg@%zu=%.4f",
                        static_cast<unsigned long long>(rows), static_cast<unsigned long long>(users), mae,
                        rmse, k, ndcg);
  if (binary && n > 0 && static_cast<size_t>(n) < sizeof(buf)) {
    std::snprintf(buf + n, sizeof(buf) - n, " auc=%.4f logloss=%.4f", auc, logloss);
  }
  return buf;
}

void MetricsAccumulator::AddUser(std::span<const float> labels, std::span<const float> predictions) {
  METAPS_CHECK(labels.size() == predictions.size());
  ++users_;
  labels_.insert(labels_.end(), labels.begin(), labels.end());
  predictions_.insert(predictions_.end(), predictions.begin(), predictions.end());
  const double ndcg = UserNdcgAtK(labels, predictions, k_);
  if (!std::isnan(ndcg)) {
    ndcg_sum_ += ndcg;
    ++ndcg_users_;
  }
}

void MetricsAccumulator::Merge(const MetricsAccumulator& other) {
  labels_.insert(labels_.end(), other.labels_.begin(), other.labels_.end());
  predictions_.insert(predictions_.end(), other.predictions_.begin(), other.predictions_.end());
  users_ += other.users_;
  ndcg_users_ += other.ndcg_users_;
  ndcg_sum_ += other.ndcg_sum_;
}

EvalMetrics MetricsAccumulator::Compute() const {
  EvalMetrics m;
  m.rows = labels_.size();
  m.users = users_;
  m.ndcg_users = ndcg_users_;
  m.mae = MeanAbsoluteError(labels_, predictions_);
  m.rmse = RootMeanSquaredError(labels_, predictions_);
  m.ndcg = ndcg_users_ ? ndcg_sum_ / static_cast<double>(ndcg_users_) : kNaN;
  m.binary = binary_;
  m.auc = binary_ ? Auc(labels_, predictions_) : kNaN;
  m.logloss = binary_ ? LogLoss(labels_, predictions_) : kNaN;
  return m;
}

}  // namespace metaps::data
