// `metaps run job.toml`: a whole job on this machine. Starts the scheduler, S servers and W workers
// as processes on loopback (ports chosen automatically), shows live progress, supervises them and
// writes the run directory:
//   job.toml         the resolved config (overrides applied, tables and rounds filled in)
//   token            the job's secret (mode 0600); every process must present it
//   keys/            with security.curve: the CURVE server pair, one client pair per process,
//                    authorized_keys (the clients bound sockets admit); see docs/operations.md
//   logs/<role>.log  each process's output
//   metrics.csv      progress over time; curves.svg the same as a plot
//   report.json      test metrics of meta-learning and the baselines (written by worker 0)
//   checkpoint/      the final checkpoint of every shard; servers/shard-<i>/ their data
//   model.json       the model (fields, MLP, inner loop): what export and serving need
//   snapshots/full-<time>/  the final snapshot for serving (`metaps serve` it; docs/snapshot.md)
// Exit code: 0 when every role finished cleanly, 1 when one failed (the others are stopped).
#include <malloc.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/files.h"
#include "common/http_server.h"
#include "common/subprocess.h"
#include "common/zmq_transport.h"
#include "launch/cli.h"
#include "launch/cluster.h"
#include "launch/job_config.h"
#include "launch/run.h"
#include "launch/snapshot.h"
#include "launch/warm_start.h"
#include "scheduler/scheduler.h"
#include "worker/data/datagen.h"
#include "worker/data/readers.h"
#include "worker/data/split.h"
#include "worker/job.h"
#include "worker/task_sampler.h"

namespace metaps::launch {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A supervised process: how to start it again, and how often it was.
struct Child {
  std::string name;
  Host host;  // where it runs
  std::vector<std::string> argv;
  Subprocess proc;
  int restarts = 0;
};

// Relative data paths are read against `base` (data.path may be a list of csv files).
Status ResolveDataPaths(Config& cfg, const fs::path& base) {
  auto absolute = [&](const std::string& p) {
    return p.empty() || fs::path(p).is_absolute() ? p : (base / p).lexically_normal().string();
  };
  for (const char* key : {"data.path", "data.dir", "eval.validation_users", "eval.test_users"}) {
    if (!cfg.Has(key)) continue;
    if (auto one = cfg.GetString(key); one.ok()) {
      METAPS_RETURN_IF_ERROR(cfg.Set(std::string(key) + "=" + nlohmann::json(absolute(*one)).dump()));
      continue;
    }
    METAPS_ASSIGN_OR_RETURN(std::vector<std::string> paths, cfg.GetStringArray(key));
    nlohmann::json list = nlohmann::json::array();
    for (const auto& p : paths) list.push_back(absolute(p));
    METAPS_RETURN_IF_ERROR(cfg.Set(std::string(key) + "=" + list.dump()));
  }
  return Status::Ok();
}

// [datagen]: writes a synthetic set where data.path points, unless it is already there.
Status MaybeGenerate(const Config& cfg) {
  if (!cfg.Has("datagen")) return Status::Ok();
  METAPS_ASSIGN_OR_RETURN(Config g, cfg.GetTable("datagen"));
  METAPS_RETURN_IF_ERROR(g.CheckKnownKeys({"users", "items", "events_per_user", "seed", "binary", "noise"}));
  METAPS_ASSIGN_OR_RETURN(std::string path, cfg.GetString("data.path"));
  if (fs::exists(path)) return Status::Ok();
  data::DatagenOptions o;
  METAPS_ASSIGN_OR_RETURN(int64_t users, g.GetIntIn("users", o.users, 1, 100000000));
  METAPS_ASSIGN_OR_RETURN(int64_t items, g.GetIntIn("items", o.items, 1, 100000000));
  METAPS_ASSIGN_OR_RETURN(int64_t events, g.GetIntIn("events_per_user", o.events_per_user, 1, 100000));
  METAPS_ASSIGN_OR_RETURN(int64_t seed, g.GetInt("seed", static_cast<int64_t>(o.seed)));
  METAPS_ASSIGN_OR_RETURN(o.binary, g.GetBool("binary", o.binary));
  METAPS_ASSIGN_OR_RETURN(double noise, g.GetDouble("noise", o.noise));
  o.users = static_cast<uint32_t>(users);
  o.items = static_cast<uint32_t>(items);
  o.events_per_user = static_cast<uint32_t>(events);
  o.seed = static_cast<uint64_t>(seed);
  o.noise = noise;
  METAPS_ASSIGN_OR_RETURN(data::SyntheticSet set, data::GenerateSynthetic(o));
  return data::WriteSynthetic(set, fs::path(path).parent_path().string());
}

void WriteSvg(const std::string& path, const std::vector<std::vector<double>>& rows) {
  // rows: round, train_loss, val_mae
  std::ofstream svg(path);
  const int W = 720, H = 300, pad = 50;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W << "\" height=\"" << 2 * H << "\" "
      << "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  auto panel = [&](int col, const char* title, const char* color, int y0) {
    std::vector<std::pair<double, double>> pts;
    for (const auto& r : rows) {
      if (r.size() > static_cast<size_t>(col) && std::isfinite(r[col]) && r[col] != 0) pts.emplace_back(r[0], r[col]);
    }
    svg << "<text x=\"" << pad << "\" y=\"" << y0 + 20 << "\">" << title << "</text>\n";
    svg << "<rect x=\"" << pad << "\" y=\"" << y0 + 30 << "\" width=\"" << W - 2 * pad << "\" height=\"" << H - 70
        << "\" fill=\"none\" stroke=\"#999\"/>\n";
    if (pts.empty()) return;
    double x0 = pts.front().first, x1 = pts.back().first, lo = pts[0].second, hi = pts[0].second;
    for (auto& p : pts) lo = std::min(lo, p.second), hi = std::max(hi, p.second);
    if (x1 <= x0) x1 = x0 + 1;
    if (hi <= lo) hi = lo + 1e-9;
    svg << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"2\" points=\"";
    for (auto& p : pts) {
      double x = pad + (p.first - x0) / (x1 - x0) * (W - 2 * pad);
      double y = y0 + 30 + (1 - (p.second - lo) / (hi - lo)) * (H - 70);
      svg << x << "," << y << " ";
    }
    svg << "\"/>\n<text x=\"" << pad - 45 << "\" y=\"" << y0 + 40 << "\">" << std::setprecision(4) << hi << "</text>\n"
        << "<text x=\"" << pad - 45 << "\" y=\"" << y0 + H - 40 << "\">" << lo << "</text>\n"
        << "<text x=\"" << W - pad - 60 << "\" y=\"" << y0 + H - 25 << "\">round " << x1 << "</text>\n";
  };
  panel(1, "train query loss (mean over workers)", "#1f77b4", 0);
  panel(2, "validation MAE (worker 0, adapted)", "#d62728", H);
  svg << "</svg>\n";
}

