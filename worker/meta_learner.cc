#include "worker/meta_learner.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "worker/internal/vectorize.h"

namespace metaps::worker {
namespace {

// Loops over task-batched tensors: `tasks` copies of a tensor of `size`, task-major; a per-parameter
// operand (w0, alpha) is shared by every task.

// dst = scale * src.
METAPS_VECTORIZE void Scale(float* __restrict dst, const float* __restrict src, float scale, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = scale * src[i];
}

// Meta-SGD's reverse step: u = alpha ⊙ wbar and alphabar -= g ⊙ wbar, per task.
METAPS_VECTORIZE void MetaSgdReverse(const float* __restrict alpha, const float* __restrict wbar,
                                     const float* __restrict g, float* __restrict u, float* __restrict abar,
                                     int64_t tasks, int64_t size) {
  for (int64_t b = 0; b < tasks; ++b) {
    for (int64_t i = 0; i < size; ++i) {
      u[b * size + i] = alpha[i] * wbar[b * size + i];
      abar[b * size + i] -= g[b * size + i] * wbar[b * size + i];
    }
  }
}

// Meta-SGD's inner step: dst = src - alpha ⊙ g, per task.
METAPS_VECTORIZE void MetaSgdStep(const float* __restrict src, const float* __restrict alpha,
                                  const float* __restrict g, float* __restrict dst, int64_t tasks, int64_t size) {
  for (int64_t b = 0; b < tasks; ++b) {
    for (int64_t i = 0; i < size; ++i) dst[b * size + i] = src[b * size + i] - alpha[i] * g[b * size + i];
  }
}

// dst = w0 - moved, per task.
METAPS_VECTORIZE void FromInitial(const float* __restrict w0, const float* __restrict moved, float* __restrict dst,
                                  int64_t tasks, int64_t size) {
  for (int64_t b = 0; b < tasks; ++b) {
    for (int64_t i = 0; i < size; ++i) dst[b * size + i] = w0[i] - moved[b * size + i];
  }
}

METAPS_VECTORIZE void Relu(float* __restrict dst, const float* __restrict src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i] > 0.0f ? src[i] : 0.0f;
}

// dst = a + s * b (dst may be a).
METAPS_VECTORIZE void AddScaled(float* dst, const float* a, const float* b, float s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = a[i] + s * b[i];
}

METAPS_VECTORIZE void AddConstant(float* dst, float c, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += c;
}

// out = scale * sum over tasks.
METAPS_VECTORIZE void MeanOverTasks(const float* __restrict src, float* __restrict out, int64_t tasks, int64_t size,
                                    float scale) {
  for (int64_t i = 0; i < size; ++i) out[i] = 0.0f;
  for (int64_t b = 0; b < tasks; ++b) {
    for (int64_t i = 0; i < size; ++i) out[i] += src[b * size + i];
  }
  for (int64_t i = 0; i < size; ++i) out[i] *= scale;
}

template <typename T>
void Grow(std::vector<T>* v, size_t n) {
  if (v->size() < n) v->resize(n);
}

}  // namespace

Result<Algo> ParseAlgo(std::string_view name) {
  if (name == "fomaml") return Algo::kFomaml;
  if (name == "maml") return Algo::kMaml;
  if (name == "reptile") return Algo::kReptile;
  if (name == "metasgd") return Algo::kMetaSgd;
  return InvalidArgument("unknown algo \"" + std::string(name) + "\" (expected fomaml, maml, reptile or metasgd)");
}

Result<FirstLayer> ParseFirstLayer(std::string_view name) {
  if (name == "auto") return FirstLayer::kAuto;
  if (name == "dense") return FirstLayer::kDense;
  if (name == "low_rank") return FirstLayer::kLowRank;
  return InvalidArgument("expected auto, dense or low_rank, got \"" + std::string(name) + "\"");
}

std::string_view FirstLayerName(FirstLayer f) {
  switch (f) {
    case FirstLayer::kDense:
      return "dense";
    case FirstLayer::kLowRank:
      return "low_rank";
    case FirstLayer::kAuto:
      break;
  }
  return "auto";
}

std::string_view AlgoName(Algo a) {
  switch (a) {
    case Algo::kFomaml: return "fomaml";
    case Algo::kMaml: return "maml";
    case Algo::kReptile: return "reptile";
    case Algo::kMetaSgd: return "metasgd";
  }
  return "?";
}

