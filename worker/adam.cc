#include "worker/adam.h"

#include <cmath>

#include "worker/internal/vectorize.h"

namespace metaps::worker {
namespace {

METAPS_VECTORIZE void AdamLoop(float* __restrict p, const float* __restrict g, float* __restrict m,
                               float* __restrict v, size_t n, float b1, float b2, float step_size,
                               float inv_sqrt_c2, float eps) {
  for (size_t i = 0; i < n; ++i) {
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    p[i] -= step_size * m[i] / (std::sqrt(v[i]) * inv_sqrt_c2 + eps);
  }
}

}  // namespace

Adam::Step Adam::At(int64_t step) const {
  const double c1 = 1.0 - std::pow(double(options_.beta1), double(step));
  const double c2 = 1.0 - std::pow(double(options_.beta2), double(step));
  return {static_cast<float>(options_.lr / c1), static_cast<float>(1.0 / std::sqrt(c2))};
}

void Adam::Update(std::span<float> params, std::span<const float> grad, std::span<float> m, std::span<float> v,
                  const Step& step) const {
  AdamLoop(params.data(), grad.data(), m.data(), v.data(), params.size(), options_.beta1, options_.beta2,
           step.step_size, step.inv_sqrt_c2, options_.eps);
}

}  // namespace metaps::worker
