#include "ps/optimizer.h"

#include <cmath>
#include <vector>

namespace metaps::ps {

std::string_view OptimizerKindName(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSgd: return "sgd";
    case OptimizerKind::kAdagrad: return "adagrad";
    case OptimizerKind::kAdam: return "adam";
    case OptimizerKind::kFtrl: return "ftrl";
  }
  return "?";
}

Result<OptimizerKind> ParseOptimizerKind(std::string_view name) {
  if (name == "sgd") return OptimizerKind::kSgd;
  if (name == "adagrad") return OptimizerKind::kAdagrad;
  if (name == "adam") return OptimizerKind::kAdam;
  if (name == "ftrl") return OptimizerKind::kFtrl;
  return InvalidArgument("unknown optimizer \"" + std::string(name) +
                         "\" (expected sgd, adagrad, adam or ftrl)");
}

OptimizerSpec DefaultOptimizerSpec(OptimizerKind kind) {
  OptimizerSpec s;
  s.kind = kind;
  switch (kind) {
    case OptimizerKind::kSgd: s.lr = 0.01f; break;
    case OptimizerKind::kAdagrad:
      s.lr = 0.01f;
      s.initial_accumulator = 0.1f;
      s.eps = 1e-10f;
      break;
    case OptimizerKind::kAdam:
      s.lr = 0.001f;
      s.beta1 = 0.9f;
      s.beta2 = 0.999f;
      s.eps = 1e-8f;
      break;
    case OptimizerKind::kFtrl:
      s.lr = 0.05f;
      s.beta = 1.0f;
      s.l1 = 0.0f;
      s.l2 = 0.0f;
      s.lr_power = -0.5f;
      s.initial_accumulator = 0.0f;
      break;
  }
  return s;
}

namespace {

class Sgd final : public Optimizer {
 public:
  explicit Sgd(const OptimizerSpec& s) : Optimizer(s) {}
  uint32_t StateFloats(uint32_t) const override { return 0; }
  void InitState(float*, uint32_t) const override {}
  void Apply(float* w, float*, const float* g, uint32_t dim, uint64_t) const override {
    const float lr = spec_.lr;
    for (uint32_t i = 0; i < dim; ++i) w[i] -= lr * g[i];
  }
};

class Adagrad final : public Optimizer {
 public:
  explicit Adagrad(const OptimizerSpec& s) : Optimizer(s) {}
  uint32_t StateFloats(uint32_t dim) const override { return dim; }
  void InitState(float* st, uint32_t dim) const override {
    for (uint32_t i = 0; i < dim; ++i) st[i] = spec_.initial_accumulator;
  }
  void Apply(float* w, float* n, const float* g, uint32_t dim, uint64_t) const override {
    const float lr = spec_.lr, eps = spec_.eps;
    for (uint32_t i = 0; i < dim; ++i) {
      n[i] += g[i] * g[i];
      w[i] -= lr * g[i] / (std::sqrt(n[i]) + eps);
    }
  }
};

class Adam final : public Optimizer {
 public:
  // Bias corrections for the first kTable counts are computed once (same formula, same values).
  static constexpr uint64_t kTable = 4096;
  explicit Adam(const OptimizerSpec& s) : Optimizer(s) {
    c1_.resize(kTable);
    c2_.resize(kTable);
    for (uint64_t t = 1; t < kTable; ++t) {
      c1_[t] = Correction(spec_.beta1, t);
      c2_[t] = Correction(spec_.beta2, t);
    }
  }
  static float Correction(float beta, uint64_t t) {
    return static_cast<float>(1.0 / (1.0 - std::pow(static_cast<double>(beta), static_cast<double>(t))));
  }
  uint32_t StateFloats(uint32_t dim) const override { return 2 * dim; }
  void InitState(float* st, uint32_t dim) const override {
    for (uint32_t i = 0; i < 2 * dim; ++i) st[i] = 0.0f;
  }
  void Apply(float* w, float* st, const float* g, uint32_t dim, uint64_t t) const override {
    float* m = st;
    float* v = st + dim;
    const float b1 = spec_.beta1, b2 = spec_.beta2, eps = spec_.eps;
    // Bias corrections 1/(1 - beta^t), computed in double.
    const float c1 = t < kTable ? c1_[t] : Correction(b1, t);
    const float c2 = t < kTable ? c2_[t] : Correction(b2, t);
    const float lr = spec_.lr;
    for (uint32_t i = 0; i < dim; ++i) {
      m[i] = b1 * m[i] + (1.0f - b1) * g[i];
      v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
      w[i] -= lr * (m[i] * c1) / (std::sqrt(v[i] * c2) + eps);
    }
  }

