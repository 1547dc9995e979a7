// Optimizers: the per-row update rules a server applies to pushed gradients.
//
// A row is `dim` weights plus StateFloats(dim) floats of optimizer state, stored together with the
// row. Apply is a pure, deterministic function of (weights, state, grad, t): replaying the same
// gradients from the same state gives bitwise the same result, which is what crash recovery by log
// replay relies on. `t` is the 1-based index of this update of this row (the row's update count
// after this update): sparse rows are updated at different rates, so Adam's bias correction uses
// the row's own count, not a global step ("lazy" Adam).
//
// Thread-safety: an Optimizer is immutable after creation; Apply and ApplyBatch may run
// concurrently on distinct rows.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace metaps::ps {

enum class OptimizerKind : uint8_t { kSgd = 0, kAdagrad = 1, kAdam = 2, kFtrl = 3 };

std::string_view OptimizerKindName(OptimizerKind kind);
Result<OptimizerKind> ParseOptimizerKind(std::string_view name);

// Hyperparameters; which ones an optimizer reads is listed per rule below. Defaults (per kind)
// come from DefaultOptimizerSpec.
struct OptimizerSpec {
  OptimizerKind kind = OptimizerKind::kSgd;
  float lr = 0.01f;                  // all; FTRL's alpha
  float beta1 = 0.9f;                // adam
  float beta2 = 0.999f;              // adam
  float eps = 1e-8f;                 // adagrad, adam
  float initial_accumulator = 0.0f;  // adagrad (sum of squares), ftrl (n)
  float l1 = 0.0f;                   // ftrl
  float l2 = 0.0f;                   // ftrl
  float beta = 1.0f;                 // ftrl
  float lr_power = -0.5f;            // ftrl: per-coordinate rate alpha / (beta + n^-lr_power)
};

// One row of a batch update (Optimizer::ApplyBatch): the row's weights (dim floats) and state
// (StateFloats(dim) floats), its gradient (dim floats), and its update count t >= 1.
struct RowUpdate {
  float* weights;
  float* state;
  const float* grad;
  uint64_t t;
};

// Defaults: sgd lr 0.01; adagrad lr 0.01, initial_accumulator 0.1, eps 1e-10;
// adam lr 0.001, beta1 0.9, beta2 0.999, eps 1e-8; ftrl lr (alpha) 0.05, beta 1, l1 0, l2 0,
// lr_power -0.5, initial_accumulator 0.
OptimizerSpec DefaultOptimizerSpec(OptimizerKind kind);

// Rules (per coordinate i, g = grad[i], w = weights[i]):
//   sgd:     w -= lr * g                                                      state: none
//   adagrad: n += g*g;  w -= lr * g / (sqrt(n) + eps)                         state: n[dim]
//   adam:    m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g*g;
//            w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)        state: m[dim], v[dim]
//   ftrl:    (FTRL-proximal, McMahan et al. 2013, Algorithm 1, with the weights stored so that an
//            initializer's value is honoured, as in TensorFlow's FTRL)
//            n' = n + g*g;  sigma = (n'^-p - n^-p) / alpha   (p = lr_power, -0.5 gives sqrt)
//            z += g - sigma * w;  n = n'
//            w = |z| <= l1 ? 0 : -(z - sign(z)*l1) / ((beta + n^-p) / alpha + 2*l2)
//                                                                            state: z[dim], n[dim]
//   (ftrl's l2 follows TensorFlow: the denominator gets 2*l2, i.e. the penalty is l2*||w||^2.)
class Optimizer {
 public:
  virtual ~Optimizer() = default;
  static Result<std::unique_ptr<Optimizer>> Create(const OptimizerSpec& spec);

  const OptimizerSpec& spec() const { return spec_; }
  virtual uint32_t StateFloats(uint32_t dim) const = 0;
  // Writes the state of a row that has never been updated.
  virtual void InitState(float* state, uint32_t dim) const = 0;
  // REQUIRES: t >= 1; weights has dim floats, state StateFloats(dim), grad dim.
  virtual void Apply(float* weights, float* state, const float* grad, uint32_t dim, uint64_t t) const = 0;
  // Apply to rows[0..n) in turn, with bitwise the same results as n calls of Apply: the batch
  // entry point exists so that a server's push pays one dispatch per request instead of one
  // virtual call per row, runs code vectorised for this CPU (chosen once per process; every
  // variant does the same IEEE operations in the same order, without contraction into FMA, so
  // the results do not depend on which one runs), and prefetches rows a few ahead (they are
  // scattered over a table much larger than the CPU caches). REQUIRES: the rows are distinct.
  virtual void ApplyBatch(const RowUpdate* rows, size_t n, uint32_t dim) const;

 protected:
  explicit Optimizer(const OptimizerSpec& spec) : spec_(spec) {}
  OptimizerSpec spec_;
};

}  // namespace metaps::ps
