// MetaLearner: the meta-gradient of a meta-batch of tasks, for FOMAML, second-order MAML, Reptile and
// Meta-SGD.
//
// Per task, the inner loop runs `inner_steps` plain SGD steps on the task's support loss from the
// shared initial MLP weights w0 (w_{k+1} = w_k - lr * grad, or - alpha ⊙ grad for Meta-SGD), adapting
// the tensors chosen by `adapt` (the others keep w0). The query loss at the adapted weights w_K is the
// task's meta-loss; the meta-batch's is the mean over tasks. The result holds:
//   weights: d(meta-loss)/d(w0) — FOMAML: the gradient at w_K (first order); MAML and Meta-SGD: the
//            exact gradient through the inner loop; Reptile: mean over tasks of (w0 - w_K).
//   alpha:   Meta-SGD only, d(meta-loss)/d(alpha).
//   rows:    d(meta-loss)/d(embedding row) for every row the batch touched (summed over every use).
//            MAML/Meta-SGD include the path through the inner loop (support rows move w_K);
//            FOMAML/Reptile only the direct path through the query rows at w_K.
// Second order is exact: the reverse pass walks the inner steps backwards and needs, per step, a
// Hessian-vector product of the support loss. It is computed with an R-op (forward-mode tangent
// through the support batch's forward and backward passes), which yields both H_ww·v and the mixed
// term H_xw·v for the support embeddings in one pass; no finite differences (docs/engine.md).
//
// All T tasks run together: every layer is one batched product over per-task weights.
// A MetaLearner owns its scratch buffers (grown to the largest batch seen, reused after) and borrows
// its Kernels, which must outlive it. Not thread-safe: one per worker thread.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "common/config.h"
#include "common/status.h"
#include "worker/kernels.h"
#include "worker/model.h"
#include "worker/task_batch.h"

namespace metaps::worker {

enum class Algo { kFomaml, kMaml, kReptile, kMetaSgd };

// How the inner loop treats the first layer. Its input (the pooled embeddings) does not change during
// the inner loop, so with a scalar inner rate W0_k = W0_0 - lr * X^T C_k, C_k being the sum of the
// first layer's deltas so far: every product with W0_k can be rewritten through the small row Gram
// matrices X X^T instead of the (input x width) weights. Same maths, far fewer FLOPs when a task has
// fewer rows than the input is wide (docs/engine.md). Meta-SGD (per-parameter rates) and a frozen
// first layer always use the dense form.
enum class FirstLayer {
  kAuto,     // low rank when support + query rows <= input width
  kDense,    // always materialize W0 per task and step
  kLowRank,  // low rank whenever it applies
};

Result<Algo> ParseAlgo(std::string_view name);
std::string_view AlgoName(Algo a);
// "auto", "dense", "low_rank".
Result<FirstLayer> ParseFirstLayer(std::string_view name);
std::string_view FirstLayerName(FirstLayer f);

struct MetaOptions {
  Algo algo = Algo::kFomaml;
  int inner_steps = 5;
  // SGD rate of the inner loop (FOMAML, MAML, Reptile). Meta-SGD uses its learned alpha instead and
  // starts alpha at this value.
  float inner_lr = 0.01f;
  // How many of the MLP's last layers the inner loop adapts; 0 means all of them (the default).
  int adapt_last_layers = 0;
  FirstLayer first_layer = FirstLayer::kAuto;

  // Reads a [meta] table:
  //   algo = "maml"         # fomaml | maml | reptile | metasgd      Default: fomaml
  //   inner_steps = 5       # Default: 5 (0 allowed: no adaptation)
  //   inner_lr = 0.01       # Default: 0.01
  //   adapt = "mlp"         # mlp (every layer) | "last:N" (the last N layers)   Default: mlp
  //   first_layer = "auto"  # auto | dense | low_rank (see FirstLayer)          Default: auto
  static Result<MetaOptions> FromConfig(const Config& meta);
};

struct MetaGradient {
  std::vector<float> weights;     // num_params
  std::vector<float> alpha;       // num_params; Meta-SGD only, else empty
  std::vector<float> rows;        // batch.num_values(), laid out by batch.row_offsets
  std::vector<float> query_loss;  // per task, at its adapted weights
  std::vector<float> adapted;     // T x num_params, task-major; only when asked for
  int64_t flops = 0;              // matrix-product FLOPs executed (2mnk each)
};

class MetaLearner {
 public:
  // REQUIRES: model.Validate() is OK; kernels outlives this object.
  MetaLearner(ModelSpec model, MetaOptions options, Kernels* kernels);

  const ModelSpec& model() const { return model_; }
  const MetaOptions& options() const { return options_; }