Result<MetaOptions> MetaOptions::FromConfig(const Config& meta) {
  METAPS_RETURN_IF_ERROR(meta.CheckKnownKeys({"algo", "inner_steps", "inner_lr", "adapt", "first_layer"}));
  MetaOptions o;
  METAPS_ASSIGN_OR_RETURN(std::string algo, meta.GetString("algo", "fomaml"));
  auto parsed = ParseAlgo(algo);
  if (!parsed.ok()) return parsed.status().WithContext(meta.Path("algo"));
  o.algo = *parsed;
  METAPS_ASSIGN_OR_RETURN(int64_t steps, meta.GetIntIn("inner_steps", 5, 0, 1000));
  o.inner_steps = static_cast<int>(steps);
  METAPS_ASSIGN_OR_RETURN(double lr, meta.GetDouble("inner_lr", 0.01));
  if (!(lr >= 0)) return InvalidArgument(meta.Path("inner_lr") + ": must be >= 0");
  o.inner_lr = static_cast<float>(lr);
  METAPS_ASSIGN_OR_RETURN(std::string adapt, meta.GetString("adapt", "mlp"));
  if (adapt == "mlp") {
    o.adapt_last_layers = 0;
  } else if (adapt.rfind("last:", 0) == 0) {
    char* end = nullptr;
    const long n = std::strtol(adapt.c_str() + 5, &end, 10);
    if (end == adapt.c_str() + 5 || *end != '\0' || n <= 0) {
      return InvalidArgument(meta.Path("adapt") + ": expected \"mlp\" or \"last:N\" with N >= 1, got \"" + adapt + "\"");
    }
    o.adapt_last_layers = static_cast<int>(n);
  } else {
    return InvalidArgument(meta.Path("adapt") + ": expected \"mlp\" or \"last:N\", got \"" + adapt + "\"");
  }
  METAPS_ASSIGN_OR_RETURN(std::string first, meta.GetString("first_layer", "auto"));
  auto first_layer = ParseFirstLayer(first);
  if (!first_layer.ok()) return first_layer.status().WithContext(meta.Path("first_layer"));
  o.first_layer = *first_layer;
  return o;
}

MetaLearner::MetaLearner(ModelSpec model, MetaOptions options, Kernels* kernels)
    : model_(std::move(model)), options_(options), kernels_(kernels) {
  slots_ = model_.param_layout();
  widths_ = model_.widths();
  layers_ = model_.num_layers();
  params_ = model_.num_params();
  first_adapted_ = options_.adapt_last_layers > 0 ? std::max(0, layers_ - options_.adapt_last_layers) : 0;
  act_offset_.assign(layers_ + 1, 0);
  for (int l = 0; l < layers_; ++l) act_offset_[l + 1] = act_offset_[l] + widths_[l + 1];
  act_width_ = act_offset_[layers_];
}

Status MetaLearner::Mm(const MatmulSpec& spec, const float* a, const float* b, const float* bias, float* c) {
  flops_ += spec.flops();
  return kernels_->Matmul(spec, a, b, bias, c);
}

void MetaLearner::Prepare(const TaskBatch& batch) {
  tasks_ = batch.num_tasks;
  ms_ = batch.support_rows;
  mq_ = batch.query_rows;
  const int64_t t = tasks_, n0 = widths_[0], n1 = widths_[1];
  const bool history = options_.algo == Algo::kMaml || options_.algo == Algo::kMetaSgd;
  history_ = history;
  const int64_t steps = std::max(1, options_.inner_steps);
  low_rank_ = options_.algo != Algo::kMetaSgd && first_adapted_ == 0 &&
              (options_.first_layer == FirstLayer::kLowRank ||
               (options_.first_layer == FirstLayer::kAuto && ms_ + mq_ <= n0));
  if (low_rank_) {
    Grow(&zs_, t * ms_ * n1);
    Grow(&zq_, t * mq_ * n1);
    Grow(&kss_, t * ms_ * ms_);
    Grow(&kqs_, t * mq_ * ms_);
    Grow(&c_, (history ? options_.inner_steps + 1 : 1) * t * ms_ * n1);
    Grow(&bsum_, t * ms_ * n1);
    Grow(&ss_, t * ms_ * std::max(ms_, mq_));
    Grow(&sq_, t * std::max(ms_, mq_) * std::max(ms_, mq_));
  }
  Grow(&xs_, t * ms_ * n0);
  Grow(&xq_, t * mq_ * n0);
  Grow(&xbar_s_, t * ms_ * n0);
  Grow(&xbar_q_, t * mq_ * n0);
  Grow(&w_, (history ? options_.inner_steps + 1 : 1) * t * params_);
  if (options_.algo == Algo::kMetaSgd) {
    // Only adapted tensors' gradients are written and read.
    Grow(&g_, steps * t * params_);
    Grow(&abar_, t * params_);
  }
  Grow(&hs_, (history ? steps : 1) * t * ms_ * act_width_);
  Grow(&ds_, (history ? steps : 1) * t * ms_ * act_width_);
  Grow(&hq_, t * mq_ * act_width_);
  Grow(&dq_, t * mq_ * act_width_);
  Grow(&wbar_, t * params_);
  if (options_.algo == Algo::kReptile) Grow(&moved_, t * params_);
  if (history) {
    Grow(&u_, t * params_);
    Grow(&rh_, t * ms_ * act_width_);
    Grow(&rd_, t * ms_ * act_width_);
  }
  cs_.assign(t * ms_, 0.0f);
  cq_.assign(t * mq_, 0.0f);
  for (int i = 0; i < tasks_; ++i) {
    for (int r = 0; r < batch.support_count[i]; ++r) cs_[i * ms_ + r] = 1.0f / batch.support_count[i];
    for (int r = 0; r < batch.query_count[i]; ++r) cq_[i * mq_ + r] = 1.0f / batch.query_count[i];
  }
  losses_.assign(t, 0.0f);
}

