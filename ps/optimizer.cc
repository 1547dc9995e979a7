#include "ps/optimizer.h"

#include "common/prefetch.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
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

// ---- Batch kernels -------------------------------------------------------------------------------
//
// Compiled once per ISA level (target_clones: the loader picks one per process from the CPU's
// features). optimizer.cc is built with -ffp-contract=off, so every clone performs the same
// correctly rounded IEEE operations (+, *, /, sqrt) in the source's order: vectorising changes
// how many coordinates are done at once, never a result bit. Replay after a crash therefore
// reproduces the live path's rows bitwise whichever clone runs.
// Not under ThreadSanitizer: its runtime is not set up yet when the loader runs the clones'
// ifunc resolvers, and the process crashes before main.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define METAPS_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define METAPS_VECTOR_CLONES
#endif

namespace internal {

// Rows this many ahead of the one being updated are prefetched. A row's weights and state span
// several cache lines in a table far larger than the CPU caches, so each row is a handful of
// DRAM misses; 24 rows ahead keeps enough of them in flight to cover DRAM latency. Measured with
// optimizer_benchmark (Adam, 10k random rows of a 200k-row table, 448-byte slots on huge pages):
// 16 ahead 0.16 ms per batch, 24 0.13, 32 0.125-0.13; with no prefetch at all 0.47-0.49 ms,
// which is what this loop cost while GCC deleted its prefetches (see common/prefetch.h).
constexpr size_t kPrefetchRows = 24;

inline void PrefetchRow(const RowUpdate& r, uint32_t dim, uint32_t state_floats) {
  PrefetchBytes(r.weights, size_t{dim} * 4);
  if (state_floats > 0) PrefetchBytes(r.state, size_t{state_floats} * 4);
}

// The rows the loop's own prefetch does not reach: its first kPrefetchRows (a batch is often a
// 256-row chunk of a bigger push, each chunk its own call).
inline void PrefetchFirstRows(const RowUpdate* rows, size_t n, uint32_t dim, uint32_t state_floats) {
  for (size_t r = 0; r < std::min(n, kPrefetchRows); ++r) PrefetchRow(rows[r], dim, state_floats);
}

METAPS_VECTOR_CLONES void SgdRows(const RowUpdate* rows, size_t n, uint32_t dim, float lr) {
  for (size_t r = 0; r < n; ++r) {
    if (r + kPrefetchRows < n) PrefetchRow(rows[r + kPrefetchRows], dim, 0);
    float* __restrict w = rows[r].weights;
    const float* __restrict g = rows[r].grad;
    for (uint32_t i = 0; i < dim; ++i) w[i] -= lr * g[i];
  }
}

METAPS_VECTOR_CLONES void AdagradRows(const RowUpdate* rows, size_t n, uint32_t dim, float lr, float eps) {
  for (size_t r = 0; r < n; ++r) {
    if (r + kPrefetchRows < n) PrefetchRow(rows[r + kPrefetchRows], dim, dim);
    float* __restrict w = rows[r].weights;
    float* __restrict acc = rows[r].state;
    const float* __restrict g = rows[r].grad;
    for (uint32_t i = 0; i < dim; ++i) {
      acc[i] += g[i] * g[i];
      w[i] -= lr * g[i] / (std::sqrt(acc[i]) + eps);
    }
  }
}

// c1[r], c2[r]: row r's bias corrections (looked up by the caller, outside the vector code).
// rows[n, prefetch_end) are only prefetched (the caller's next block).
METAPS_VECTOR_CLONES void AdamRows(const RowUpdate* rows, size_t n, size_t prefetch_end, uint32_t dim, float lr,
                                   float b1, float b2, float eps, const float* c1s, const float* c2s) {
  for (size_t r = 0; r < n; ++r) {
    if (r + kPrefetchRows < prefetch_end) PrefetchRow(rows[r + kPrefetchRows], dim, 2 * dim);
    float* __restrict w = rows[r].weights;
    float* __restrict m = rows[r].state;
    float* __restrict v = rows[r].state + dim;
    const float* __restrict g = rows[r].grad;
    const float c1 = c1s[r], c2 = c2s[r];
    for (uint32_t i = 0; i < dim; ++i) {
      m[i] = b1 * m[i] + (1.0f - b1) * g[i];
      v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
      w[i] -= lr * (m[i] * c1) / (std::sqrt(v[i] * c2) + eps);
    }
  }
}

// FTRL-proximal with the common lr_power = -0.5 (n^0.5 as a sqrt). The same operations in the
// same order as the rule in ps/optimizer.h: the l1 test selects per coordinate.
METAPS_VECTOR_CLONES void FtrlRows(const RowUpdate* rows, size_t n, uint32_t dim, float alpha, float beta, float l1,
                                   float l2) {
  const float two_l2 = 2.0f * l2;
  for (size_t r = 0; r < n; ++r) {
    if (r + kPrefetchRows < n) PrefetchRow(rows[r + kPrefetchRows], dim, 2 * dim);
    float* __restrict w = rows[r].weights;
    float* __restrict z = rows[r].state;
    float* __restrict acc = rows[r].state + dim;
    const float* __restrict g = rows[r].grad;
    for (uint32_t i = 0; i < dim; ++i) {
      const float n_old = acc[i];
      const float n_new = n_old + g[i] * g[i];
      const float p_new = std::sqrt(n_new);
      const float sigma = (p_new - std::sqrt(n_old)) / alpha;
      const float zi = z[i] + (g[i] - sigma * w[i]);
      z[i] = zi;
      acc[i] = n_new;
      const float sign = zi < 0.0f ? -1.0f : 1.0f;
      const float shrunk = -(zi - sign * l1) / ((beta + p_new) / alpha + two_l2);
      w[i] = std::fabs(zi) <= l1 ? 0.0f : shrunk;
    }
  }
}

}  // namespace internal

