// ReferenceKernels: Kernels written as the plainest loops, in double accumulation, so tests can check
// the oneDNN implementation (and the meta-learner on top of it) against something obviously right.
// Slow; not for training. Stateless, but like every Kernels not promised thread-safe.
#pragma once

#include "worker/kernels.h"

namespace metaps::worker {

class ReferenceKernels final : public Kernels {
 public:
  Status Matmul(const MatmulSpec& spec, const float* a, const float* b, const float* bias, float* c) override;
  Status ReluBackward(int64_t count, const float* y, const float* dy, float* dx) override;
  Status SumRows(int64_t batch, int64_t m, int64_t n, const float* a, float alpha, bool accumulate,
                 float* out) override;
  Status GatherPool(const ModelSpec& model, const BagsView& bags, const RowTableView& table, const float* values,
                    float* x) override;
  Status ScatterAdd(const ModelSpec& model, const BagsView& bags, const RowTableView& table, const float* dx,
                    float scale, float* grad) override;
};

}  // namespace metaps::worker