// Asks every child to stop (SIGTERM; or, for processes that watch their stdin, the end of it,
// which reaches a remote process through ssh or srun), then insists.
void StopAll(std::vector<Child>& children, bool by_stdin) {
  for (auto& c : children) {
    if (!c.proc.running()) continue;
    if (by_stdin)
      c.proc.CloseStdin();
    else
      (void)c.proc.Signal(SIGTERM);
  }
  for (auto& c : children) {
    if (c.proc.Wait(std::chrono::seconds(10)).ok()) continue;
    // ssh or srun: a SIGTERM ends the link (srun passes it on), which the remote end sees too.
    if (by_stdin && c.proc.Signal(SIGTERM).ok() && c.proc.Wait(std::chrono::seconds(5)).ok()) continue;
    (void)c.proc.Signal(SIGKILL), (void)c.proc.Wait(std::chrono::seconds(5));
  }
}

// Sets `flag`'s value in a command line: replaces the value after it, or appends both.
void SetFlag(std::vector<std::string>& argv, const std::string& flag, const std::string& value) {
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] == flag) {
      argv[i + 1] = value;
      return;
    }
  }
  argv.insert(argv.end(), {flag, value});
}

// Shard `s`'s data directory: on its host's own disk under --server-data-root, else in the run
// directory.
std::string ShardDataDir(const RunFlags& f, const fs::path& run_dir, int s) {
  const std::string shard = "shard-" + std::to_string(s);
  if (f.cluster && !f.cluster->server_data_root.empty())
    return (fs::path(f.cluster->server_data_root) / run_dir.filename() / shard).string();
  return (run_dir / "servers" / shard).string();
}

// Removes shard `s`'s data directory (a resume from a checkpoint restores it afresh), on the
// shard's host when it is there.
Status RemoveShardData(const RunFlags& f, const fs::path& run_dir, int s) {
  const std::string dir = ShardDataDir(f, run_dir, s);
  if (!f.cluster || f.cluster->server_data_root.empty()) {
    std::error_code ec;
    fs::remove_all(dir, ec);
    return Status::Ok();
  }
  const Host& host = f.cluster->server_host(s);
  const std::string log = (run_dir / "logs" / ("clean-shard-" + std::to_string(s) + ".log")).string();
  METAPS_ASSIGN_OR_RETURN(Subprocess rm,
                          f.cluster->engine->Start(host, {"/bin/rm", "-rf", "--", dir},
                                                   SpawnOptions{.log_file = log, .stdin_pipe = true}));
  auto code = rm.Wait(std::chrono::seconds(120));
  if (!code.ok() || *code != 0)
    return Unavailable("cannot remove " + dir + " on " + host.name + " before restoring it; see " + log);
  return Status::Ok();
}

// Before a multi-host job starts: every host can run the metaps executable and sees the run
// directory (a shared filesystem, mounted at the same path). Each host is asked once, in parallel.
Status CheckHosts(const Cluster& cluster, const fs::path& run_dir, const std::string& job_toml) {
  struct Probe {
    Host host;
    std::string log;
    Subprocess proc;
  };
  std::vector<Probe> probes;
  for (const Host& h : cluster.hosts) {
    bool seen = false;
    for (const auto& p : probes) seen |= p.host.name == h.name;
    if (seen) continue;
    std::string log = (run_dir / "logs" / ("check-" + h.name + ".log")).string();
    std::error_code ec;
    fs::remove(log, ec);
    std::string script = "test -x " + ShellJoin({cluster.metaps}) + " || exit 3; test -r " +
                         ShellJoin({job_toml}) + " || exit 4; exit 0";
    METAPS_ASSIGN_OR_RETURN(Subprocess proc,
                            cluster.engine->Start(h, {"/bin/sh", "-c", script},
                                                  SpawnOptions{.log_file = log, .stdin_pipe = true}));
    probes.push_back({h, log, std::move(proc)});
  }
  for (auto& p : probes) {
    auto code = p.proc.Wait(std::chrono::seconds(60));
    const std::string on = "host " + p.host.name + " (" + cluster.engine->name() + ")";
    if (!code.ok()) return Unavailable(on + " did not answer within 60 s; see " + p.log);
    if (*code == 3) {
      return FailedPrecondition(on + " has no executable " + cluster.metaps +
                                ": install metaps at the same path on every host, or give --remote-metaps");
    }
    if (*code == 4) {
      return FailedPrecondition(
          on + " cannot read " + job_toml +
          ": the run directory must be on a filesystem every host mounts at the same path "
          "(give --run-dir on it)");
    }
    if (*code != 0) {
      return Unavailable(on + ": the engine could not run a command there (exit code " +
                         std::to_string(*code) + "); see " + p.log);
    }
  }
  return Status::Ok();
}

