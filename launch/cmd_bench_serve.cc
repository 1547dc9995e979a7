// `metaps bench serve SNAPSHOT`: the cost of serving one request (adapt to a user's support, score
// the candidates) on a snapshot, in process (ServingModel::Score: row lookups in RocksDB, the
// inner loop on oneDNN kernels, the forward passes) and through HTTP on loopback (`metaps serve`'s
// path: Boost.Beast, JSON both ways), measured in the same run so the HTTP layer's share shows as
// their ratio. Over HTTP: one connection per request, one kept connection, and --clients kept
// connections at once against a server of as many request threads; in process, --clients threads
// at once too, so the concurrent HTTP rate has its in-process reference.
//
// Requests are synthetic: every field gets one value per event (a bag field one to three) drawn
// from --vocab values per field, so most keys are not in the snapshot and get their initial value
// (a RocksDB lookup that misses); labels are uniform in the data's range guess [1, 5] (0/1 for BCE).
// Human-readable lines go to stderr; the last stdout line is one JSON object.
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
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
  int clients = 0;  // concurrent requests; 0: the machine's hardware threads, at least 2
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

std::string Line(const Timing& t) {
  std::ostringstream s;
  s << t.per_s << " requests/s (mean " << t.mean_ms << " ms, p50 " << t.p50_ms << ", p99 " << t.p99_ms << ")";
  return s.str();
}

nlohmann::json ToJson(const Timing& t) {
  return {{"requests_per_s", t.per_s}, {"mean_ms", t.mean_ms}, {"p50_ms", t.p50_ms}, {"p99_ms", t.p99_ms}};
}

