// `metaps retrain job.toml --incoming DIR --out DIR`: continuous retraining on a stream of event
// files (hourly or daily click logs). Each time new files are complete in DIR, one cycle runs:
// a job (`metaps run`) on the newest files, warm-started from the previous cycle's final
// checkpoint, whose snapshot -- a delta on top of the previous one, or a full one every
// --full-every cycles -- is published in OUT/published/ with the chain to serve in
// OUT/published/CHAIN (`metaps serve --follow OUT/published` keeps up with it). See
// docs/running.md, "Continuous retraining".
//
//   OUT/retrain.json          the state: files consumed, cycles run, the chain published
//   OUT/runs/cycle-<n>/       each cycle's run directory (the newest --keep-runs are kept)
//   OUT/published/<n>-<kind>/ the snapshots; CHAIN lists the current chain, one name a line
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/files.h"
#include "launch/cli.h"
#include "launch/job_config.h"
#include "launch/run.h"

namespace metaps::launch {
namespace {

namespace fs = std::filesystem;

struct RetrainFlags {
  RunFlags run;  // config_path, overrides, quiet, max_restarts; the rest is set per cycle
  std::string incoming, out, warm_start;
  int window = 3;
  int full_every = 10;
  int keep_runs = 2;
  double poll_s = 10;
  int max_cycles = 0;  // 0: no limit
  bool once = false;
};

struct State {
  std::vector<std::string> consumed;  // file names (in --incoming) already trained on
  nlohmann::json cycles = nlohmann::json::array();
  std::vector<std::string> chain;  // published snapshot names: a full one, then its deltas
};

int Fail(const std::string& what, int code = 1) {
  std::cerr << "metaps retrain: " << what << "\n";
  return code;
}

std::string Pad(int n) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04d", n);
  return buf;
}

Result<State> LoadState(const fs::path& file) {
  State s;
  if (!fs::exists(file)) return s;
  std::ifstream in(file);
  auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return DataLoss(file.string() + ": not a JSON object");
  try {
    s.consumed = j.at("consumed").get<std::vector<std::string>>();
    s.cycles = j.at("cycles");
    s.chain = j.at("chain").get<std::vector<std::string>>();
  } catch (const nlohmann::json::exception& e) {
    return DataLoss(file.string() + ": " + e.what());
  }
  return s;
}

Status SaveState(const fs::path& file, const State& s) {
  nlohmann::json j = {{"consumed", s.consumed}, {"cycles", s.cycles}, {"chain", s.chain}};
  return WriteFileAtomically(file.string(), j.dump(2) + "\n");
}

// The files of --incoming that are complete: regular files, not hidden, not *.tmp or *.part
// (write a file under such a name and rename it when it is whole), sorted by name.
std::vector<std::string> IncomingFiles(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (!e.is_regular_file() || name.empty() || name[0] == '.') continue;
    if (e.path().extension() == ".tmp" || e.path().extension() == ".part") continue;
    out.push_back(name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Removes run directories and published snapshots no longer needed: all but the newest
// `keep_runs` cycle runs, and published snapshots older than the full one before the current
// chain's (a follower that is still loading the previous chain keeps its files).
void Prune(const fs::path& out, const State& s, int keep_runs) {
  std::error_code ec;
  std::vector<fs::path> runs;
  for (const auto& e : fs::directory_iterator(out / "runs", ec)) runs.push_back(e.path());
  std::sort(runs.begin(), runs.end());
  for (size_t i = 0; i + keep_runs < runs.size(); ++i) fs::remove_all(runs[i], ec);
  if (s.chain.empty()) return;
  std::vector<std::string> published;
  for (const auto& e : fs::directory_iterator(out / "published", ec)) {
    if (e.is_directory()) published.push_back(e.path().filename().string());
  }
  std::sort(published.begin(), published.end());
  // The previous chain starts at the newest full snapshot before the current chain's.
  std::string keep_from = s.chain.front();
  for (const auto& name : published) {
    if (name < s.chain.front() && name.find("-full") != std::string::npos) keep_from = name;
  }
  for (const auto& name : published) {
    if (name < keep_from) fs::remove_all(out / "published" / name, ec);
  }
}

volatile sig_atomic_t g_stop = 0;
void OnStop(int) { g_stop = 1; }

int Retrain(const RetrainFlags& f) {
  if (f.window < 1) return Fail("--window must be at least 1", 2);
  if (f.full_every < 1) return Fail("--full-every must be at least 1", 2);
  if (f.keep_runs < 1) return Fail("--keep-runs must be at least 1", 2);
  const fs::path incoming = fs::absolute(f.incoming), out = fs::absolute(f.out);
  if (!fs::is_directory(incoming)) return Fail("--incoming " + incoming.string() + " is not a directory", 2);
  {
    // The stream is read as csv files (data.path becomes the cycle's list of files).
    auto cfg = LoadJobConfig(f.run.config_path, f.run.overrides);
    if (!cfg.ok()) return Fail(cfg.status().message(), 2);
    auto format = cfg->GetString("data.format", "");
    if (!format.ok() || *format != "csv") {
      return Fail("data.format: retrain reads the incoming files as csv event files; the config says '" +
                      format.value_or("?") + "'",
                  2);
    }
    if (cfg->Has("datagen"))
      return Fail("datagen: retrain trains on --incoming files, not generated data", 2);
  }
  std::error_code ec;
  fs::create_directories(out / "runs", ec);
  fs::create_directories(out / "published", ec);
  if (ec) return Fail("cannot create " + out.string() + ": " + ec.message());
  const fs::path state_file = out / "retrain.json";
  auto loaded = LoadState(state_file);
  if (!loaded.ok()) return Fail(loaded.status().message());
  State state = std::move(loaded).value();
  struct sigaction sa {};
  sa.sa_handler = OnStop;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  int ran = 0;
  bool said_waiting = false;
  while (!g_stop) {
    const std::vector<std::string> files = IncomingFiles(incoming);
    const std::set<std::string> done(state.consumed.begin(), state.consumed.end());
    std::vector<std::string> fresh;
    for (const auto& name : files) {
      if (!done.count(name)) fresh.push_back(name);
    }
    if (fresh.empty()) {
      if (f.once) {
        std::cout << "metaps retrain: nothing new in " << incoming.string() << "\n";
        return 0;
      }
      if (!said_waiting) std::cout << "metaps retrain: waiting for files in " << incoming.string() << "\n";
      said_waiting = true;
      for (double t = 0; t < f.poll_s && !g_stop; t += 0.1)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      continue;
    }
    said_waiting = false;
    // This cycle's data: every new file, and before them the newest files already trained on,
    // up to --window files.
    std::vector<std::string> window;
    for (const auto& name : files) {
      if (done.count(name)) window.push_back(name);
    }
    const size_t older = fresh.size() >= static_cast<size_t>(f.window) ? 0 : f.window - fresh.size();
    if (window.size() > older) window.erase(window.begin(), window.end() - older);
    window.insert(window.end(), fresh.begin(), fresh.end());
    std::string list;
    for (const auto& name : window)
      list += (list.empty() ? "" : ", ") + nlohmann::json((incoming / name).string()).dump();

    const int cycle = static_cast<int>(state.cycles.size()) + 1;
    RunFlags run = f.run;
    run.overrides.push_back("data.path=[" + list + "]");
    run.run_dir = (out / "runs" / ("cycle-" + Pad(cycle))).string();
    fs::remove_all(run.run_dir, ec);  // a cycle that did not finish before is run again
    std::string prev_run = f.warm_start;
    if (!state.cycles.empty()) prev_run = state.cycles.back().value("run", "");
    if (!prev_run.empty() && !fs::exists(prev_run)) {
      return Fail("cycle " + std::to_string(cycle) + ": the previous cycle's run " + prev_run +
                  " is gone; nothing to warm-start from");
    }
    run.warm_start = prev_run;
    // A delta on the chain's newest snapshot, unless a full one is due.
    const bool full_due = state.chain.empty() || static_cast<int>(state.chain.size()) >= f.full_every;
    if (!full_due) run.snapshot_since = (out / "published" / state.chain.back()).string();
    std::cout << "metaps retrain: cycle " << cycle << " on " << window.size() << " files (" << fresh.size()
              << " new: " << fresh.front() << (fresh.size() > 1 ? " ... " + fresh.back() : "") << ")"
              << (prev_run.empty() ? "" : ", warm-started from " + prev_run) << "\n";
    RunOutcome outcome;
    const int code = RunJobWithFlags(run, &outcome);
    sigaction(SIGTERM, &sa, nullptr);  // the job's supervisor had its own
    sigaction(SIGINT, &sa, nullptr);
    if (code == 130)
      return Fail("stopped during cycle " + std::to_string(cycle) + "; it runs again on the next start", 130);
    if (code != 0) {
      return Fail("cycle " + std::to_string(cycle) + " failed (exit code " + std::to_string(code) + "; " +
                      run.run_dir + "); its files stay unconsumed and are retried on the next start",
                  code);
    }
    if (outcome.snapshot.empty()) return Fail("cycle " + std::to_string(cycle) + " wrote no snapshot");
    const std::string name = Pad(cycle) + "-" + outcome.snapshot_kind;
    fs::remove_all(out / "published" / name, ec);
    fs::rename(outcome.snapshot, out / "published" / name, ec);
    if (ec) return Fail("cannot publish " + outcome.snapshot + ": " + ec.message());
    if (outcome.snapshot_kind == "full") state.chain.clear();
    state.chain.push_back(name);
    std::string chain_text;
    for (const auto& c : state.chain) chain_text += c + "\n";
    if (Status w = WriteFileAtomically((out / "published" / "CHAIN").string(), chain_text); !w.ok()) {
      return Fail(w.message());
    }
    state.consumed.insert(state.consumed.end(), fresh.begin(), fresh.end());
    state.cycles.push_back({{"cycle", cycle},
                            {"run", run.run_dir},
                            {"files", window},
                            {"new_files", fresh},
                            {"snapshot", name},
                            {"kind", outcome.snapshot_kind},
                            {"warm_start", prev_run}});
    if (Status w = SaveState(state_file, state); !w.ok()) return Fail(w.message());
    std::cout << "metaps retrain: cycle " << cycle << " published " << (out / "published" / name).string()
              << " (chain of " << state.chain.size() << ")\n";
    Prune(out, state, f.keep_runs);
    ++ran;
    if (f.once || (f.max_cycles > 0 && ran >= f.max_cycles)) return 0;
  }
  std::cout << "metaps retrain: stopped\n";
  return 130;
}

}  // namespace

void RegisterRetrainCommand(CLI::App& app, Action* action) {
  auto f = std::make_shared<RetrainFlags>();
  auto* cmd = app.add_subcommand("retrain",
                                 "Retrain continuously on event files as they arrive, publishing snapshots");
  cmd->add_option("config", f->run.config_path, "Job config (TOML; data.format = \"csv\")")->required();
  cmd->add_option("--incoming", f->incoming,
                  "Folder where event files arrive (write each as NAME.tmp or NAME.part and rename it when "
                  "complete; files are taken in name order)")
      ->required();
  cmd->add_option("--out", f->out, "Folder for the state, the cycles' runs and the published snapshots")
      ->required();
  cmd->add_option("--window", f->window,
                  "Files per cycle: the new ones and the newest older ones, up to this many");
  cmd->add_option("--full-every", f->full_every,
                  "Publish a full snapshot every this many cycles (deltas between)");
  cmd->add_option("--keep-runs", f->keep_runs, "Cycle run directories kept (the newest)");
  cmd->add_option("--warm-start", f->warm_start, "A run the first cycle starts from (default: a cold start)");
  cmd->add_option("--poll-s", f->poll_s, "Seconds between looks for new files")->check(CLI::Range(0.01, 86400.0));
  cmd->add_option("--max-cycles", f->max_cycles, "Stop after this many cycles (0: never)");
  cmd->add_flag("--once", f->once, "Run one cycle if there are new files, then exit");
  cmd->add_option("--set", f->run.overrides, "Override any config key (repeatable)");
  cmd->add_option("--max-restarts", f->run.max_restarts, "Restarts allowed per process in each cycle's job");
  cmd->add_flag("--quiet", f->run.quiet, "No live progress line");
  cmd->callback([f, action] { *action = [f] { return Retrain(*f); }; });
}

}  // namespace metaps::launch