Status MetaLearner::Forward(const float* w, const float* x, int rows, float* h, const float* z0) {
  const int64_t tr = int64_t{tasks_} * rows;
  if (z0 != nullptr) {
    if (layers_ > 1) {
      Relu(h, z0, tr * widths_[1]);
    } else {
      std::memcpy(h, z0, tr * widths_[1] * sizeof(float));
    }
  }
  for (int l = z0 != nullptr ? 1 : 0; l < layers_; ++l) {
    const float* in = l == 0 ? x : h + tr * act_offset_[l - 1];
    MatmulSpec spec{.batch = tasks_, .m = rows, .k = widths_[l], .n = widths_[l + 1]};
    spec.bias = true;
    spec.relu = l + 1 < layers_;
    METAPS_RETURN_IF_ERROR(Mm(spec, in, Tensor(w, 2 * l), Tensor(w, 2 * l + 1), h + tr * act_offset_[l]));
  }
  return Status::Ok();
}

void MetaLearner::LossGradient(const float* pred, const float* y, const float* c, int rows, float* delta,
                               float* loss) const {
  for (int t = 0; t < tasks_; ++t) {
    double task_loss = 0;
    for (int r = 0; r < rows; ++r) {
      const int64_t i = int64_t{t} * rows + r;
      const float p = pred[i], ci = c[i];
      if (model_.loss == Loss::kMse) {
        const float e = p - y[i];
        delta[i] = 2.0f * ci * e;
        task_loss += double(ci) * e * e;
      } else {
        const float s = 1.0f / (1.0f + std::exp(-p));
        delta[i] = ci * (s - y[i]);
        // softplus(p) - y p, written to stay finite for large |p|.
        task_loss += double(ci) * (std::max(p, 0.0f) - p * y[i] + std::log1p(std::exp(-std::fabs(p))));
      }
    }
    if (loss) loss[t] += static_cast<float>(task_loss);
  }
}

Status MetaLearner::Backward(const float* w, const float* x, int rows, const float* h, float* d, int grad_from,
                             int delta_from, float* g, float alpha, bool accumulate, float* dx) {
  const int64_t tr = int64_t{tasks_} * rows;
  for (int l = layers_ - 1; l >= 0; --l) {
    const int64_t n_in = widths_[l], n_out = widths_[l + 1];
    const float* in = l == 0 ? x : h + tr * act_offset_[l - 1];
    const float* dl = d + tr * act_offset_[l];
    // dh before dW: when g aliases w (an in-place SGD step) this still reads the old W_l.
    if (l > 0 && l > delta_from) {
      float* dprev = d + tr * act_offset_[l - 1];
      METAPS_RETURN_IF_ERROR(Mm({.batch = tasks_, .m = rows, .k = n_out, .n = n_in, .trans_b = true}, dl,
                                Tensor(w, 2 * l), nullptr, dprev));
      METAPS_RETURN_IF_ERROR(kernels_->ReluBackward(tr * n_in, h + tr * act_offset_[l - 1], dprev, dprev));
    } else if (l == 0 && dx != nullptr) {
      METAPS_RETURN_IF_ERROR(
          Mm({.batch = tasks_, .m = rows, .k = n_out, .n = n_in, .trans_b = true}, dl, Tensor(w, 0), nullptr, dx));
    }
    if (g != nullptr && l >= grad_from) {
      MatmulSpec spec{.batch = tasks_, .m = n_in, .k = rows, .n = n_out, .trans_a = true};
      spec.accumulate = accumulate;
      spec.alpha = alpha;
      METAPS_RETURN_IF_ERROR(Mm(spec, in, dl, nullptr, Tensor(g, 2 * l)));
      METAPS_RETURN_IF_ERROR(kernels_->SumRows(tasks_, rows, n_out, dl, alpha, accumulate, Tensor(g, 2 * l + 1)));
    }
  }
  return Status::Ok();
}

