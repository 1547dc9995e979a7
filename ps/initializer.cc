#include "ps/initializer.h"

#include <cmath>
#include <string>

namespace metaps::ps {

std::string_view InitKindName(InitKind kind) {
  switch (kind) {
    case InitKind::kZeros: return "zeros";
    case InitKind::kUniform: return "uniform";
    case InitKind::kNormal: return "normal";
  }
  return "?";
}

Result<InitKind> ParseInitKind(std::string_view name) {
  if (name == "zeros") return InitKind::kZeros;
  if (name == "uniform") return InitKind::kUniform;
  if (name == "normal") return InitKind::kNormal;
  return InvalidArgument("unknown initializer \"" + std::string(name) +
                         "\" (expected normal, uniform or zeros)");
}

namespace {
// 53 random bits -> double in (0, 1): never 0, so log() is finite.
inline double Unit(uint64_t bits) { return (static_cast<double>(bits >> 11) + 0.5) * 0x1.0p-53; }
}  // namespace

void InitializeRow(const InitSpec& spec, uint64_t table_seed, Key key, float* out, uint32_t dim) {
  const uint64_t base = Mix64(Mix64(spec.seed ^ table_seed) ^ key);
  switch (spec.kind) {
    case InitKind::kZeros:
      for (uint32_t i = 0; i < dim; ++i) out[i] = 0.0f;
      return;
    case InitKind::kUniform: {
      const double s = spec.scale;
      for (uint32_t i = 0; i < dim; ++i) {
        const double u = Unit(Mix64(base + i));
        out[i] = static_cast<float>((2.0 * u - 1.0) * s);
      }
      return;
    }
    case InitKind::kNormal: {
      const double s = spec.scale;
      constexpr double kTwoPi = 6.283185307179586476925286766559;
      for (uint32_t i = 0; i < dim; i += 2) {
        const uint64_t c = base + (i >> 1);
        const double u1 = Unit(Mix64(c));
        const double u2 = Unit(Mix64(c ^ 0xd6e8feb86659fd93ULL));
        const double r = std::sqrt(-2.0 * std::log(u1)) * s;
        const double a = kTwoPi * u2;
        out[i] = static_cast<float>(r * std::cos(a));
        if (i + 1 < dim) out[i + 1] = static_cast<float>(r * std::sin(a));
      }
      return;
    }
  }
}

}  // namespace metaps::ps