// Runs one(client, i) for every request i, split round robin over `clients` threads (each with
// `kernel_threads` kernel threads) that run at once; the rate is over the wall time of all.
Result<Timing> Timed(size_t requests, int clients, int kernel_threads,
                     const std::function<Status(int client, size_t i)>& one) {
  std::vector<std::vector<double>> ms(static_cast<size_t>(clients));
  std::vector<Status> failed(static_cast<size_t>(clients));
  auto run = [&](int c) {
    worker::SetKernelThreads(kernel_threads);
    for (size_t i = static_cast<size_t>(c); i < requests; i += static_cast<size_t>(clients)) {
      const auto a = Clock::now();
      Status st = one(c, i);
      if (!st.ok()) {
        failed[static_cast<size_t>(c)] = st;
        return;
      }
      ms[static_cast<size_t>(c)].push_back(
          std::chrono::duration<double, std::milli>(Clock::now() - a).count());
    }
  };
  const auto t0 = Clock::now();
  if (clients == 1) {
    run(0);
  } else {
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) threads.emplace_back(run, c);
    for (auto& t : threads) t.join();
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  std::vector<double> all;
  for (size_t c = 0; c < ms.size(); ++c) {
    METAPS_RETURN_IF_ERROR(failed[c]);
    all.insert(all.end(), ms[c].begin(), ms[c].end());
  }
  return Summarize(std::move(all), seconds);
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
  std::vector<std::string> dirs = {o.snapshot};
  dirs.insert(dirs.end(), o.deltas.begin(), o.deltas.end());
  const auto t_load = Clock::now();
  auto model = ServingModel::Open(dirs, tmpl + "/rows", []() -> Result<std::unique_ptr<worker::Kernels>> {
    METAPS_ASSIGN_OR_RETURN(auto k, worker::OneDnnKernels::Create());
    return std::unique_ptr<worker::Kernels>(std::move(k));
  });
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

  const int clients =
      o.clients > 0 ? o.clients : std::max(2, static_cast<int>(std::thread::hardware_concurrency()));
  auto fail = [](const Status& s) {
    std::cerr << "metaps bench serve: " << s.message() << "\n";
    return 1;
  };
  auto score = [&](int, size_t i) { return m.Score(requests[i]).status(); };
  // Warm-up (oneDNN primitives, RocksDB's block cache, a scorer per client), then in process.
  const size_t n = requests.size();
  if (auto w = Timed(std::min<size_t>(20 * clients, n), clients, o.threads, score); !w.ok())
    return fail(w.status());
  auto direct = Timed(n, 1, o.threads, score);
  if (!direct.ok()) return fail(direct.status());
  auto direct_concurrent = Timed(n, clients, o.threads, score);
  if (!direct_concurrent.ok()) return fail(direct_concurrent.status());

  // Through HTTP on loopback, to a server set up as `metaps serve` sets it up by default.
  HttpServerOptions http_options;
  http_options.threads = clients;
  http_options.keep_alive_idle_ms = 30000;
  HttpServer http(m.HttpHandler(o.threads), http_options);
  auto port = http.Start("127.0.0.1", 0);
  if (!port.ok()) return fail(port.status());
  std::vector<std::string> bodies;
  for (const auto& req : requests) bodies.push_back(req.dump());
  auto answered = [](const Result<HttpResponse>& r) {
    if (!r.ok()) return Status(r.status().code(), "HTTP: " + r.status().message());
    if (r->status != 200) return Internal("HTTP " + std::to_string(r->status) + ": " + r->body);
    return Status();
  };
  auto over_http = Timed(n, 1, 1, [&](int, size_t i) {
    return answered(HttpCall("127.0.0.1", *port, "POST", "/score", bodies[i], "application/json", 30000));
  });
  if (!over_http.ok()) return fail(over_http.status());
  std::vector<std::unique_ptr<HttpClient>> conns;
  for (int c = 0; c < clients; ++c) conns.push_back(std::make_unique<HttpClient>("127.0.0.1", *port, 30000));
  auto post = [&](int c, size_t i) {
    return answered(conns[static_cast<size_t>(c)]->Call("POST", "/score", bodies[i]));
  };
  auto kept = Timed(n, 1, 1, post);
  if (!kept.ok()) return fail(kept.status());
  auto concurrent = Timed(n, clients, 1, post);
  if (!concurrent.ok()) return fail(concurrent.status());
  http.Stop();

  if (!o.json_only) {
    std::cerr << "snapshot " << m.chain().back().id << ": " << m.rows() << " rows loaded in " << load_s
              << " s; algo " << worker::AlgoName(job.meta.algo) << ", " << job.meta.inner_steps
              << " inner steps, MLP " << job.model.num_params() << " weights\n"
              << "requests of " << o.support << " support events and " << o.candidates << " candidates:\n"
              << "  in process, one at a time:       " << Line(*direct) << "\n"
              << "  in process, " << clients << " at once:           " << Line(*direct_concurrent) << ", "
              << direct_concurrent->per_s / direct->per_s << "x one at a time\n"
              << "  HTTP, a connection per request:  " << Line(*over_http) << ", "
              << over_http->per_s / direct->per_s << "x in process\n"
              << "  HTTP, one kept connection:       " << Line(*kept) << ", " << kept->per_s / direct->per_s
              << "x in process\n"
              << "  HTTP, " << clients << " kept connections at once: " << Line(*concurrent) << ", "
              << concurrent->per_s / direct_concurrent->per_s << "x in process at once, "
              << concurrent->per_s / kept->per_s << "x one kept connection\n";
  }
  nlohmann::json out = {
      {"snapshot", m.chain().back().id},
      {"rows", m.rows()},
      {"load_seconds", load_s},
      {"requests", o.requests},
      {"support", o.support},
      {"candidates", o.candidates},
      {"algo", std::string(worker::AlgoName(job.meta.algo))},
      {"inner_steps", job.meta.inner_steps},
      {"clients", clients},
      {"scorers", m.scorers()},
      {"in_process", ToJson(*direct)},
      {"in_process_concurrent", ToJson(*direct_concurrent)},
      {"http", ToJson(*over_http)},
      {"http_keep_alive", ToJson(*kept)},
      {"http_concurrent", ToJson(*concurrent)},
      {"http_ratio_to_in_process", over_http->per_s / direct->per_s},
      {"http_keep_alive_ratio_to_in_process", kept->per_s / direct->per_s},
      {"in_process_concurrent_speedup", direct_concurrent->per_s / direct->per_s},
      {"http_concurrent_ratio_to_in_process_concurrent", concurrent->per_s / direct_concurrent->per_s},
      {"candidates_per_s_in_process", direct->per_s * o.candidates}};
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
  cmd->add_option("--clients", o->clients,
                  "Requests at once in the concurrent phases (default 0: the machine's hardware threads, at "
                  "least 2)")
      ->check(CLI::Range(0, 256));
  cmd->add_flag("--json", o->json_only, "Print only the JSON line");

  cmd->callback([o, action] { *action = [o] { return RunBenchServe(*o); }; });
}

}  // namespace metaps::launch