Status MetaLearner::ReverseStep(int k, const float* alpha) {
  const int64_t t = tasks_, tr = t * ms_;
  const int64_t step_params = t * params_, step_acts = tr * act_width_;
  const float* wk = w_.data() + k * step_params;
  const float* h = hs_.data() + k * step_acts;
  const float* d = ds_.data() + k * step_acts;
  const bool metasgd = options_.algo == Algo::kMetaSgd;

  // u = (per-parameter rate) ⊙ wbar: the direction whose Hessian-vector product this step needs,
  // since w_{k+1} = w_k - rate ⊙ g(w_k). Meta-SGD also collects d/d(alpha) = -g_k ⊙ wbar_{k+1}.
  for (int j = 0; j < 2 * layers_; ++j) {
    const int64_t size = slots_[j].size();
    float* uj = Tensor(u_.data(), j);
    const float* wb = Tensor(wbar_.data(), j);
    if (j < 2 && low_rank_) continue;  // U0 stays in low-rank form: lr * (Xq^T A + X^T B)
    if (j / 2 < first_adapted_) {
      std::fill(uj, uj + t * size, 0.0f);
      continue;
    }
    if (metasgd) {
      MetaSgdReverse(alpha + slots_[j].offset, wb, Tensor(g_.data() + k * step_params, j), uj, Tensor(abar_.data(), j),
                     t, size);
    } else {
      Scale(uj, wb, options_.inner_lr, t * size);
    }
  }

  // R-forward: tangents of every layer's output along u, inputs held fixed.
  //   Rz_l = Rh_{l-1} W_l + h_{l-1} U_l + Ub_l,  Rh_l = relu'(z_l) ⊙ Rz_l  (Rh_{-1} = 0).
  for (int l = 0; l < layers_; ++l) {
    const int64_t n_in = widths_[l], n_out = widths_[l + 1];
    const float* in = l == 0 ? xs_.data() : h + tr * act_offset_[l - 1];
    float* rz = rh_.data() + tr * act_offset_[l];
    if (l == 0 && low_rank_) {
      // X U0 + Ub0 = lr (K_sq A + K_ss B), A the query's first-layer delta, B the summed -R delta0.
      MatmulSpec qa{.batch = tasks_, .m = ms_, .k = mq_, .n = n_out, .trans_a = true};
      qa.alpha = options_.inner_lr;
      METAPS_RETURN_IF_ERROR(Mm(qa, kqs_.data(), dq_.data(), nullptr, rz));
      MatmulSpec sb{.batch = tasks_, .m = ms_, .k = ms_, .n = n_out};
      sb.alpha = options_.inner_lr;
      sb.accumulate = true;
      METAPS_RETURN_IF_ERROR(Mm(sb, kss_.data(), bsum_.data(), nullptr, rz));
    } else {
      MatmulSpec spec{.batch = tasks_, .m = ms_, .k = n_in, .n = n_out};
      spec.bias = true;
      METAPS_RETURN_IF_ERROR(Mm(spec, in, Tensor(u_.data(), 2 * l), Tensor(u_.data(), 2 * l + 1), rz));
    }
    if (l > 0) {
      MatmulSpec acc{.batch = tasks_, .m = ms_, .k = n_in, .n = n_out};
      acc.accumulate = true;
      METAPS_RETURN_IF_ERROR(Mm(acc, rh_.data() + tr * act_offset_[l - 1], Tensor(wk, 2 * l), nullptr, rz));
    }
    if (l + 1 < layers_) {
      METAPS_RETURN_IF_ERROR(kernels_->ReluBackward(tr * n_out, h + tr * act_offset_[l], rz, rz));
    }
  }

  // R of the loss gradient: R delta_L = loss''(pred) ⊙ R pred.
  {
    const float* pred = h + tr * act_offset_[layers_ - 1];
    const float* rpred = rh_.data() + tr * act_offset_[layers_ - 1];
    float* rdl = rd_.data() + tr * act_offset_[layers_ - 1];
    for (int64_t i = 0; i < tr; ++i) {
      float curvature;
      if (model_.loss == Loss::kMse) {
        curvature = 2.0f * cs_[i];
      } else {
        const float s = 1.0f / (1.0f + std::exp(-pred[i]));
        curvature = cs_[i] * s * (1.0f - s);
      }
      rdl[i] = curvature * rpred[i];
    }
  }

  // R-backward; its weight part is the Hessian-vector product H u, subtracted from wbar in place:
  //   R dW_l = Rh_{l-1}^T delta_l + h_{l-1}^T R delta_l,  R db_l = colsum(R delta_l),
  //   R dh_{l-1} = R delta_l W_l^T + delta_l U_l^T,  R delta_{l-1} = relu'(z_{l-1}) ⊙ R dh_{l-1}.
  // At the input, R dx is the mixed term d(g·u)/dx: the support rows' share of the meta-gradient.
  for (int l = layers_ - 1; l >= 0; --l) {
    const int64_t n_in = widths_[l], n_out = widths_[l + 1];
    const float* in = l == 0 ? xs_.data() : h + tr * act_offset_[l - 1];
    const float* dl = d + tr * act_offset_[l];
    const float* rdl = rd_.data() + tr * act_offset_[l];
    if (l == 0 && low_rank_) {
      // Only the small factors move: S_s += lr (-R delta0 C_k^T + delta0 B^T), then B -= R delta0
      // (W0's meta-gradient is Xq^T A + X^T B; xbar_s is assembled from B, S_s in LowRankFinish).
      MatmulSpec f{.batch = tasks_, .m = ms_, .k = n_out, .n = ms_, .trans_b = true};
      f.accumulate = true;
      f.alpha = -options_.inner_lr;
      METAPS_RETURN_IF_ERROR(Mm(f, rdl, LowRankC(k), nullptr, ss_.data()));
      f.alpha = options_.inner_lr;
      METAPS_RETURN_IF_ERROR(Mm(f, dl, bsum_.data(), nullptr, ss_.data()));
      AddScaled(bsum_.data(), bsum_.data(), rdl, -1.0f, tr * n_out);
      continue;
    }
    MatmulSpec dw{.batch = tasks_, .m = n_in, .k = ms_, .n = n_out, .trans_a = true};
    dw.accumulate = true;
    dw.alpha = -1.0f;
    METAPS_RETURN_IF_ERROR(Mm(dw, in, rdl, nullptr, Tensor(wbar_.data(), 2 * l)));
    if (l > 0) METAPS_RETURN_IF_ERROR(Mm(dw, rh_.data() + tr * act_offset_[l - 1], dl, nullptr, Tensor(wbar_.data(), 2 * l)));
    METAPS_RETURN_IF_ERROR(kernels_->SumRows(tasks_, ms_, n_out, rdl, -1.0f, true, Tensor(wbar_.data(), 2 * l + 1)));

    MatmulSpec dh{.batch = tasks_, .m = ms_, .k = n_out, .n = n_in, .trans_b = true};
    MatmulSpec dh_acc = dh;
    dh_acc.accumulate = true;
    if (l > 0) {
      float* rdprev = rd_.data() + tr * act_offset_[l - 1];
      METAPS_RETURN_IF_ERROR(Mm(dh, rdl, Tensor(wk, 2 * l), nullptr, rdprev));
      METAPS_RETURN_IF_ERROR(Mm(dh_acc, dl, Tensor(u_.data(), 2 * l), nullptr, rdprev));
      METAPS_RETURN_IF_ERROR(kernels_->ReluBackward(tr * n_in, h + tr * act_offset_[l - 1], rdprev, rdprev));
    } else {
      dh_acc.alpha = -1.0f;
      METAPS_RETURN_IF_ERROR(Mm(dh_acc, rdl, Tensor(wk, 0), nullptr, xbar_s_.data()));
      METAPS_RETURN_IF_ERROR(Mm(dh_acc, dl, Tensor(u_.data(), 0), nullptr, xbar_s_.data()));
    }
  }
  return Status::Ok();
}