void Optimizer::ApplyBatch(const RowUpdate* rows, size_t n, uint32_t dim) const {
  const uint32_t state_floats = StateFloats(dim);
  internal::PrefetchFirstRows(rows, n, dim, state_floats);
  for (size_t r = 0; r < n; ++r) {
    if (r + internal::kPrefetchRows < n) internal::PrefetchRow(rows[r + internal::kPrefetchRows], dim, state_floats);
    Apply(rows[r].weights, rows[r].state, rows[r].grad, dim, rows[r].t);
  }
}

namespace {

class Sgd final : public Optimizer {
 public:
  explicit Sgd(const OptimizerSpec& s) : Optimizer(s) {}
  uint32_t StateFloats(uint32_t) const override { return 0; }
  void InitState(float*, uint32_t) const override {}
  void Apply(float* w, float* st, const float* g, uint32_t dim, uint64_t t) const override {
    const RowUpdate row{w, st, g, t};
    ApplyBatch(&row, 1, dim);
  }
  void ApplyBatch(const RowUpdate* rows, size_t n, uint32_t dim) const override {
    internal::PrefetchFirstRows(rows, n, dim, 0);
    internal::SgdRows(rows, n, dim, spec_.lr);
  }
};

class Adagrad final : public Optimizer {
 public:
  explicit Adagrad(const OptimizerSpec& s) : Optimizer(s) {}
  uint32_t StateFloats(uint32_t dim) const override { return dim; }
  void InitState(float* st, uint32_t dim) const override {
    for (uint32_t i = 0; i < dim; ++i) st[i] = spec_.initial_accumulator;
  }
  void Apply(float* w, float* st, const float* g, uint32_t dim, uint64_t t) const override {
    const RowUpdate row{w, st, g, t};
    ApplyBatch(&row, 1, dim);
  }
  void ApplyBatch(const RowUpdate* rows, size_t n, uint32_t dim) const override {
    internal::PrefetchFirstRows(rows, n, dim, dim);
    internal::AdagradRows(rows, n, dim, spec_.lr, spec_.eps);
  }
};

class Adam final : public Optimizer {
 public:
  // Bias corrections 1/(1 - beta^t) are tabulated per count, up to the count from which both are
  // exactly 1.0f (1 - beta^t only grows with t, so once the correction rounds to 1.0f it stays
  // there): about 16.6k counts for beta2 = 0.999, 166k for 0.9999. Past that point a row costs a
  // constant; past kMaxTable (betas closer to 1) the formula runs per row. The table holds the
  // formula's own values, so the results do not depend on whether a count is in it: a row updated
  // millions of times, or replayed, gets the same bits either way. (Before, only counts below 4096
  // were tabulated, and every later update of a row paid two double-precision pow calls, which
  // doubled Adam's cost per row in long-running jobs.)
  static constexpr uint64_t kMaxTable = uint64_t{1} << 18;
  explicit Adam(const OptimizerSpec& s) : Optimizer(s) {
    c1_.push_back(0.0f);  // t = 0 does not occur
    c2_.push_back(0.0f);
    for (uint64_t t = 1; t < kMaxTable; ++t) {
      const float a = Correction(spec_.beta1, t), b = Correction(spec_.beta2, t);
      c1_.push_back(a);
      c2_.push_back(b);
      if (a == 1.0f && b == 1.0f) {
        ones_from_ = t;
        break;
      }
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
    const RowUpdate row{w, st, g, t};
    ApplyBatch(&row, 1, dim);
  }
  void ApplyBatch(const RowUpdate* rows, size_t n, uint32_t dim) const override {
    // Bias corrections gathered per block of rows so that the vector kernel sees plain arrays.
    constexpr size_t kBlock = 256;
    float c1[kBlock], c2[kBlock];
    internal::PrefetchFirstRows(rows, n, dim, 2 * dim);
    const uint64_t table = c1_.size();
    for (size_t base = 0; base < n; base += kBlock) {
      const size_t k = std::min(kBlock, n - base);
      for (size_t r = 0; r < k; ++r) {
        const uint64_t t = rows[base + r].t;
        if (t < table) {
          c1[r] = c1_[t];
          c2[r] = c2_[t];
        } else if (t >= ones_from_) {
          c1[r] = 1.0f;
          c2[r] = 1.0f;
        } else {
          c1[r] = Correction(spec_.beta1, t);
          c2[r] = Correction(spec_.beta2, t);
        }
      }
      internal::AdamRows(rows + base, k, n - base, dim, spec_.lr, spec_.beta1, spec_.beta2, spec_.eps, c1, c2);
    }
  }

 private:
  std::vector<float> c1_, c2_;        // by count, [0, table size)
  uint64_t ones_from_ = UINT64_MAX;  // both corrections are exactly 1.0f from this count on
};

class Ftrl final : public Optimizer {
 public:
  explicit Ftrl(const OptimizerSpec& s) : Optimizer(s) {}
  uint32_t StateFloats(uint32_t dim) const override { return 2 * dim; }
  void InitState(float* st, uint32_t dim) const override {
    for (uint32_t i = 0; i < dim; ++i) st[i] = 0.0f;                           // z
    for (uint32_t i = 0; i < dim; ++i) st[dim + i] = spec_.initial_accumulator;  // n
  }
  // n^-p, with the common p = -0.5 as a sqrt (that case runs in internal::FtrlRows).
  float Pow(float n) const {
    return spec_.lr_power == -0.5f ? std::sqrt(n) : std::pow(n, -spec_.lr_power);
  }
  void Apply(float* w, float* st, const float* g, uint32_t dim, uint64_t t) const override {
    if (spec_.lr_power == -0.5f) {
      const RowUpdate row{w, st, g, t};
      ApplyBatch(&row, 1, dim);
      return;
    }
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
  void ApplyBatch(const RowUpdate* rows, size_t n, uint32_t dim) const override {
    if (spec_.lr_power != -0.5f) {
      Optimizer::ApplyBatch(rows, n, dim);  // per row, std::pow
      return;
    }
    internal::PrefetchFirstRows(rows, n, dim, 2 * dim);
    internal::FtrlRows(rows, n, dim, spec_.lr, spec_.beta, spec_.l1, spec_.l2);
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
