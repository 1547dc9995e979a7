// `metaps bench serve SNAPSHOT`: the cost of serving one request (adapt to a user's support, score
// the candidates) on a snapshot, in process (ServingModel::Score: row lookups in RocksDB, the
// inner loop on oneDNN kernels, the forward passes) and through HTTP on loopback (`metaps serve`'s
// path: Boost.Beast, one connection per request, JSON both ways), measured in the same run so the
// HTTP layer's share shows as their ratio.
//
// Requests are synthetic: every field gets one value per event (a bag field one to three) drawn
// from --vocab values per field, so most keys are not in the snapshot and get their initial value
// (a RocksDB lookup that misses); labels are uniform in the data's range guess [1, 5] (0/1 for BCE).
// Human-readable lines go to stderr; the last stdout line is one JSON object.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/files.h"
#include "common/http_server.h"
#include "launch/cli.h"
#include "launch/serving.h"
#include "worker/onednn_kernels.h"

namespace metaps::launch {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct BenchServeOptions {
  std::string snapshot;
  std::vector<std::string> deltas;
  int requests = 300;
  int support = 10;
  int candidates = 100;
  int vocab = 1000;
  uint64_t seed = 1;
  int threads = 1;  // kernel threads, as `metaps serve --threads`
  bool json_only = false;
};

struct Timing {
  double per_s = 0, mean_ms = 0, p50_ms = 0, p99_ms = 0;
};

Timing Summarize(std::vector<double> ms, double seconds) {
  Timing t;
  if (ms.empty()) return t;
  std::sort(ms.begin(), ms.end());
  double sum = 0;
  for (double v : ms) sum += v;
  t.per_s = static_cast<double>(ms.size()) / seconds;
  t.mean_ms = sum / static_cast<double>(ms.size());
  t.p50_ms = ms[ms.size() / 2];
  t.p99_ms = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
  return t;
}

nlohmann::json ToJson(const Timing& t) {
  return {{"requests_per_s", t.per_s}, {"mean_ms", t.mean_ms}, {"p50_ms", t.p50_ms}, {"p99_ms", t.p99_ms}};
}

int RunBenchServe(const BenchServeOptions& o) {
  worker::SetKernelThreads(o.threads);  // this thread: the in-process phase
  auto tmp = MakeTempDir("metaps-bench-serve");
  if (!tmp.ok()) {
    std::cerr << "metaps bench serve: " << tmp.status().message() << "\n";
    return 1;
  }
  const std::string tmpl = *tmp;
  RemoveAllOnExit cleanup(tmpl);
  auto kernels = worker::OneDnnKernels::Create();
  if (!kernels.ok()) {
    std::cerr << "metaps bench serve: oneDNN: " << kernels.status().message() << "\n";
    return 1;
  }
  std::vector<std::string> dirs = {o.snapshot};
  dirs.insert(dirs.end(), o.deltas.begin(), o.deltas.end());
  const auto t_load = Clock::now();
  auto model = ServingModel::Open(dirs, tmpl + "/rows", std::move(kernels).value());
  if (!model.ok()) {
    std::cerr << "metaps bench serve: " << model.status().message() << "\n";
    return model.status().code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  const double load_s = std::chrono::duration<double>(Clock::now() - t_load).count();
  ServingModel& m = **model;
  const worker::JobModel& job = m.chain().back().job;
  const bool clicks = job.model.loss == worker::Loss::kBce;

  std::mt19937_64 rng(o.seed);
  auto event = [&](bool labelled) {
    nlohmann::json fields = nlohmann::json::object();
    for (const auto& f : job.model.fields) {
      const int n = f.pooling == worker::Pooling::kMean ? 1 + static_cast<int>(rng() % 3) : 1;
      nlohmann::json vals = nlohmann::json::array();
      for (int i = 0; i < n; ++i)
        vals.push_back("v" + std::to_string(rng() % static_cast<uint64_t>(o.vocab)));
      fields[f.name] = vals;
    }
    nlohmann::json e = {{"fields", fields}};
    if (labelled) e["label"] = clicks ? static_cast<double>(rng() % 2) : 1.0 + static_cast<double>(rng() % 5);
    return e;
  };
  std::vector<nlohmann::json> requests;
  for (int r = 0; r < o.requests; ++r) {
    nlohmann::json support = nlohmann::json::array(), candidates = nlohmann::json::array();
    for (int i = 0; i < o.support; ++i) support.push_back(event(true));
    for (int i = 0; i < o.candidates; ++i) candidates.push_back(event(false));
    requests.push_back({{"support", support}, {"candidates", candidates}});
  }

  // Warm-up (oneDNN primitives, RocksDB's block cache), then in process.
  for (int i = 0; i < std::min(20, o.requests); ++i) (void)m.Score(requests[i]);
  std::vector<double> ms;
  auto t0 = Clock::now();
  for (const auto& req : requests) {
    const auto a = Clock::now();
    auto r = m.Score(req);
    if (!r.ok()) {
      std::cerr << "metaps bench serve: " << r.status().message() << "\n";
      return 1;
    }
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - a).count());
  }
  const Timing direct = Summarize(ms, std::chrono::duration<double>(Clock::now() - t0).count());