Status MetaLearner::LowRankSetup(const float* w0, const float* b0) {
  const int64_t t = tasks_, n0 = widths_[0], n1 = widths_[1];
  // W0 is shared by every task here: one GEMM over all tasks' rows.
  MatmulSpec z{.batch = 1, .m = t * ms_, .k = n0, .n = n1};
  z.bias = true;
  METAPS_RETURN_IF_ERROR(Mm(z, xs_.data(), w0, b0, zs_.data()));
  z.m = t * mq_;
  METAPS_RETURN_IF_ERROR(Mm(z, xq_.data(), w0, b0, zq_.data()));
  // The +1 is the bias: b0 moves by -lr * colsum(delta0), i.e. a ones column beside X.
  METAPS_RETURN_IF_ERROR(
      Mm({.batch = tasks_, .m = ms_, .k = n0, .n = ms_, .trans_b = true}, xs_.data(), xs_.data(), nullptr, kss_.data()));
  AddConstant(kss_.data(), 1.0f, t * ms_ * ms_);
  METAPS_RETURN_IF_ERROR(
      Mm({.batch = tasks_, .m = mq_, .k = n0, .n = ms_, .trans_b = true}, xq_.data(), xs_.data(), nullptr, kqs_.data()));
  AddConstant(kqs_.data(), 1.0f, t * mq_ * ms_);
  std::fill(LowRankC(0), LowRankC(0) + t * ms_ * n1, 0.0f);
  return Status::Ok();
}

Status MetaLearner::LowRankInnerStep(int k, const float* delta0) {
  const int64_t n1 = widths_[1];
  MatmulSpec spec{.batch = tasks_, .m = ms_, .k = ms_, .n = n1};
  spec.alpha = -options_.inner_lr;
  spec.accumulate = true;
  METAPS_RETURN_IF_ERROR(Mm(spec, kss_.data(), delta0, nullptr, zs_.data()));
  AddScaled(LowRankC(k + 1), LowRankC(k), delta0, 1.0f, int64_t{tasks_} * ms_ * n1);
  return Status::Ok();
}

