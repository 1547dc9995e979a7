// optimizer_benchmark: one Optimizer::ApplyBatch over `batch` rows picked at random from `rows`
// slots of a table far larger than the CPU caches, for each optimizer, beside the row-memory
// floor measured in the same run: the same rows read, changed and written back with trivial
// arithmetic and the same prefetching. The ratio to that floor is what the optimizer's own work
// and memory access add; a ratio far above 1 means the loop stalls on DRAM (as it did while the
// compiler deleted its prefetches). Not a test.
//
// Usage: optimizer_benchmark [--rows N] [--batch B] [--dim D] [--reps R]
// The last line of stdout is one JSON object.
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/prefetch.h"
#include "ps/optimizer.h"

namespace {

using Clock = std::chrono::steady_clock;
using namespace metaps::ps;

struct Args {
  size_t rows = 200'000;
  size_t batch = 10'000;
  uint32_t dim = 32;
  int reps = 60;
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// A table of `rows` slots of `stride` bytes on huge pages, as the store keeps its rows.
struct Slots {
  size_t stride, bytes;
  std::unique_ptr<std::byte, decltype(&std::free)> mem{nullptr, &std::free};
  Slots(size_t rows, size_t stride_bytes) : stride(stride_bytes) {
    constexpr size_t kHuge = size_t{2} << 20;
    bytes = (rows * stride + kHuge - 1) & ~(kHuge - 1);
    mem.reset(static_cast<std::byte*>(std::aligned_alloc(kHuge, bytes)));
    if (!mem) {
      std::fprintf(stderr, "out of memory\n");
      std::exit(1);
    }
    (void)madvise(mem.get(), bytes, MADV_HUGEPAGE);
    std::memset(mem.get(), 0, bytes);  // every page faulted in before timing
  }
  float* Row(size_t i) const { return reinterpret_cast<float*>(mem.get() + i * stride); }
};

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", f.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (f == "--rows") a.rows = std::strtoull(next(), nullptr, 10);
    else if (f == "--batch") a.batch = std::strtoull(next(), nullptr, 10);
    else if (f == "--dim") a.dim = static_cast<uint32_t>(std::strtoul(next(), nullptr, 10));
    else if (f == "--reps") a.reps = std::atoi(next());
    else {
      std::fprintf(stderr, "usage: %s [--rows N] [--batch B] [--dim D] [--reps R]\n", argv[0]);
      return 2;
    }
  }
  if (a.rows == 0 || a.batch == 0 || a.dim == 0 || a.reps <= 0) {
    std::fprintf(stderr, "--rows, --batch, --dim and --reps must be > 0\n");
    return 2;
  }
  // The widest row (Adam and FTRL: weights plus 2 x dim of state), on 64-byte slots.
  const size_t row_floats = 3 * size_t{a.dim};
  const size_t stride = (row_floats * 4 + 40 + 63) & ~size_t{63};
  Slots slots(a.rows, stride);
  std::vector<float> grads(a.batch * a.dim);
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0.0f, 0.01f);
  for (float& g : grads) g = normal(rng);
  std::vector<size_t> idx(a.batch);
  auto pick = [&] {
    for (auto& x : idx) x = rng() % a.rows;
  };

  // The floor: the same rows, all of their floats read, changed and written, prefetched as far
  // ahead as the optimizers do.
  constexpr size_t kAhead = 24;
  std::vector<double> floor_ms;
  for (int rep = 0; rep < a.reps; ++rep) {
    pick();
    const auto t0 = Clock::now();
    for (size_t i = 0; i < a.batch; ++i) {
      if (i + kAhead < a.batch) metaps::PrefetchBytes(slots.Row(idx[i + kAhead]), row_floats * 4);
      float* p = slots.Row(idx[i]);
      const float* g = &grads[i * a.dim];
      for (size_t part = 0; part < 3; ++part, p += a.dim) {
        for (uint32_t k = 0; k < a.dim; ++k) p[k] = p[k] * 0.999f + g[k];
      }
    }
    floor_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  const double floor = Median(floor_ms);
  std::printf("row-memory floor: %.4f ms per %zu rows (%zu slots of %zu bytes)\n", floor, a.batch, a.rows, stride);

  std::string json = "{\"rows\":" + std::to_string(a.rows) + ",\"batch\":" + std::to_string(a.batch) +
                     ",\"dim\":" + std::to_string(a.dim) + ",\"floor_ms\":" + std::to_string(floor);
  for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kAdagrad, OptimizerKind::kAdam, OptimizerKind::kFtrl}) {
    auto created = Optimizer::Create(DefaultOptimizerSpec(kind));
    if (!created.ok()) {
      std::fprintf(stderr, "%s\n", created.status().ToString().c_str());
      return 1;
    }
    const Optimizer& opt = **created;
    for (size_t i = 0; i < a.rows; ++i) opt.InitState(slots.Row(i) + a.dim, a.dim);
    std::vector<RowUpdate> updates(a.batch);
    std::vector<double> ms;
    for (int rep = 0; rep < a.reps; ++rep) {
      pick();
      for (size_t i = 0; i < a.batch; ++i) {
        float* w = slots.Row(idx[i]);
        // Distinct counts, as a long-running table has (Adam's bias corrections by count).
        updates[i] = {w, w + a.dim, &grads[i * a.dim], 1 + (rng() % 100'000)};
      }
      std::sort(updates.begin(), updates.end(), [](const RowUpdate& x, const RowUpdate& y) { return x.weights < y.weights; });
      updates.erase(std::unique(updates.begin(), updates.end(),
                                [](const RowUpdate& x, const RowUpdate& y) { return x.weights == y.weights; }),
                    updates.end());
      std::shuffle(updates.begin(), updates.end(), rng);  // distinct rows, in random order
      const auto t0 = Clock::now();
      opt.ApplyBatch(updates.data(), updates.size(), a.dim);
      ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count() * a.batch / updates.size());
    }
    const double m = Median(ms);
    const std::string name(OptimizerKindName(kind));
    std::printf("%-8s %.4f ms per %zu rows (%.1fM rows/s), %.2fx the row-memory floor\n", name.c_str(), m, a.batch,
                a.batch / m / 1e3, m / floor);
    json += ",\"" + name + "_ms\":" + std::to_string(m) + ",\"" + name + "_ratio_to_floor\":" + std::to_string(m / floor);
  }
  std::printf("%s}\n", json.c_str());
  return 0;
}
