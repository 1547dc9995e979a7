// OneDnnKernels: Kernels on oneDNN (CPU engine).
//
// Batched products are oneDNN matmul primitives with a batch dimension (brgemm on AVX-512/AVX2
// machines), transposes expressed as strides, alpha as output scales, and accumulate/bias/ReLU fused
// as sum/binary/eltwise post-ops, so a layer of a whole meta-batch is one primitive call. The ReLU
// backward is an eltwise backward primitive. Column sums, bag gather/pooling and the scatter-add are
// plain vectorizable loops (no oneDNN primitive fits bags, and a reduction primitive would cost more
// in call overhead than the sum itself).
//
// Each object owns its dnnl::engine and dnnl::stream (no process-wide state of ours) and caches
// primitives by shape, so the hot loop builds nothing after the first meta-batch. Not thread-safe:
// one per worker thread. oneDNN here runs on OpenMP; the caller sets the thread count.
// dnnl::error never leaves this class: it comes back as an Internal/InvalidArgument Status.
#pragma once

#include <memory>

#include "worker/kernels.h"

namespace metaps::worker {

// Sets how many threads oneDNN primitives and the engine's own parallel loops use (Debian's oneDNN
// runs on OpenMP, so this is the OpenMP thread count of the calling thread). n >= 1.
void SetKernelThreads(int n);

class OneDnnKernels final : public Kernels {
 public:
  static Result<std::unique_ptr<OneDnnKernels>> Create();
  ~OneDnnKernels() override;

  Status Matmul(const MatmulSpec& spec, const float* a, const float* b, const float* bias, float* c) override;
  Status ReluBackward(int64_t count, const float* y, const float* dy, float* dx) override;
  Status SumRows(int64_t batch, int64_t m, int64_t n, const float* a, float alpha, bool accumulate,
                 float* out) override;
  Status GatherPool(const ModelSpec& model, const BagsView& bags, const RowTableView& table, const float* values,
                    float* x) override;
  Status ScatterAdd(const ModelSpec& model, const BagsView& bags, const RowTableView& table, const float* dx,
                    float scale, float* grad) override;

  // The implementation oneDNN picked for a product of this shape ("brg:avx512_core", ...), for logs.
  Result<std::string> MatmulImplName(const MatmulSpec& spec);

 private:
  struct State;
  explicit OneDnnKernels(std::unique_ptr<State> state);
  std::unique_ptr<State> state_;
};

}  // namespace metaps::worker