// Set by SIGTERM/SIGINT: the supervisor stops the job's processes and exits (resumable).
volatile sig_atomic_t g_stop_requested = 0;
void OnStopSignal(int) { g_stop_requested = 1; }

struct LaunchPlan {
  std::vector<uint64_t> start_round;       // per worker
  std::vector<std::string> restore_from;   // per shard; empty: the shard's own data directory
};

int Supervise(const RunFlags& f, const fs::path& run_dir, const std::string& job_toml,
              const std::string& token_file, const std::string& job_id, int servers, int workers,
              int64_t rounds, const LaunchPlan& plan, RunOutcome* outcome);

int Fail(const std::string& what) {
  std::cerr << "metaps run: " << what << "\n";
  return 1;
}

int RunJob(const RunFlags& f, RunOutcome* outcome) {
  auto loaded = LoadJobConfig(f.config_path, f.overrides);
  if (!loaded.ok()) return Fail(loaded.status().message()), 2;
  Config cfg = std::move(loaded).value();
  auto sched = SchedulerSettingsFromConfig(cfg);
  if (!sched.ok()) return Fail(sched.status().message()), 2;
  const int servers = sched->scheduler.num_servers, workers = sched->scheduler.num_workers;
  const std::string job_id = sched->scheduler.job_id;

  fs::path run_dir =
      f.run_dir.empty() ? fs::path("runs") / (job_id + "-" + LocalTimestamp()) : fs::path(f.run_dir);
  if (f.check) {
    // A check leaves nothing behind: the files a launch would write (a datagen set included) go
    // to a scratch directory that is removed on return.
    std::string scratch = (fs::temp_directory_path() / "metaps-check-XXXXXX").string();
    if (mkdtemp(scratch.data()) == nullptr)
      return Fail("cannot create a scratch directory in " + fs::temp_directory_path().string());
    run_dir = scratch;
  }
  run_dir = fs::absolute(run_dir);
  if (outcome) outcome->run_dir = run_dir.string();
  struct RemoveOnReturn {
    fs::path dir;
    ~RemoveOnReturn() {
      std::error_code ignored;
      if (!dir.empty()) fs::remove_all(dir, ignored);
    }
  } scratch_dir{f.check ? run_dir : fs::path()};
  std::error_code ec;
  fs::create_directories(run_dir / "logs", ec);
  if (ec) return Fail("cannot create " + run_dir.string() + ": " + ec.message());
  fs::path config_dir = fs::absolute(f.config_path).parent_path();
  Status st = ResolveDataPaths(cfg, cfg.Has("datagen") ? run_dir : config_dir);
  if (st.ok()) st = MaybeGenerate(cfg);
  if (!st.ok()) return Fail(st.message()), 2;

  // Load once here: bad config or data fails before any process starts, and the model's tables
  // and the number of rounds follow from the data.
  auto data_cfg = cfg.GetTable("data", true);
  if (!data_cfg.ok()) return Fail(data_cfg.status().message()), 2;
  uint64_t bad_shown = 0;
  auto dataset = data::LoadDataset(*data_cfg, [&](const std::string& line) {
    if (++bad_shown <= 10) std::cerr << "bad input: " << line << "\n";
  });
  if (!dataset.ok()) return Fail(dataset.status().message()), 2;
  auto eval_cfg = cfg.GetTable("eval");
  auto split_options = eval_cfg.ok() ? data::SplitOptionsFromConfig(*eval_cfg) : Result<data::SplitOptions>(eval_cfg.status());
  if (!split_options.ok()) return Fail(split_options.status().message()), 2;
  auto split = data::SplitUsers(*dataset, *split_options);
  if (!split.ok()) return Fail(split.status().message()), 2;
  auto job = worker::BuildJobModel(cfg, *dataset);
  if (!job.ok()) return Fail(job.status().message()), 2;
  auto tables = worker::TablesToml(cfg, *job);
  if (!tables.ok()) return Fail(tables.status().message()), 2;
  // What export and serving need of the model without the data (launch/snapshot.h).
  if (Status w =
          WriteFileAtomically((run_dir / "model.json").string(), worker::JobModelToJson(*job).dump(2) + "\n");
      !w.ok()) {
    return Fail(w.message());
  }
  auto tasks_cfg = cfg.GetTable("tasks");
  auto sampler = tasks_cfg.ok() ? worker::SamplerOptions::FromConfig(*tasks_cfg)
                                : Result<worker::SamplerOptions>(tasks_cfg.status());
  if (!sampler.ok()) return Fail(sampler.status().message()), 2;
  if (!cfg.Has("train.rounds")) {
    auto epochs = cfg.GetTable("train")->GetIntIn("epochs", 5, 1, 1 << 20);
    if (!epochs.ok()) return Fail(epochs.status().message()), 2;
    int64_t per_round = static_cast<int64_t>(workers) * sampler->meta_batch;
    int64_t rounds = std::max<int64_t>(1, (*epochs * static_cast<int64_t>(split->train.size()) + per_round - 1) / per_round);
    (void)cfg.Set("train.rounds=" + std::to_string(rounds));
  }
  const int64_t rounds = *cfg.GetInt("train.rounds");
  std::optional<WarmStart> warm;
  (void)cfg.Set("scheduler.state_file=\"" + (run_dir / "scheduler.state").string() + "\"");
  std::string job_toml = (run_dir / "job.toml").string();
  std::ofstream(job_toml) << "# Resolved by `metaps run` from " << f.config_path << "\n"
                          << cfg.ToToml() << "\n\n# Parameter tables derived from the model\n" << *tables;
  {
    // The servers' own settings too, from the file they will read: a bad [server] key stops the
    // job here, named, instead of every server dying on it at start.
    auto resolved = LoadJobConfig(job_toml, {});
    if (!resolved.ok()) return Fail(resolved.status().message()), 2;
    if (auto server = ServerSettingsFromConfig(*resolved); !server.ok()) return Fail(server.status().message()), 2;
    if (!f.warm_start.empty()) {
      auto planned = PlanWarmStart(f.warm_start, *job, *resolved);
      if (!planned.ok()) return Fail("--warm-start: " + planned.status().message()), 2;
      warm = std::move(planned).value();
    }
  }
  auto security = cfg.GetTable("security");
  if (!security.ok()) return Fail(security.status().message()), 2;
  if (Status k = security->CheckKnownKeys({"curve"}); !k.ok()) return Fail(k.message()), 2;
  auto curve = security->GetBool("curve", false);
  if (!curve.ok()) return Fail(curve.status().message()), 2;
  if (*curve) {
    // One client key pair per process, all listed in authorized_keys: every bound socket admits
    // exactly this job's processes, and a log line names the node behind a key.
    std::vector<std::string> names = {"scheduler"};
    for (int s = 0; s < servers; ++s) names.push_back("server-" + std::to_string(s));
    for (int w = 0; w < workers; ++w) names.push_back("worker-" + std::to_string(w));
    if (Status k = WriteCurveKeys((run_dir / "keys").string(), names); !k.ok()) return Fail(k.message());
  }
  auto token = MakeToken();
  if (!token.ok()) return Fail(token.status().message());
  std::string token_file = (run_dir / "token").string();
  if (Status w = WriteFileWithMode(token_file, *token + "\n", 0600); !w.ok()) return Fail(w.message());
  std::cout << "metaps run: job '" << job_id << "'" << (f.check ? " (--check)" : " in " + run_dir.string())
            << "\n"
            << "  data: " << dataset->size() << " events, " << split->train.size() << " train / "
            << split->validation.size() << " validation / " << split->test.size() << " test users"
            << (dataset->bad.bad ? ", " + std::to_string(dataset->bad.bad) + " malformed lines skipped" : "")
            << "\n"
            << "  " << servers << " servers, " << workers << " workers, " << rounds << " rounds, algo "
            << worker::AlgoName(job->meta.algo) << "\n";
  if (warm) {
    std::cout << "  warm start: from " << warm->checkpoint << " ("
              << (warm->round < 0 ? std::string("the final checkpoint")
                                  : "round " + std::to_string(warm->round))
              << " of " << warm->from_run << ")\n";
  }
  if (f.check) {
    std::ostringstream mlp;
    for (int w : job->model.widths()) mlp << (mlp.tellp() > 0 ? "-" : "") << w;
    std::cout << "  model: " << job->model.num_fields() << " fields, MLP " << mlp.str() << " ("
              << job->model.num_params() << " weights), tables:";
    for (const auto& [name, dim] : job->sparse_tables)
      std::cout << " " << name << " (sparse, dim " << dim << ")";
    for (const auto& [name, size] : job->dense_tensors)
      std::cout << " " << name << " (dense, " << size << ")";
    std::cout << "\ncheck: the config, the data and the model are valid; nothing was started\n";
    return 0;
  }
  // The supervisor needs none of the data: its memory goes back before the workers load theirs
  // (MovieLens 25M: ~2.6 GB).
  dataset = Status(FailedPrecondition("released"));
  split = Status(FailedPrecondition("released"));
  malloc_trim(0);
  // A fresh run: every worker starts at round 0, every shard from its (new) data directory.
  LaunchPlan plan;
  plan.start_round.assign(workers, 0);
  if (warm) {
    // The servers start from the earlier run's checkpoint (restored into their new data
    // directories); recorded so that a resume before the first checkpoint does the same.
    for (int s = 0; s < servers; ++s)
      plan.restore_from.push_back(warm->checkpoint + "/shard-" + std::to_string(s));
    if (Status w = WriteFileAtomically((run_dir / "warm_start.json").string(), warm->ToJson().dump(2) + "\n");
        !w.ok()) {
      return Fail(w.message());
    }
  }
  return Supervise(f, run_dir, job_toml, token_file, job_id, servers, workers, rounds, plan, outcome);
}