 private:
  std::vector<float> c1_, c2_;
};

class Ftrl final : public Optimizer {
 public:
  explicit Ftrl(const OptimizerSpec& s) : Optimizer(s) {}
  uint32_t StateFloats(uint32_t dim) const override { return 2 * dim; }
  void InitState(float* st, uint32_t dim) const override {
    for (uint32_t i = 0; i < dim; ++i) st[i] = 0.0f;                           // z
    for (uint32_t i = 0; i < dim; ++i) st[dim + i] = spec_.initial_accumulator;  // n
  }
  // n^-p, with the common p = -0.5 as a sqrt.
  float Pow(float n) const {
    return spec_.lr_power == -0.5f ? std::sqrt(n) : std::pow(n, -spec_.lr_power);
  }
  void Apply(float* w, float* st, const float* g, uint32_t dim, uint64_t) const override {
    float* z = st;
    float* n = st + dim;
    const float alpha = spec_.lr, beta = spec_.beta, l1 = spec_.l1, l2 = spec_.l2;
    for (uint32_t i = 0; i < dim; ++i) {
      const float n_new = n[i] + g[i] * g[i];
      const float p_new = Pow(n_new);
      const float sigma = (p_new - Pow(n[i])) / alpha;
      z[i] += g[i] - sigma * w[i];
      n[i] = n_new;
      if (std::fabs(z[i]) <= l1) {
        w[i] = 0.0f;
      } else {
        const float sign = z[i] < 0.0f ? -1.0f : 1.0f;
        w[i] = -(z[i] - sign * l1) / ((beta + p_new) / alpha + 2.0f * l2);
      }
    }
  }
};

}  // namespace

Result<std::unique_ptr<Optimizer>> Optimizer::Create(const OptimizerSpec& spec) {
  if (!(spec.lr > 0.0f) || !std::isfinite(spec.lr)) return InvalidArgument("lr must be > 0");
  switch (spec.kind) {
    case OptimizerKind::kSgd: return std::unique_ptr<Optimizer>(new Sgd(spec));
    case OptimizerKind::kAdagrad:
      if (spec.initial_accumulator < 0 || spec.eps < 0)
        return InvalidArgument("adagrad: initial_accumulator and eps must be >= 0");
      if (spec.initial_accumulator == 0 && spec.eps == 0)
        return InvalidArgument("adagrad: initial_accumulator and eps cannot both be 0");
      return std::unique_ptr<Optimizer>(new Adagrad(spec));
    case OptimizerKind::kAdam:
      if (!(spec.beta1 >= 0 && spec.beta1 < 1)) return InvalidArgument("adam: beta1 must be in [0, 1)");
      if (!(spec.beta2 >= 0 && spec.beta2 < 1)) return InvalidArgument("adam: beta2 must be in [0, 1)");
      if (!(spec.eps > 0)) return InvalidArgument("adam: eps must be > 0");
      return std::unique_ptr<Optimizer>(new Adam(spec));
    case OptimizerKind::kFtrl:
      if (spec.l1 < 0 || spec.l2 < 0) return InvalidArgument("ftrl: l1 and l2 must be >= 0");
      if (spec.beta < 0) return InvalidArgument("ftrl: beta must be >= 0");
      if (!(spec.lr_power <= 0)) return InvalidArgument("ftrl: lr_power must be <= 0");
      if (spec.initial_accumulator < 0) return InvalidArgument("ftrl: initial_accumulator must be >= 0");
      if (spec.beta == 0 && spec.initial_accumulator == 0)
        return InvalidArgument("ftrl: beta and initial_accumulator cannot both be 0 (division by zero)");
      return std::unique_ptr<Optimizer>(new Ftrl(spec));
  }
  return InvalidArgument("unknown optimizer kind");
}

}  // namespace metaps::ps
