// `metaps launch job.toml --hosts ...`: a whole job across hosts. The same job as `metaps run`
// (run directory, supervision and restarts, checkpoints, report, snapshot), with its processes
// placed on the hosts (launch/cluster.h) and started there by ssh, by srun inside a Slurm
// allocation, or on this machine (--engine local: the hosts are addresses of this machine).
// The run directory must be on a filesystem every host mounts at the same path.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include <nlohmann/json.hpp>

#include "common/subprocess.h"
#include "launch/cli.h"
#include "launch/cluster.h"
#include "launch/run.h"

namespace metaps::launch {
namespace {

struct LaunchFlags {
  RunFlags run;
  std::string hosts, engine = "ssh", ssh = "ssh", srun = "srun", remote_metaps, server_data_root;
  std::vector<std::string> ssh_options, srun_options;
};

int LaunchFail(const std::string& what) {
  std::cerr << "metaps launch: " << what << "\n";
  return 2;
}

// A resumed job keeps its engine, hosts, executable and data root unless new ones are given.
Status ReadPlacement(const std::string& run_dir, bool engine_given, LaunchFlags& f,
                     std::vector<Host>& hosts) {
  std::ifstream in(run_dir + "/cluster.json");
  if (!in) return NotFound(run_dir + "/cluster.json is missing: give --hosts (and --engine)");
  auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.contains("hosts")) return DataLoss(run_dir + "/cluster.json is not valid");
  for (const auto& h : j["hosts"]) hosts.push_back({h.value("name", ""), h.value("address", "")});
  if (!engine_given) f.engine = j.value("engine", f.engine);
  if (f.remote_metaps.empty()) f.remote_metaps = j.value("metaps", "");
  if (f.server_data_root.empty()) f.server_data_root = j.value("server_data_root", "");
  return Status::Ok();
}

int Launch(LaunchFlags f, bool engine_given) {
  if (f.run.config_path.empty() && f.run.resume.empty())
    return LaunchFail("give a job config, or --resume RUN_DIR");
  // Flags a resumed job refuses: refused (by the shared code, exit 2) before any host is asked.
  if (!f.run.resume.empty() && (f.run.check || !f.run.warm_start.empty() || !f.run.overrides.empty()))
    return RunJobWithFlags(f.run, nullptr);
  std::vector<Host> hosts;
  if (!f.run.resume.empty() && f.hosts.empty() && !(f.engine == "slurm" && engine_given)) {
    if (Status s = ReadPlacement(f.run.resume, engine_given, f, hosts); !s.ok())
      return LaunchFail(s.message());
  } else if (!f.hosts.empty()) {
    auto parsed = ParseHosts(f.hosts);
    if (!parsed.ok()) return LaunchFail("--hosts: " + parsed.status().message());
    hosts = std::move(parsed).value();
  } else if (f.engine == "slurm") {
    auto nodes = SlurmHosts();
    if (!nodes.ok()) return LaunchFail(nodes.status().message());
    hosts = std::move(nodes).value();
  } else {
    return LaunchFail("give --hosts (a list NAME[=ADDRESS],... or a file of them)");
  }
  Cluster cluster;
  cluster.hosts = std::move(hosts);
  cluster.metaps = f.remote_metaps.empty() ? SelfExecutable() : f.remote_metaps;
  if (!f.server_data_root.empty() && !std::filesystem::path(f.server_data_root).is_absolute())
    return LaunchFail("--server-data-root must be an absolute path (it is a path on every server's host)");
  cluster.server_data_root = f.server_data_root;
  if (f.engine == "local") {
    cluster.engine = std::make_unique<LocalEngine>();
  } else if (f.engine == "ssh") {
    auto ssh = FindInPath(f.ssh);
    if (!ssh.ok()) return LaunchFail("--ssh: " + ssh.status().message());
    // ssh passes none of our environment: what sizes a worker's thread pools goes along.
    const char* omp = std::getenv("OMP_NUM_THREADS");
    cluster.engine = std::make_unique<SshEngine>(
        *ssh, f.ssh_options, std::vector<std::string>{"OMP_NUM_THREADS=" + std::string(omp ? omp : "1")});
  } else if (f.engine == "slurm") {
    auto srun = FindInPath(f.srun);
    if (!srun.ok()) return LaunchFail("--srun: " + srun.status().message());
    cluster.engine = std::make_unique<SrunEngine>(*srun, f.srun_options);
  } else {
    return LaunchFail("--engine: '" + f.engine + "' is not one of local, ssh, slurm");
  }
  f.run.cluster = &cluster;
  return RunJobWithFlags(f.run, nullptr);
}

}  // namespace

void RegisterLaunchCommand(CLI::App& app, Action* action) {
  auto f = std::make_shared<LaunchFlags>();
  auto* cmd =
      app.add_subcommand("launch", "Run a whole training job across hosts (ssh, Slurm, or this machine)");
  cmd->add_option("config", f->run.config_path, "Job config (TOML)");
  cmd->add_option(
      "--hosts", f->hosts,
      "Hosts: NAME[=ADDRESS],... or a file with one `NAME [ADDRESS]` per line. The scheduler runs on the "
      "first; servers and workers go round the list. Default with --engine slurm: the allocation's nodes");
  auto* engine =
      cmd->add_option("--engine", f->engine, "What starts a process on a host: ssh, slurm (srun), local")
          ->check(CLI::IsMember({"ssh", "slurm", "local"}));
  cmd->add_option("--ssh", f->ssh, "The ssh program")->default_str("ssh");
  cmd->add_option("--ssh-option", f->ssh_options,
                  "An ssh -o option, e.g. Port=2222 or IdentityFile=~/.ssh/job (repeatable)");
  cmd->add_option("--srun", f->srun, "The srun program")->default_str("srun");
  cmd->add_option("--srun-option", f->srun_options, "An extra srun argument, e.g. --mem=8G (repeatable)");
  cmd->add_option("--remote-metaps", f->remote_metaps,
                  "The metaps executable on the hosts (default: this one's path, the same on every host)");
  cmd->add_option(
      "--server-data-root", f->server_data_root,
      "Keep each server's data on its own host's disk, under DIR/<run directory's name>/shard-<i> "
      "(default: in the run directory, on the shared filesystem)");
  cmd->add_option(
      "--run-dir", f->run.run_dir,
      "Run directory, on a filesystem every host mounts at the same path (default runs/<job.id>-<time>)");
  cmd->add_option("--resume", f->run.resume, "Continue the stopped job of this run directory (on its hosts)");
  cmd->add_option("--warm-start", f->run.warm_start, "Start from this earlier run's final checkpoint");
  cmd->add_option("--snapshot-since", f->run.snapshot_since,
                  "Write the final snapshot as a delta on top of this one");
  cmd->add_option("--max-restarts", f->run.max_restarts, "Restarts allowed per process before the job fails");
  cmd->add_option("--set", f->run.overrides, "Override any config key (repeatable)");
  cmd->add_flag("--quiet", f->run.quiet, "No live progress line");
  cmd->add_flag("--check", f->run.check, "Check the config, the data and the model, and start nothing");
  cmd->callback([f, action, engine] { *action = [f, engine] { return Launch(*f, engine->count() > 0); }; });
}

}  // namespace metaps::launch