// Resuming RUN_DIR: from its newest complete checkpoint when there is one (servers restored from
// it into fresh data directories, scheduler clocks and worker positions set to its round);
// otherwise from the servers' own data and the scheduler's saved clocks.
int ResumeJob(const RunFlags& f, RunOutcome* outcome) {
  fs::path run_dir = fs::absolute(f.resume);
  std::string job_toml = (run_dir / "job.toml").string(), token_file = (run_dir / "token").string();
  auto cfg = LoadJobConfig(job_toml, f.overrides);
  if (!cfg.ok()) return Fail(cfg.status().message()), 2;
  auto sched = SchedulerSettingsFromConfig(*cfg);
  if (!sched.ok()) return Fail(sched.status().message()), 2;
  if (auto server = ServerSettingsFromConfig(*cfg); !server.ok()) return Fail(server.status().message()), 2;
  const int servers = sched->scheduler.num_servers, workers = sched->scheduler.num_workers;
  auto rounds = cfg->GetInt("train.rounds");
  if (!rounds.ok()) return Fail(rounds.status().message()), 2;
  LaunchPlan plan;
  plan.start_round.assign(workers, 0);
  std::string state_file = (run_dir / "scheduler.state").string();
  auto latest = scheduler::LatestCheckpoint((run_dir / "checkpoints").string());
  std::error_code ec;
  if (latest.ok()) {
    std::cout << "metaps run: resuming " << run_dir.string() << " from the checkpoint of round " << latest->first << "\n";
    for (int s = 0; s < servers; ++s) {
      if (Status r = RemoveShardData(f, run_dir, s); !r.ok()) return Fail(r.message());
      plan.restore_from.push_back(latest->second + "/shard-" + std::to_string(s));
    }
    plan.start_round.assign(workers, latest->first);
    nlohmann::json state = {{"clocks", plan.start_round}, {"done", std::vector<bool>(workers, false)}, {"epoch", 1}};
    std::ofstream(state_file) << state.dump();
  } else {
    std::cout << "metaps run: resuming " << run_dir.string() << " from the servers' data (no checkpoint)\n";
    // A warm-started run: a shard whose data directory is still empty starts from the earlier
    // run's checkpoint (a restore touches only an empty directory).
    if (auto warm = ReadWarmStart(run_dir.string()); warm.ok()) {
      for (int s = 0; s < servers; ++s)
        plan.restore_from.push_back(warm->checkpoint + "/shard-" + std::to_string(s));
    }
    std::ifstream in(state_file);
    auto state = nlohmann::json::parse(in, nullptr, false);
    if (!state.is_discarded() && state.contains("clocks")) {
      auto clocks = state["clocks"].get<std::vector<uint64_t>>();
      for (int w = 0; w < workers && w < static_cast<int>(clocks.size()); ++w) plan.start_round[w] = clocks[w];
    }
    nlohmann::json fresh = {{"clocks", plan.start_round}, {"done", std::vector<bool>(workers, false)}, {"epoch", 1}};
    std::ofstream(state_file) << fresh.dump();
  }
  fs::remove(run_dir / "report.json", ec);
  if (outcome) outcome->run_dir = run_dir.string();
  return Supervise(f, run_dir, job_toml, token_file, sched->scheduler.job_id, servers, workers, *rounds, plan,
                   outcome);
}