  // Through HTTP on loopback.
  HttpServer http(m.HttpHandler(o.threads), HttpServerOptions{});
  auto port = http.Start("127.0.0.1", 0);
  if (!port.ok()) {
    std::cerr << "metaps bench serve: " << port.status().message() << "\n";
    return 1;
  }
  std::vector<std::string> bodies;
  for (const auto& req : requests) bodies.push_back(req.dump());
  ms.clear();
  t0 = Clock::now();
  for (const auto& body : bodies) {
    const auto a = Clock::now();
    auto r = HttpCall("127.0.0.1", *port, "POST", "/score", body, "application/json", 30000);
    if (!r.ok() || r->status != 200) {
      std::cerr << "metaps bench serve: HTTP: " << (r.ok() ? r->body : r.status().message()) << "\n";
      return 1;
    }
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - a).count());
  }
  const Timing over_http = Summarize(ms, std::chrono::duration<double>(Clock::now() - t0).count());
  http.Stop();

  if (!o.json_only) {
    std::cerr << "snapshot " << m.chain().back().id << ": " << m.rows() << " rows loaded in " << load_s
              << " s; algo " << worker::AlgoName(job.meta.algo) << ", " << job.meta.inner_steps
              << " inner steps, MLP " << job.model.num_params() << " weights\n"
              << "requests of " << o.support << " support events and " << o.candidates << " candidates:\n"
              << "  in process: " << direct.per_s << " requests/s (mean " << direct.mean_ms << " ms, p50 "
              << direct.p50_ms << ", p99 " << direct.p99_ms << ")\n"
              << "  over HTTP:  " << over_http.per_s << " requests/s (mean " << over_http.mean_ms
              << " ms, p50 " << over_http.p50_ms << ", p99 " << over_http.p99_ms << "), "
              << over_http.per_s / direct.per_s << "x the in-process rate\n";
  }
  nlohmann::json out = {{"snapshot", m.chain().back().id},
                        {"rows", m.rows()},
                        {"load_seconds", load_s},
                        {"requests", o.requests},
                        {"support", o.support},
                        {"candidates", o.candidates},
                        {"algo", std::string(worker::AlgoName(job.meta.algo))},
                        {"inner_steps", job.meta.inner_steps},
                        {"in_process", ToJson(direct)},
                        {"http", ToJson(over_http)},
                        {"http_ratio_to_in_process", over_http.per_s / direct.per_s},
                        {"candidates_per_s_in_process", direct.per_s * o.candidates}};
  std::cout << out.dump() << std::endl;
  return 0;
}

}  // namespace

void RegisterBenchServeCommand(CLI::App& bench, Action* action) {
  auto o = std::make_shared<BenchServeOptions>();
  auto* cmd = bench.add_subcommand("serve", "Serving a snapshot: requests/s in process and over HTTP");
  cmd->add_option("snapshot", o->snapshot, "A full snapshot directory")->required();
  cmd->add_option("--delta", o->deltas, "Deltas on top of it, in order");
  cmd->add_option("--requests", o->requests, "Requests per phase (default 300)")
      ->check(CLI::Range(1, 1000000));
  cmd->add_option("--support", o->support, "Support events per request (default 10)")
      ->check(CLI::Range(0, 10000));
  cmd->add_option("--candidates", o->candidates, "Candidates per request (default 100)")
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--vocab", o->vocab, "Values per field the events draw from (default 1000)")
      ->check(CLI::Range(1, 1 << 30));
  cmd->add_option("--seed", o->seed, "Seed of the synthetic requests");
  cmd->add_option("--threads", o->threads, "Kernel threads per request (default 1, as metaps serve)")
      ->check(CLI::Range(1, 1024));
  cmd->add_flag("--json", o->json_only, "Print only the JSON line");

  cmd->callback([o, action] { *action = [o] { return RunBenchServe(*o); }; });
}

}  // namespace metaps::launch
