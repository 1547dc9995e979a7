// `metaps bench worker`: the meta-learning engine alone (no servers) on the MeLU-shaped workload of
// ../shared/anchors/torch_maml_ref.py, side by side with that PyTorch reference when
// /usr/bin/python3 can import torch.
//
// Workload (as the reference): 8 one-hot fields x 32 dims, ids uniform in [0, 100k) from one shared
// table, ratings 1..5, MLP 256-64-64-1, MSE, support 20, query 10, 5 inner SGD steps at 5e-6,
// meta-batch 32, Adam (lr 5e-5) outer step on the MLP, the touched embedding rows (lazily: only rows
// a batch touched, as a parameter server would) and, for metasgd, the learned rates. Timed: task
// layout, row gather, meta-gradient, Adam. Synthetic tasks are generated before timing, as the
// reference does. The same run measures oneDNN's sgemm peak (1024^3) on the same threads.
// Human-readable lines go to stderr; the last stdout line is one JSON object.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "launch/cli.h"
#include "worker/adam.h"
#include "worker/meta_learner.h"
#include "worker/onednn_kernels.h"
#include "worker/task_batch.h"

namespace metaps::launch {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct BenchOptions {
  std::string algo = "fomaml";
  int threads = 1;
  int tasks = 4096;
  int torch_tasks = 512;
  bool json_only = false;
  bool no_torch = false;
  std::string shared;
};

// The reference's shapes and rates.
constexpr int kFields = 8, kDim = 32, kSupport = 20, kQuery = 10, kSteps = 5, kMetaBatch = 32, kVocab = 100000;
constexpr float kInnerLr = 5e-6f, kOuterLr = 5e-5f;

fs::path SharedDir(const std::string& flag) {
  if (!flag.empty()) return flag;
  if (const char* env = std::getenv("METAPS_SHARED")) return env;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::path("../shared") : exe.parent_path() / ".." / ".." / ".." / "shared";
}

// Runs a shell command and returns its stdout, or nullopt when it fails.
std::optional<std::string> Capture(const std::string& cmd) {
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return std::nullopt;
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  if (pclose(pipe) != 0) return std::nullopt;
  return out;
}

// The PyTorch reference's tasks/s for the same algorithm and threads; nullopt (with the reason in
// *note) when torch is missing or the algorithm has no reference.
std::optional<double> RunTorch(const BenchOptions& o, std::string* note) {
  if (o.no_torch) {
    *note = "skipped (--no-torch)";
    return std::nullopt;
  }
  if (o.algo != "fomaml" && o.algo != "maml" && o.algo != "reptile") {
    *note = "the reference implements fomaml, maml and reptile only";
    return std::nullopt;
  }
  if (!Capture("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1")) {
    *note = "/usr/bin/python3 cannot import torch";
    return std::nullopt;
  }
  const fs::path script = SharedDir(o.shared) / "anchors" / "torch_maml_ref.py";
  if (!fs::exists(script)) {
    *note = "reference script not found at " + script.string();
    return std::nullopt;
  }
  const std::string cmd = "/usr/bin/python3 '" + script.string() + "' --algo " + o.algo + " --threads " +
                          std::to_string(o.threads) + " --tasks " + std::to_string(o.torch_tasks);
  auto out = Capture(cmd);
  std::smatch m;
  static const std::regex kRate(R"(([0-9.]+) tasks/s)");
  if (!out || !std::regex_search(*out, m, kRate)) {
    *note = "the reference failed: " + cmd;
    return std::nullopt;
  }
  *note = out->substr(0, out->find('\n'));
  return std::stod(m[1]);
}

// oneDNN sgemm peak on this run's threads: best of several 1024^3 products.
Result<double> MatmulPeak(worker::OneDnnKernels* kernels) {
  const int64_t n = 1024;
  std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
  const worker::MatmulSpec spec{.batch = 1, .m = n, .k = n, .n = n};
  METAPS_RETURN_IF_ERROR(kernels->Matmul(spec, a.data(), b.data(), nullptr, c.data()));  // build + warm
  double best = 1e30;
  const auto start = Clock::now();
  for (int rep = 0; rep < 20 && (rep < 3 || Clock::now() - start < std::chrono::milliseconds(600)); ++rep) {
    const auto t0 = Clock::now();
    METAPS_RETURN_IF_ERROR(kernels->Matmul(spec, a.data(), b.data(), nullptr, c.data()));
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return spec.flops() / best;
}

int RunBench(const BenchOptions& o) {
  auto fail = [](const Status& s) {
    std::cerr << "bench worker: " << s << "\n";
    return 1;
  };
  auto algo = worker::ParseAlgo(o.algo);
  if (!algo.ok()) return fail(algo.status());
  worker::SetKernelThreads(o.threads);

  worker::ModelSpec model;
  for (int f = 0; f < kFields; ++f) model.fields.push_back({"f" + std::to_string(f), kDim, worker::Pooling::kSum});
  model.layers = {64, 64, 1};
  model.loss = worker::Loss::kMse;
  const worker::MetaOptions meta{.algo = *algo, .inner_steps = kSteps, .inner_lr = kInnerLr};

  // Parameters initialized as the reference does.
  std::mt19937_64 rng(0);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> table(int64_t{kVocab} * kDim);
  for (float& x : table) x = 0.01f * normal(rng);
  std::vector<float> weights;
  for (const worker::TensorSlot& s : model.param_layout()) {
    const float scale = s.rows > 1 ? std::sqrt(2.0f / s.rows) : 0.0f;
    for (int64_t i = 0; i < s.size(); ++i) weights.push_back(scale * normal(rng));
  }
  std::vector<float> alpha(*algo == worker::Algo::kMetaSgd ? weights.size() : 0, kInnerLr);
  std::vector<float> table_m(table.size()), table_v(table.size());
  std::vector<float> w_m(weights.size()), w_v(weights.size()), a_m(alpha.size()), a_v(alpha.size());
  const worker::Adam adam({.lr = kOuterLr});

  // Synthetic tasks, before timing.
  const int batches = std::max(1, o.tasks / kMetaBatch);
  std::vector<worker::Task> tasks((batches + 1) * kMetaBatch);  // +1: warm-up
  std::uniform_int_distribution<int> id(0, kVocab - 1), rating(1, 5);
  std::vector<std::vector<Key>> bags(kFields, std::vector<Key>(1));
  for (worker::Task& t : tasks) {
    t.num_support = kSupport;
    t.num_query = kQuery;
    for (int r = 0; r < kSupport + kQuery; ++r) {
      for (auto& bag : bags) bag[0] = static_cast<Key>(id(rng));
      t.AddRow(bags, static_cast<float>(rating(rng)));
    }
  }

  auto made = worker::OneDnnKernels::Create();
  if (!made.ok()) return fail(made.status());
  std::unique_ptr<worker::OneDnnKernels> kernels = std::move(made).value();
  worker::MetaLearner learner(model, meta, kernels.get());
  worker::TaskBatchBuilder builder;
  worker::TaskBatch batch;
  worker::MetaGradient grad;
  std::vector<float> rows;
  std::vector<const worker::Task*> members(kMetaBatch);
  int64_t step = 0, flops = 0;

  auto meta_step = [&](int b) -> Status {
    for (int i = 0; i < kMetaBatch; ++i) members[i] = &tasks[int64_t{b} * kMetaBatch + i];
    METAPS_RETURN_IF_ERROR(builder.Build(model, members, &batch));
    rows.resize(batch.num_values());
    for (size_t i = 0; i < batch.keys.size(); ++i) {
      std::copy_n(table.data() + batch.keys[i] * kDim, kDim, rows.data() + batch.row_offsets[i]);
    }
    METAPS_RETURN_IF_ERROR(learner.Compute(batch, weights, alpha, rows, false, &grad));
    flops += grad.flops;
    const worker::Adam::Step at = adam.At(++step);
    adam.Update(weights, grad.weights, w_m, w_v, at);
    if (!alpha.empty()) adam.Update(alpha, grad.alpha, a_m, a_v, at);
    for (size_t i = 0; i < batch.keys.size(); ++i) {
      const int64_t row = static_cast<int64_t>(batch.keys[i]) * kDim;
      adam.Update(std::span<float>(table).subspan(row, kDim),
                  std::span<const float>(grad.rows).subspan(batch.row_offsets[i], kDim),
                  std::span<float>(table_m).subspan(row, kDim), std::span<float>(table_v).subspan(row, kDim), at);
    }
    return Status::Ok();
  };

  Status st = meta_step(batches);  // warm-up: primitives built, buffers grown
  if (!st.ok()) return fail(st);
  flops = 0;
  const auto t0 = Clock::now();
  for (int b = 0; b < batches; ++b) {
    st = meta_step(b);
    if (!st.ok()) return fail(st);
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  const double tasks_per_s = batches * kMetaBatch / seconds;
  const double flops_per_s = flops / seconds;
  double mean_loss = 0;
  for (float l : grad.query_loss) mean_loss += l / grad.query_loss.size();

  auto peak = MatmulPeak(kernels.get());
  if (!peak.ok()) return fail(peak.status());
  auto impl = kernels->MatmulImplName({.batch = kMetaBatch, .m = kSupport, .k = kFields * kDim, .n = 64});

  std::string torch_note;
  const std::optional<double> torch = RunTorch(o, &torch_note);

  if (!o.json_only) {
    std::fprintf(stderr, "engine %s threads=%d: %d tasks in %.3f s: %.1f tasks/s, %.2f GFLOP/s (%.0f%% of the "
                 "%.2f GFLOP/s sgemm peak), last query loss %.3f, matmul impl %s\n",
                 o.algo.c_str(), o.threads, batches * kMetaBatch, seconds, tasks_per_s, flops_per_s / 1e9,
                 100 * flops_per_s / *peak, *peak / 1e9, mean_loss, impl.ok() ? impl->c_str() : "?");
    std::fprintf(stderr, "torch: %s\n", torch_note.c_str());
  }
  nlohmann::ordered_json j;
  j["bench"] = "worker";
  j["algo"] = o.algo;
  j["threads"] = o.threads;
  j["tasks"] = batches * kMetaBatch;
  j["seconds"] = seconds;
  j["tasks_per_s"] = tasks_per_s;
  j["torch_tasks_per_s"] = torch ? nlohmann::ordered_json(*torch) : nlohmann::ordered_json(nullptr);
  j["ratio_to_torch"] = torch ? nlohmann::ordered_json(tasks_per_s / *torch) : nlohmann::ordered_json(nullptr);
  if (!torch) j["torch_note"] = torch_note;
  j["flops_per_s"] = flops_per_s;
  j["matmul_peak_flops_per_s"] = *peak;
  j["fraction_of_peak"] = flops_per_s / *peak;
  j["workload"] = {{"fields", kFields},  {"dim", kDim},         {"mlp", "256-64-64-1"},  {"support", kSupport},
                   {"query", kQuery},    {"inner_steps", kSteps}, {"meta_batch", kMetaBatch}, {"vocab", kVocab},
                   {"loss", "mse"},      {"outer", "adam"}};
  std::cout << j.dump() << std::endl;
  return 0;
}

}  // namespace

void RegisterBenchWorkerCommand(CLI::App& bench, Action* action) {
  auto o = std::make_shared<BenchOptions>();
  auto* cmd = bench.add_subcommand("worker", "Meta-learning engine throughput vs the PyTorch reference");
  cmd->add_option("--algo", o->algo, "fomaml | maml | reptile | metasgd")
      ->check(CLI::IsMember({"fomaml", "maml", "reptile", "metasgd"}));
  cmd->add_option("--threads", o->threads, "Compute threads (oneDNN/OpenMP), also given to the reference")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--tasks", o->tasks, "Timed tasks for the engine (rounded down to meta-batches of 32)")
      ->check(CLI::Range(32, 1 << 24));
  cmd->add_option("--torch-tasks", o->torch_tasks, "Tasks the reference times")->check(CLI::Range(32, 1 << 20));
  cmd->add_option("--shared", o->shared, "The shared directory holding anchors/ (default: $METAPS_SHARED, then "
                                         "<exe>/../../../shared)");
  cmd->add_flag("--json", o->json_only, "Print only the JSON line");
  cmd->add_flag("--no-torch", o->no_torch, "Do not run the PyTorch reference");
  cmd->callback([action, o] { *action = [o] { return RunBench(*o); }; });
}

}  // namespace metaps::launch