Status MetaLearner::LowRankFinish(const float* weights, float* wK, MetaGradient* out, bool want_adapted) {
  const int64_t t = tasks_, n0 = widths_[0], n1 = widths_[1];
  const float lr = options_.inner_lr, inv_t = 1.0f / static_cast<float>(t);
  const float* w0 = weights + slots_[0].offset;
  const float* b0 = weights + slots_[1].offset;
  const float* ck = LowRankC(options_.inner_steps);
  const float* a = dq_.data();  // the query's first-layer delta
  float* gw = out->weights.data() + slots_[0].offset;
  float* gb = out->weights.data() + slots_[1].offset;
  const bool second_order = options_.algo == Algo::kMaml;

  // Summed over tasks, so each is one GEMM over every task's rows.
  MatmulSpec sum_rows{.batch = 1, .m = n0, .k = t * mq_, .n = n1, .trans_a = true};
  sum_rows.alpha = inv_t;
  if (options_.algo == Algo::kReptile) {  // w0 - w_K = lr X^T C_K
    sum_rows.k = t * ms_;
    sum_rows.alpha = lr * inv_t;
    METAPS_RETURN_IF_ERROR(Mm(sum_rows, xs_.data(), ck, nullptr, gw));
    METAPS_RETURN_IF_ERROR(kernels_->SumRows(1, t * ms_, n1, ck, lr * inv_t, false, gb));
  } else {  // Xq^T A (+ X^T B for MAML)
    METAPS_RETURN_IF_ERROR(Mm(sum_rows, xq_.data(), a, nullptr, gw));
    METAPS_RETURN_IF_ERROR(kernels_->SumRows(1, t * mq_, n1, a, inv_t, false, gb));
    if (second_order) {
      sum_rows.k = t * ms_;
      sum_rows.accumulate = true;
      METAPS_RETURN_IF_ERROR(Mm(sum_rows, xs_.data(), bsum_.data(), nullptr, gw));
      METAPS_RETURN_IF_ERROR(kernels_->SumRows(1, t * ms_, n1, bsum_.data(), inv_t, true, gb));
    }
  }

  // xbar_q = A W0_K^T = A W0^T - lr (A C_K^T) X.
  METAPS_RETURN_IF_ERROR(Mm({.batch = 1, .m = t * mq_, .k = n1, .n = n0, .trans_b = true}, a, w0, nullptr,
                            xbar_q_.data()));
  METAPS_RETURN_IF_ERROR(Mm({.batch = tasks_, .m = mq_, .k = n1, .n = ms_, .trans_b = true}, a, ck, nullptr,
                            sq_.data()));
  MatmulSpec back{.batch = tasks_, .m = mq_, .k = ms_, .n = n0};
  back.alpha = -lr;
  back.accumulate = true;
  METAPS_RETURN_IF_ERROR(Mm(back, sq_.data(), xs_.data(), nullptr, xbar_q_.data()));

  if (second_order) {  // xbar_s = B W0^T - S_s X - lr (C_K A^T) Xq
    METAPS_RETURN_IF_ERROR(Mm({.batch = 1, .m = t * ms_, .k = n1, .n = n0, .trans_b = true}, bsum_.data(), w0,
                              nullptr, xbar_s_.data()));
    MatmulSpec ss{.batch = tasks_, .m = ms_, .k = ms_, .n = n0};
    ss.alpha = -1.0f;
    ss.accumulate = true;
    METAPS_RETURN_IF_ERROR(Mm(ss, ss_.data(), xs_.data(), nullptr, xbar_s_.data()));
    METAPS_RETURN_IF_ERROR(Mm({.batch = tasks_, .m = ms_, .k = n1, .n = mq_, .trans_b = true}, ck, a, nullptr,
                              sq_.data()));
    MatmulSpec sq{.batch = tasks_, .m = ms_, .k = mq_, .n = n0};
    sq.alpha = -lr;
    sq.accumulate = true;
    METAPS_RETURN_IF_ERROR(Mm(sq, sq_.data(), xq_.data(), nullptr, xbar_s_.data()));
  }

  if (want_adapted) {  // W0_K = W0 - lr X^T C_K, b0_K = b0 - lr colsum(C_K), per task
    float* wk0 = Tensor(wK, 0);
    float* bk0 = Tensor(wK, 1);
    for (int64_t b = 0; b < t; ++b) {
      std::memcpy(wk0 + b * n0 * n1, w0, n0 * n1 * sizeof(float));
      std::memcpy(bk0 + b * n1, b0, n1 * sizeof(float));
    }
    MatmulSpec w{.batch = tasks_, .m = n0, .k = ms_, .n = n1, .trans_a = true};
    w.alpha = -lr;
    w.accumulate = true;
    METAPS_RETURN_IF_ERROR(Mm(w, xs_.data(), ck, nullptr, wk0));
    METAPS_RETURN_IF_ERROR(kernels_->SumRows(tasks_, ms_, n1, ck, -lr, true, bk0));
  }
  return Status::Ok();
}