  // `weights`: the initial MLP (num_params, W0, b0, W1, b1, ...). `alpha`: Meta-SGD's per-parameter
  // rates (num_params), empty otherwise. `rows`: the embedding rows of batch.keys
  // (batch.num_values()). Fills *out (reusing its capacity).
  [[nodiscard]] Status Compute(const TaskBatch& batch, std::span<const float> weights, std::span<const float> alpha,
                               std::span<const float> rows, bool want_adapted, MetaGradient* out);

 private:
  float* Tensor(float* base, int j) const { return base + int64_t{tasks_} * slots_[j].offset; }
  const float* Tensor(const float* base, int j) const { return base + int64_t{tasks_} * slots_[j].offset; }
  Status Mm(const MatmulSpec& spec, const float* a, const float* b, const float* bias, float* c);
  void Prepare(const TaskBatch& batch);
  // Forward through the MLP at batched weights w; layer l's output goes to h + tasks*rows*act_offset_[l]
  // (the last layer's output is the prediction). With z0, the first layer's pre-activations are
  // given (the low-rank form) instead of computed from x.
  Status Forward(const float* w, const float* x, int rows, float* h, const float* z0 = nullptr);
  // Sets delta_L from predictions and labels with per-row weights c; adds each task's loss to *loss.
  void LossGradient(const float* pred, const float* y, const float* c, int rows, float* delta, float* loss) const;
  // Backprop from the last layer's delta (laid out like h in d). Writes delta[l-1] for l > delta_from
  // and, for layers l >= grad_from, alpha * dW_l and alpha * db_l into g (added to g when accumulate;
  // g may alias w for an in-place SGD step; null skips them). dx, when not null, gets d(loss)/dx.
  Status Backward(const float* w, const float* x, int rows, const float* h, float* d, int grad_from, int delta_from,
                  float* g, float alpha, bool accumulate, float* dx);
  // Reverse through inner step k: updates wbar (and alphabar, xbar_s) given the step's primal state.
  Status ReverseStep(int k, const float* alpha);

  // The low-rank first layer (see FirstLayer); buffers are tasks x rows x n1 unless noted.
  // Z0 = X W0 + b0 for support and query, and the Gram matrices K_ss = X X^T + 1, K_qs = Xq X^T + 1.
  Status LowRankSetup(const float* w0, const float* b0);
  // After inner step k's backward: z_s -= lr K_ss delta0, C_{k+1} = C_k + delta0.
  Status LowRankInnerStep(int k, const float* delta0);
  // The first layer's share of the results: its meta-gradient (and Reptile's update) averaged over
  // tasks straight into out->weights, the input gradients into xbar_q_/xbar_s_, adapted W0 if asked.
  Status LowRankFinish(const float* weights, float* wK, MetaGradient* out, bool want_adapted);
  float* LowRankC(int k) { return c_.data() + (history_ ? k : 0) * int64_t{tasks_} * ms_ * widths_[1]; }

  ModelSpec model_;
  MetaOptions options_;
  Kernels* kernels_;
  std::vector<TensorSlot> slots_;
  std::vector<int> widths_;
  int layers_ = 0;
  int64_t params_ = 0;
  int first_adapted_ = 0;  // lowest adapted layer

  // Per-batch sizes and choices.
  int tasks_ = 0, ms_ = 0, mq_ = 0;
  bool history_ = false;   // MAML/Meta-SGD keep every inner step for the reverse pass
  bool low_rank_ = false;
  int64_t flops_ = 0;

  // Scratch (grown, never shrunk). Weights are task-batched tensor-major: tensor j of task t at
  // tasks_ * slot_j.offset + t * slot_j.size.
  std::vector<float> xs_, xq_, xbar_s_, xbar_q_;
  std::vector<float> cs_, cq_;        // per-row loss weights (1/count, 0 on padding)
  std::vector<float> w_;              // (history + 1) x tasks x params
  std::vector<float> g_;              // Meta-SGD: per step gradients
  std::vector<float> moved_;          // Reptile: w0 - w_k, summed step by step
  std::vector<float> hs_, ds_;        // support activations/deltas per step
  std::vector<float> hq_, dq_;        // query activations/deltas
  std::vector<float> wbar_, u_, abar_, rh_, rd_, losses_;
  std::vector<float> zs_, zq_, kss_, kqs_, c_, bsum_, ss_, sq_;  // low-rank first layer
  std::vector<int64_t> act_offset_;   // offset of layer l inside one pass's activations (per row)
  int64_t act_width_ = 0;             // sum of layer widths
};

}  // namespace metaps::worker
