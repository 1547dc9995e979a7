// Adam for the outer (meta) step when the engine runs without servers: the worker benchmark and
// single-process experiments. In a job the servers own the optimizers; this one mirrors
// torch.optim.Adam (bias-corrected moments, eps outside the square root) so that a local run and the
// PyTorch reference take the same steps. Stateless apart from its options: the caller owns the
// moment buffers (one pair per parameter, zero-initialized) and counts steps. Thread-compatible.
#pragma once

#include <cstdint>
#include <span>

namespace metaps::worker {

struct AdamOptions {
  float lr = 1e-3f;     // Default: 1e-3
  float beta1 = 0.9f;   // Default: 0.9
  float beta2 = 0.999f; // Default: 0.999
  float eps = 1e-8f;    // Default: 1e-8
};

class Adam {
 public:
  explicit Adam(AdamOptions options) : options_(options) {}

  // The bias corrections of step `step` (counting from 1), computed once per step.
  struct Step {
    float step_size = 0;    // lr / (1 - beta1^step)
    float inv_sqrt_c2 = 0;  // 1 / sqrt(1 - beta2^step)
  };
  Step At(int64_t step) const;

  // One step on `params` with gradient `grad`. Rows updated lazily (only those a batch touched)
  // use the global step: "lazy Adam". REQUIRES: all spans have the same size and do not overlap.
  void Update(std::span<float> params, std::span<const float> grad, std::span<float> m, std::span<float> v,
              const Step& step) const;

 private:
  AdamOptions options_;
};

}  // namespace metaps::worker
