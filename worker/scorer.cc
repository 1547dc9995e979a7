#include "worker/scorer.h"

#include <algorithm>
#include <cmath>

namespace metaps::worker {

float PredictRow(const ModelSpec& m, std::span<const TensorSlot> layout, const Task& t, int row,
                 const float* w, const RowMap& rows) {
  std::vector<float> x(m.input_width(), 0.f);
  for (int f = 0; f < m.num_fields(); ++f) {
    int32_t b = t.offsets[row * t.fields + f], e = t.offsets[row * t.fields + f + 1];
    float* dst = x.data() + m.field_offset(f);
    for (int32_t i = b; i < e; ++i) {
      auto it = rows.find(t.keys[i]);
      if (it == rows.end()) continue;
      for (int d = 0; d < m.fields[f].dim; ++d) dst[d] += it->second[d];
    }
    if (m.fields[f].pooling == Pooling::kMean && e - b > 1) {
      for (int d = 0; d < m.fields[f].dim; ++d) dst[d] /= static_cast<float>(e - b);
    }
  }
  std::vector<float> h = std::move(x), next;
  for (size_t l = 0; l < layout.size(); l += 2) {
    const TensorSlot& W = layout[l];
    const TensorSlot& B = layout[l + 1];
    next.assign(W.cols, 0.f);
    for (int64_t o = 0; o < W.cols; ++o) next[o] = w[B.offset + o];
    for (int64_t i = 0; i < W.rows; ++i) {
      float hi = h[i];
      if (hi == 0.f) continue;
      const float* wr = w + W.offset + i * W.cols;
      for (int64_t o = 0; o < W.cols; ++o) next[o] += hi * wr[o];
    }
    if (l + 2 < layout.size()) {
      for (float& v : next) v = std::max(v, 0.f);
    }
    h.swap(next);
  }
  float y = h[0];
  return m.loss == Loss::kBce ? 1.f / (1.f + std::exp(-y)) : y;
}

namespace {

// Every algorithm adapts with the same inner loop (plain SGD steps; Meta-SGD with its learned
// rates): they differ only in the meta-gradient, which serving does not need. FOMAML's is the
// cheapest (no reverse pass through the inner steps), so the others adapt through it.
MetaOptions InnerLoopOnly(MetaOptions o) {
  if (o.algo != Algo::kMetaSgd) o.algo = Algo::kFomaml;
  return o;
}

}  // namespace

Scorer::Scorer(const JobModel& job, DenseParams params, Kernels* kernels)
    : job_(job),
      params_(std::move(params)),
      learner_(job.model, InnerLoopOnly(job.meta), kernels),
      layout_(job.model.param_layout()) {}

Result<std::vector<float>> Scorer::Score(const Task& task, const RowMap& rows, bool* adapted) {
  if (task.fields != job_.model.num_fields()) {
    return InvalidArgument("a task of " + std::to_string(task.fields) + " fields for a model of " +
                           std::to_string(job_.model.num_fields()));
  }
  if (task.num_query < 1) return InvalidArgument("nothing to score: no candidates");
  const bool adapt = task.num_support > 0 && job_.meta.inner_steps > 0;
  const float* w = params_.weights.data();
  if (adapt) {
    const Task* ptr = &task;
    METAPS_RETURN_IF_ERROR(builder_.Build(job_.model, std::span<const Task* const>(&ptr, 1), &batch_));
    values_.assign(batch_.num_values(), 0.f);
    for (size_t k = 0; k < batch_.keys.size(); ++k) {
      auto it = rows.find(batch_.keys[k]);
      if (it != rows.end())
        std::copy(it->second.begin(), it->second.end(), values_.begin() + batch_.row_offsets[k]);
    }
    METAPS_RETURN_IF_ERROR(learner_.Compute(batch_, params_.weights, params_.alpha, values_, true, &grad_));
    w = grad_.adapted.data();
  }
  if (adapted) *adapted = adapt;
  std::vector<float> scores;
  scores.reserve(task.num_query);
  for (int r = task.num_support; r < task.rows(); ++r)
    scores.push_back(PredictRow(job_.model, layout_, task, r, w, rows));
  return scores;
}

}  // namespace metaps::worker
