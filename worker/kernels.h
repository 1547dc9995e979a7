// Kernels: the numeric primitives the meta-learner is built from.
//
// Everything is batched over the tasks of a meta-batch: each task has its own adapted MLP weights,
// so a layer is one batched matrix product over `batch` independent (m x k)·(k x n) problems rather
// than a loop of small products. Tensors are dense float32, batch-major: batch b of an (r x c) operand
// starts at b * r * c. Besides matrix products the interface covers what the MLP needs around them
// (bias, ReLU and its backward, column sums) and the embedding side (bag gather with pooling, and
// the scatter-add of gradients into the touched rows).
//
// Implementations: OneDnnKernels (oneDNN primitives, the real one) and ReferenceKernels (plain loops,
// for tests). A Kernels object is NOT thread-safe: each worker thread owns its own. The caller owns
// every buffer; kernels never keep pointers past a call. Errors come back as Status (foreign errors
// are converted inside the implementation).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/status.h"
#include "worker/model.h"

namespace metaps::worker {

// c[b] = alpha * op(a[b]) · op(b[b]) (+ c[b] if accumulate) (+ bias[b]) then ReLU if relu.
// op(a) is (m x k): a[b] is stored (m x k), or (k x m) when trans_a. op(b) is (k x n): b[b] is stored
// (k x n), or (n x k) when trans_b. With broadcast_b one b (and one bias) serves every batch entry.
// bias[b] is a row of n added to every row of c[b].
struct MatmulSpec {
  int64_t batch = 1;
  int64_t m = 0, k = 0, n = 0;
  bool trans_a = false;
  bool trans_b = false;
  bool broadcast_b = false;
  bool accumulate = false;
  bool bias = false;
  bool relu = false;
  float alpha = 1.0f;

  int64_t flops() const { return 2 * batch * m * k * n; }
  friend bool operator==(const MatmulSpec&, const MatmulSpec&) = default;
};

// Bags of keys for a set of input rows, in CSR form: row r, field f holds the local row indices
// ids[offsets[r * fields + f] .. offsets[r * fields + f + 1]). Local indices point into the rows
// table of the batch (see RowTable). An empty bag pools to zeros.
struct BagsView {
  int64_t rows = 0;
  int fields = 0;
  const int32_t* offsets = nullptr;  // rows * fields + 1 entries
  const int32_t* ids = nullptr;
};

// The embedding rows a batch touches, flattened: row i occupies values[row_offsets[i] ..
// row_offsets[i + 1]); its length is the dim of the field it belongs to.
struct RowTableView {
  const int64_t* row_offsets = nullptr;
  int64_t num_rows = 0;
};

class Kernels {
 public:
  virtual ~Kernels() = default;

  // See MatmulSpec. a, b, bias and c must not overlap c (except c itself when accumulate).
  [[nodiscard]] virtual Status Matmul(const MatmulSpec& spec, const float* a, const float* b, const float* bias,
                                      float* c) = 0;

  // dx[i] = dy[i] if y[i] > 0 else 0, for i in [0, count): the ReLU backward from its output y.
  [[nodiscard]] virtual Status ReluBackward(int64_t count, const float* y, const float* dy, float* dx) = 0;

  // out[b][j] = alpha * sum_i a[b][i][j] (+ out[b][j] if accumulate), a[b] being (m x n).
  [[nodiscard]] virtual Status SumRows(int64_t batch, int64_t m, int64_t n, const float* a, float alpha,
                                       bool accumulate, float* out) = 0;

  // x[r] (input width of `model`) = per field f, the pooling of the rows in bag (r, f), placed at
  // the field's offset. bags.fields must equal the model's field count.
  [[nodiscard]] virtual Status GatherPool(const ModelSpec& model, const BagsView& bags, const RowTableView& table,
                                          const float* values, float* x) = 0;

  // The adjoint of GatherPool, scaled and accumulated: for every key in bag (r, f),
  // grad[key] += scale * dx[r][field f slice] (divided by the bag size under mean pooling).
  // Repeated keys (within a bag, across rows and tasks) are summed.
  [[nodiscard]] virtual Status ScatterAdd(const ModelSpec& model, const BagsView& bags, const RowTableView& table,
                                          const float* dx, float scale, float* grad) = 0;
};

}  // namespace metaps::worker