Status MetaLearner::Compute(const TaskBatch& batch, std::span<const float> weights, std::span<const float> alpha,
                            std::span<const float> rows, bool want_adapted, MetaGradient* out) {
  if (static_cast<int64_t>(weights.size()) != params_) {
    return InvalidArgument("expected " + std::to_string(params_) + " MLP parameters, got " +
                           std::to_string(weights.size()));
  }
  const bool metasgd = options_.algo == Algo::kMetaSgd;
  if (metasgd && static_cast<int64_t>(alpha.size()) != params_) {
    return InvalidArgument("metasgd needs one alpha per MLP parameter (" + std::to_string(params_) + "), got " +
                           std::to_string(alpha.size()));
  }
  if (static_cast<int64_t>(rows.size()) != batch.num_values()) {
    return InvalidArgument("expected " + std::to_string(batch.num_values()) + " embedding values, got " +
                           std::to_string(rows.size()));
  }
  if (batch.num_tasks <= 0 || batch.fields != model_.num_fields()) {
    return InvalidArgument("the batch has no tasks or does not match the model's fields");
  }
  Prepare(batch);
  flops_ = 0;
  const int64_t t = tasks_;
  const int steps = options_.inner_steps;
  const bool history = options_.algo == Algo::kMaml || metasgd;
  const int64_t step_params = t * params_, step_acts = t * ms_ * act_width_;

  METAPS_RETURN_IF_ERROR(kernels_->GatherPool(model_, batch.support_bags(), batch.table(), rows.data(), xs_.data()));
  METAPS_RETURN_IF_ERROR(kernels_->GatherPool(model_, batch.query_bags(), batch.table(), rows.data(), xq_.data()));

  // Every task starts from w0 (the low-rank first layer never materializes W0 per task).
  for (int j = low_rank_ ? 2 : 0; j < 2 * layers_; ++j) {
    const int64_t size = slots_[j].size();
    float* dst = Tensor(w_.data(), j);
    for (int64_t b = 0; b < t; ++b) std::memcpy(dst + b * size, weights.data() + slots_[j].offset, size * sizeof(float));
  }

  if (options_.algo == Algo::kReptile) std::fill(moved_.begin(), moved_.begin() + step_params, 0.0f);
  if (low_rank_) {
    METAPS_RETURN_IF_ERROR(LowRankSetup(weights.data() + slots_[0].offset, weights.data() + slots_[1].offset));
  }
  // Layers whose weights the inner loop updates explicitly, and the lowest layer whose delta is needed.
  const int grad_from = low_rank_ ? 1 : first_adapted_;
  const int delta_from = history || low_rank_ ? 0 : first_adapted_;
  // Bytes of a task-batched weight set that the dense steps touch (the low-rank W0 is skipped).
  const int64_t dense_from = !low_rank_ ? 0 : layers_ > 1 ? t * slots_[2].offset : step_params;

  // Inner loop: SGD on each task's support loss. Histories (weights, activations, deltas, and for
  // Meta-SGD the gradients) are kept per step when the reverse pass will need them.
  for (int k = 0; k < steps; ++k) {
    float* wk = w_.data() + (history ? k : 0) * step_params;
    float* wn = w_.data() + (history ? k + 1 : 0) * step_params;
    float* h = hs_.data() + (history ? k : 0) * step_acts;
    float* d = ds_.data() + (history ? k : 0) * step_acts;
    const int64_t last = t * ms_ * act_offset_[layers_ - 1];
    METAPS_RETURN_IF_ERROR(Forward(wk, xs_.data(), ms_, h, low_rank_ ? zs_.data() : nullptr));
    LossGradient(h + last, batch.support_y.data(), cs_.data(), ms_, d + last, nullptr);
    if (metasgd) {
      float* gk = g_.data() + k * step_params;
      METAPS_RETURN_IF_ERROR(Backward(wk, xs_.data(), ms_, h, d, grad_from, delta_from, gk, 1.0f, false, nullptr));
      for (int j = 0; j < 2 * layers_; ++j) {
        const int64_t size = slots_[j].size();
        if (j / 2 >= first_adapted_) {
          MetaSgdStep(Tensor(wk, j), alpha.data() + slots_[j].offset, Tensor(gk, j), Tensor(wn, j), t, size);
        } else {
          std::memcpy(Tensor(wn, j), Tensor(wk, j), t * size * sizeof(float));
        }
      }
    } else if (options_.algo == Algo::kReptile) {
      // Reptile's answer is w0 - w_K, a small difference of large numbers; summing the steps
      // (delta += lr * g) keeps its float32 error relative to the update, not to the weights.
      METAPS_RETURN_IF_ERROR(
          Backward(wk, xs_.data(), ms_, h, d, grad_from, delta_from, moved_.data(), options_.inner_lr, true, nullptr));
      for (int j = 2 * grad_from; j < 2 * layers_; ++j) {
        FromInitial(weights.data() + slots_[j].offset, Tensor(moved_.data(), j), Tensor(wn, j), t, slots_[j].size());
      }
    } else {
      if (wn != wk) std::memcpy(wn + dense_from, wk + dense_from, (step_params - dense_from) * sizeof(float));
      // The SGD step fused into the gradient products: W_l += -lr * h^T delta.
      METAPS_RETURN_IF_ERROR(
          Backward(wk, xs_.data(), ms_, h, d, grad_from, delta_from, wn, -options_.inner_lr, true, nullptr));
    }
    if (low_rank_) METAPS_RETURN_IF_ERROR(LowRankInnerStep(k, d));
  }

  // Query loss at the adapted weights, and its gradient (weights and inputs).
  float* wK = w_.data() + (history ? steps : 0) * step_params;
  {
    const int64_t last = t * mq_ * act_offset_[layers_ - 1];
    if (low_rank_) {  // z_q = Xq W0_K + b0_K = Zq0 - lr K_qs C_K
      MatmulSpec spec{.batch = tasks_, .m = mq_, .k = ms_, .n = widths_[1]};
      spec.alpha = -options_.inner_lr;
      spec.accumulate = true;
      METAPS_RETURN_IF_ERROR(Mm(spec, kqs_.data(), LowRankC(steps), nullptr, zq_.data()));
    }
    METAPS_RETURN_IF_ERROR(Forward(wK, xq_.data(), mq_, hq_.data(), low_rank_ ? zq_.data() : nullptr));
    LossGradient(hq_.data() + last, batch.query_y.data(), cq_.data(), mq_, dq_.data() + last, losses_.data());
    float* gq = options_.algo == Algo::kReptile ? nullptr : wbar_.data();
    METAPS_RETURN_IF_ERROR(Backward(wK, xq_.data(), mq_, hq_.data(), dq_.data(), low_rank_ ? 1 : 0, 0, gq, 1.0f, false,
                                    low_rank_ ? nullptr : xbar_q_.data()));
  }

  // Second order: walk the inner steps backwards.
  if (history) {
    if (low_rank_) {
      std::fill(bsum_.begin(), bsum_.begin() + t * ms_ * widths_[1], 0.0f);
      std::fill(ss_.begin(), ss_.begin() + t * ms_ * ms_, 0.0f);
    } else {
      std::fill(xbar_s_.begin(), xbar_s_.begin() + t * ms_ * widths_[0], 0.0f);
    }
    if (metasgd) std::fill(abar_.begin(), abar_.begin() + step_params, 0.0f);
    for (int k = steps - 1; k >= 0; --k) METAPS_RETURN_IF_ERROR(ReverseStep(k, alpha.data()));
  }

  // Means over tasks.
  const float inv_t = 1.0f / static_cast<float>(t);
  auto mean_over_tasks = [&](const float* soa, std::vector<float>* dst) {
    dst->resize(params_);
    for (int j = low_rank_ ? 2 : 0; j < 2 * layers_; ++j) {  // low rank: W0 in LowRankFinish
      MeanOverTasks(Tensor(soa, j), dst->data() + slots_[j].offset, t, slots_[j].size(), inv_t);
    }
  };
  if (options_.algo == Algo::kReptile) {
    mean_over_tasks(moved_.data(), &out->weights);  // w0 - w_K
  } else {
    mean_over_tasks(wbar_.data(), &out->weights);
  }
  if (metasgd) {
    mean_over_tasks(abar_.data(), &out->alpha);
  } else {
    out->alpha.clear();
  }

  if (low_rank_) METAPS_RETURN_IF_ERROR(LowRankFinish(weights.data(), wK, out, want_adapted));

  out->rows.assign(batch.num_values(), 0.0f);
  METAPS_RETURN_IF_ERROR(
      kernels_->ScatterAdd(model_, batch.query_bags(), batch.table(), xbar_q_.data(), inv_t, out->rows.data()));
  if (history) {
    METAPS_RETURN_IF_ERROR(
        kernels_->ScatterAdd(model_, batch.support_bags(), batch.table(), xbar_s_.data(), inv_t, out->rows.data()));
  }

  out->query_loss.assign(losses_.begin(), losses_.begin() + t);
  if (want_adapted) {
    out->adapted.resize(t * params_);
    for (int j = 0; j < 2 * layers_; ++j) {
      const int64_t size = slots_[j].size();
      const float* src = Tensor(wK, j);
      for (int64_t b = 0; b < t; ++b) {
        std::memcpy(out->adapted.data() + b * params_ + slots_[j].offset, src + b * size, size * sizeof(float));
      }
    }
  } else {
    out->adapted.clear();
  }
  out->flops = flops_;
  return Status::Ok();
}

}  // namespace metaps::worker