int Supervise(const RunFlags& f, const fs::path& run_dir, const std::string& job_toml,
              const std::string& token_file, const std::string& job_id, int servers, int workers,
              int64_t rounds, const LaunchPlan& plan, RunOutcome* outcome) {
  setenv("OMP_NUM_THREADS", "1", 0);  // one core per worker unless the user says otherwise
  // Where each process runs and what starts it: for `metaps run` all on this machine, on loopback.
  const Cluster* cluster = f.cluster;
  const LocalEngine local_engine;
  const RoleEngine& engine = cluster ? *cluster->engine : static_cast<const RoleEngine&>(local_engine);
  const Host local_host{"localhost", "127.0.0.1"};
  const Host& sched_host = cluster ? cluster->scheduler_host() : local_host;
  // Launched processes stop when the launcher lets go of their stdin: ssh and srun carry that to
  // the remote end, where no signal of ours reaches.
  const bool by_stdin = cluster != nullptr;
  if (cluster) {
    if (Status c = CheckHosts(*cluster, run_dir, job_toml); !c.ok()) return Fail(c.message()), 2;
    nlohmann::json hosts = nlohmann::json::array();
    for (const auto& h : cluster->hosts) hosts.push_back({{"name", h.name}, {"address", h.address}});
    nlohmann::json placement = {{"engine", engine.name()},
                                {"hosts", hosts},
                                {"metaps", cluster->metaps},
                                {"server_data_root", cluster->server_data_root}};
    if (Status w = WriteFileAtomically((run_dir / "cluster.json").string(), placement.dump(2) + "\n");
        !w.ok())
      return Fail(w.message());
  }
  struct sigaction sa {};
  sa.sa_handler = OnStopSignal;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  const std::string exe = cluster ? cluster->metaps : SelfExecutable();
  std::vector<Child> children;
  std::error_code ec;
  auto spawn = [&](const Child& c, const std::vector<std::string>& argv) {
    return engine.Start(
        c.host, argv,
        SpawnOptions{.log_file = (run_dir / "logs" / (c.name + ".log")).string(), .stdin_pipe = by_stdin});
  };
  auto start_child = [&](Child& c) -> Status {
    METAPS_ASSIGN_OR_RETURN(c.proc, spawn(c, c.argv));
    return Status::Ok();
  };
  const bool encrypted = fs::exists(run_dir / "keys" / "server.key");
  auto add = [&](const std::string& name, const Host& host, std::vector<std::string> argv) -> Status {
    argv.insert(argv.begin(), exe);
    if (by_stdin) argv.push_back("--stop-on-stdin-eof");
    if (encrypted) {
      argv.insert(argv.end(), {"--curve-keys", (run_dir / "keys").string()});
      // Run directories from before per-process keys have one shared client.key.
      if (fs::exists(run_dir / "keys" / (name + ".key"))) argv.insert(argv.end(), {"--curve-name", name});
    }
    children.push_back({name, host, std::move(argv)});
    return start_child(children.back());
  };
  std::string ep_file = (run_dir / "scheduler.endpoint").string(), http_file = (run_dir / "scheduler.http").string();
  fs::remove(ep_file, ec);
  fs::remove(http_file, ec);
  fs::create_directories(run_dir / "logs", ec);
  std::vector<std::string> sched_argv = {"scheduler", "-c", job_toml, "--endpoint-file", ep_file, "--http-file", http_file,
                                         "--token-file", token_file};
  sched_argv.insert(sched_argv.end(), {"--set", "checkpoint.dir=\"" + (run_dir / "checkpoints").string() + "\""});
  if (cluster) {
    // Reachable from the other hosts, and its status from here.
    sched_argv.insert(sched_argv.end(), {"--bind", "tcp://" + sched_host.address + ":0", "--set",
                                         "scheduler.http_address=\"" + sched_host.address + "\""});
  }
  if (Status s = add("scheduler", sched_host, sched_argv); !s.ok()) return Fail(s.message());
  auto sched_ep = WaitForFileLine(ep_file, std::chrono::seconds(30), &children[0].proc);
  auto http_port = WaitForFileLine(http_file, std::chrono::seconds(30), &children[0].proc);
  if (!sched_ep.ok() || !http_port.ok()) {
    StopAll(children, by_stdin);
    return Fail("the scheduler did not start; see " + (run_dir / "logs/scheduler.log").string());
  }
  // A restarted scheduler must come back where everyone looks for it.
  SetFlag(children[0].argv, "--bind", *sched_ep);
  SetFlag(children[0].argv, "--http-port", *http_port);
  for (int s = 0; s < servers; ++s) {
    std::string shard = "shard-" + std::to_string(s);
    std::vector<std::string> argv = {"server",
                                     "-c",
                                     job_toml,
                                     "--data-dir",
                                     ShardDataDir(f, run_dir, s),
                                     "--shard-id",
                                     std::to_string(s),
                                     "--scheduler",
                                     *sched_ep,
                                     "--token-file",
                                     token_file,
                                     "--job-id",
                                     job_id,
                                     "--endpoint-file",
                                     (run_dir / "servers" / (shard + ".endpoint")).string()};
    if (static_cast<size_t>(s) < plan.restore_from.size()) argv.insert(argv.end(), {"--restore-from", plan.restore_from[s]});
    const Host& host = cluster ? cluster->server_host(s) : local_host;
    if (cluster) argv.insert(argv.end(), {"--bind", "tcp://" + host.address + ":0"});
    fs::create_directories(run_dir / "servers", ec);
    if (Status sp = add("server-" + std::to_string(s), host, argv); !sp.ok())
      return StopAll(children, by_stdin), Fail(sp.message());
  }
  for (int w = 0; w < workers; ++w) {
    Status sp = add(
        "worker-" + std::to_string(w), cluster ? cluster->worker_host(w) : local_host,
        {"worker", "-c", job_toml, "--id", std::to_string(w), "--scheduler", *sched_ep, "--token-file",
         token_file, "--run-dir", run_dir.string(), "--start-round", std::to_string(plan.start_round[w])});
    if (!sp.ok()) return StopAll(children, by_stdin), Fail(sp.message());
  }
  // `metaps status RUN_DIR` reads where to ask (scheduler.http holds the port).
  if (Status w = WriteFileAtomically((run_dir / "scheduler.host").string(), sched_host.address + "\n");
      !w.ok())
    return StopAll(children, by_stdin), Fail(w.message());
  std::cout << "  status: metaps status " << run_dir.string() << "   (http://" << sched_host.address << ":"
            << *http_port << "/status)\n";
  if (cluster) {
    std::cout << "  placement (" << engine.name() << "):";
    for (const auto& c : children) std::cout << " " << c.name << "@" << c.host.name;
    std::cout << "\n";
  }

  // Restarting a child: servers on their port and data directory (every acknowledged push is
  // there), workers from the newest checkpoint's round.
  auto restart = [&](Child& c) -> Status {
    std::vector<std::string> argv = c.argv;
    if (c.name.rfind("server-", 0) == 0) {
      std::string shard = "shard-" + c.name.substr(7);
      auto ep = WaitForFileLine((run_dir / "servers" / (shard + ".endpoint")).string(), std::chrono::seconds(1));
      if (ep.ok()) SetFlag(argv, "--bind", *ep);
      // Restoring again would throw away the shard's own newer data.
      for (size_t i = 0; i + 1 < argv.size(); ++i) {
        if (argv[i] == "--restore-from") argv.erase(argv.begin() + i, argv.begin() + i + 2);
      }
      c.argv = argv;
    } else if (c.name.rfind("worker-", 0) == 0) {
      auto latest = scheduler::LatestCheckpoint((run_dir / "checkpoints").string());
      for (size_t i = 0; i + 1 < argv.size(); ++i) {
        if (argv[i] == "--start-round") argv[i + 1] = std::to_string(latest.ok() ? latest->first : 0);
      }
    }
    METAPS_ASSIGN_OR_RETURN(c.proc, spawn(c, argv));
    return Status::Ok();
  };
  std::ofstream csv(run_dir / "metrics.csv", std::ios::app);
  csv << "elapsed_s,round,tasks,tasks_per_s,train_loss,val_mae,val_rmse,rows_pulled,rows_pushed\n";
  std::vector<std::vector<double>> curve;
  auto start = Clock::now();
  int port = std::stoi(*http_port);
  std::string failure;
  // How long the scheduler and servers may take to leave after the last worker finished.
  const auto kExitGrace = std::chrono::seconds(60);
  const auto kServerExitGrace = std::chrono::seconds(5);  // after the scheduler left
  Clock::time_point workers_done_at{}, scheduler_left_at{};
  double last_val_round = -1;
  while (true) {
    bool all_done = true;
    for (auto& c : children) {
      if (c.proc.running()) {
        all_done = false;
        continue;
      }
      int code = c.proc.exit_code().value_or(1);
      if (code == 0 || !failure.empty()) continue;
      if (c.restarts < f.max_restarts) {
        ++c.restarts;
        std::cerr << "\nmetaps run: " << c.name << " died (exit code " << code << "); restarting it (" << c.restarts
                  << "/" << f.max_restarts << ")\n";
        if (Status rs = restart(c); rs.ok()) {
          all_done = false;
          continue;
        }
      }
      failure = c.name + " exited with code " + std::to_string(code) + "; see logs/" + c.name + ".log";
    }
    if (!failure.empty() || all_done) break;
    // Once every worker finished cleanly the job's work is done: the scheduler and the servers
    // leave by themselves within a heartbeat timeout or so. Never wait on them forever.
    bool workers_done = true;
    for (auto& c : children) {
      if (c.name.rfind("worker-", 0) == 0 && (c.proc.running() || c.proc.exit_code().value_or(1) != 0)) {
        workers_done = false;
      }
    }
    if (workers_done) {
      if (workers_done_at == Clock::time_point{}) workers_done_at = Clock::now();
      // The scheduler leaves only after telling every live server to stop (or after its own grace),
      // so servers still running a few seconds after it left cleanly missed the word (one marked
      // dead by a late heartbeat is not waited for): stop them now instead of after kExitGrace.
      bool scheduler_left = false;
      for (auto& c : children) {
        if (c.name == "scheduler" && !c.proc.running() && c.proc.exit_code().value_or(1) == 0) scheduler_left = true;
      }
      if (scheduler_left && scheduler_left_at == Clock::time_point{}) scheduler_left_at = Clock::now();
      const bool servers_overdue = scheduler_left && Clock::now() - scheduler_left_at > kServerExitGrace;
      if (servers_overdue || Clock::now() - workers_done_at > kExitGrace) {
        for (auto& c : children) {
          if (c.proc.running()) std::cerr << "\nmetaps run: " << c.name << " still running after the workers finished; stopping it\n";
        }
        StopAll(children, by_stdin);
        break;
      }
    }
    if (g_stop_requested) {
      StopAll(children, by_stdin);
      std::cerr << "\nmetaps run: stopped; continue with: metaps run --resume " << run_dir.string() << "\n";
      return 130;
    }
    auto body = HttpGet(sched_host.address, port, "/status", 2000);
    if (body.ok()) {
      auto j = nlohmann::json::parse(*body, nullptr, false);
      if (!j.is_discarded()) {
        double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
        uint64_t round = j.value("round", uint64_t{0});
        const auto& v = j["validation"];
        double val_mae = v.is_object() ? v.value("val_mae", NAN) : NAN;
        double val_rmse = v.is_object() ? v.value("val_rmse", NAN) : NAN;
        double val_round = v.is_object() ? v.value("val_round", -1.0) : -1.0;
        csv << elapsed << "," << round << "," << j.value("tasks", 0) << "," << j.value("tasks_per_s", 0.0) << ","
            << j.value("train_loss", 0.0) << "," << val_mae << "," << val_rmse << "," << j.value("rows_pulled", 0) << ","
            << j.value("rows_pushed", 0) << "\n";
        csv.flush();
        curve.push_back({static_cast<double>(round), j.value("train_loss", 0.0),
                         val_round != last_val_round ? val_mae : NAN});
        last_val_round = val_round;
        if (!f.quiet) {
          int alive = 0;
          for (const auto& n : j["workers"]) alive += n.value("alive", false);
          for (const auto& n : j["servers"]) alive += n.value("alive", false);
          std::printf("\r  round %4llu/%lld | %8.1f tasks/s | train loss %.4f | val MAE %s | %d/%d nodes alive   ",
                      static_cast<unsigned long long>(round), static_cast<long long>(rounds), j.value("tasks_per_s", 0.0),
                      j.value("train_loss", 0.0), std::isnan(val_mae) ? "  -   " : std::to_string(val_mae).substr(0, 6).c_str(),
                      alive, servers + workers);
          std::fflush(stdout);
        }
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  if (!f.quiet) std::printf("\n");
  WriteSvg((run_dir / "curves.svg").string(), curve);
  if (!failure.empty()) {
    StopAll(children, by_stdin);
    return Fail("job failed: " + failure);
  }
  std::ifstream rep(run_dir / "report.json");
  auto report = nlohmann::json::parse(rep, nullptr, false);
  if (report.is_discarded()) return Fail("no report.json was written");
  std::cout << "  test users: " << report.value("test_users", 0) << "\n";
  std::cout << "  " << std::left << std::setw(18) << "method";
  std::vector<std::string> cols;
  for (auto& [k, v] : report["methods"]["meta"].items()) cols.push_back(k);
  for (auto& c : cols) std::cout << std::setw(10) << c;
  std::cout << "\n";
  for (const char* m : {"meta", "global", "global_finetune", "item_mean", "global_mean"}) {
    std::cout << "  " << std::setw(18) << m;
    for (auto& c : cols) std::cout << std::setw(10) << std::setprecision(4) << report["methods"][m].value(c, NAN);
    std::cout << "\n";
  }
  std::cout << "  report: " << (run_dir / "report.json").string() << "\n";
  // The trained model as a snapshot for serving, from the final checkpoint: a delta on top of
  // --snapshot-since when the run's history descends from it, else a full one.
  ExportOptions ex;
  ex.run_dir = run_dir.string();
  ex.since = f.snapshot_since;
  auto snap = ExportSnapshot(ex);
  if (!snap.ok() && !ex.since.empty() && snap.status().code() == StatusCode::kFailedPrecondition) {
    std::cerr << "metaps run: no delta on " << ex.since << ": " << snap.status().message()
              << "; writing a full snapshot\n";
    ex.since.clear();
    snap = ExportSnapshot(ex);
  }
  if (!snap.ok()) {
    return Fail("the job finished, but its snapshot was not written: " + snap.status().message() +
                " (retry with `metaps export " + run_dir.string() + "`)");
  }
  if (outcome) {
    outcome->snapshot = snap->out;
    outcome->snapshot_kind = snap->kind;
  }
  if (snap->kind == "delta") {
    std::cout << "  snapshot: " << snap->out << " (a delta of " << snap->rows << " rows on " << ex.since
              << "; serve it with `metaps serve FULL --delta ... --delta " << snap->out << "`)\n";
  } else {
    std::cout << "  snapshot: " << snap->out << " (" << snap->rows << " rows; serve it with `metaps serve "
              << snap->out << "`)\n";
  }
  return 0;
}

}  // namespace

int RunJobWithFlags(const RunFlags& f, RunOutcome* outcome) {
  if (!f.resume.empty()) {
    if (f.check) return Fail("--check is for a new job, not with --resume"), 2;
    if (!f.warm_start.empty())
      return Fail("--warm-start is for a new job; a resumed run keeps its own start"), 2;
    // Every process of a resumed job reads the run directory's job.toml; an override here would
    // reach none of them.
    if (!f.overrides.empty())
      return Fail("--set is for a new job; a resumed run reads " + f.resume + "/job.toml (edit a key there)"),
             2;
    return ResumeJob(f, outcome);
  }
  return RunJob(f, outcome);
}

void RegisterRunCommand(CLI::App& app, Action* action) {
  auto f = std::make_shared<RunFlags>();
  auto* cmd = app.add_subcommand("run", "Run a whole training job on this machine");
  auto* config = cmd->add_option("config", f->config_path, "Job config (TOML)");
  cmd->add_option("--resume", f->resume, "Continue the stopped job of this run directory");
  cmd->add_option(
      "--warm-start", f->warm_start,
      "Start from this earlier run's final checkpoint (or a checkpoint directory of it) and train on "
      "this config's data: the same model goes on learning (docs/running.md, \"Warm starts\")");
  cmd->add_option(
      "--snapshot-since", f->snapshot_since,
      "Write the final snapshot as a delta on top of this snapshot (one this run's history descends "
      "from, e.g. the warm start's); a full one when it does not");
  cmd->add_option("--max-restarts", f->max_restarts, "Restarts allowed per process before the job fails");
  cmd->add_option("--set", f->overrides, "Override any config key, e.g. --set data.dir=/path (repeatable)");
  cmd->add_option("--run-dir", f->run_dir, "Run directory (default runs/<job.id>-<time>)");
  cmd->add_flag("--quiet", f->quiet, "No live progress line");
  cmd->add_flag("--check", f->check,
                "Check the config, the data and the model, print the plan, and start nothing (exit 2 naming "
                "what is wrong)");
  cmd->callback([f, action, config] {
    *action = [f, config] {
      if (config->count() == 0 && f->resume.empty()) return Fail("give a job config, or --resume RUN_DIR"), 2;
      return RunJobWithFlags(*f, nullptr);
    };
  });
}

}  // namespace metaps::launch
