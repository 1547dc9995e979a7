// Where a job's processes run, and what starts them there: the hosts of a multi-host job
// (`metaps launch`) and the engine that starts one process on one of them: this machine, ssh, or
// Slurm's srun inside an allocation. See docs/running.md, "Jobs across hosts".
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/subprocess.h"

namespace metaps::launch {

struct Host {
  std::string name;     // what the engine reaches it by: an ssh destination, a Slurm node name
  std::string address;  // the IPv4 address its processes bind and the others connect to
};

// Hosts from "a,b,c" (each may be NAME=ADDRESS) or from a file: one host per line, `NAME [ADDRESS]`,
// '#' starts a comment, blank lines are skipped. An address not given is NAME resolved here
// (IPv4). Errors name the entry (and the file and line).
Result<std::vector<Host>> ParseHosts(const std::string& list_or_file);

// A Slurm allocation's nodes: the names `scontrol show hostnames` expands `nodelist` to (that of
// $SLURM_JOB_NODELIST when empty), each resolved here.
Result<std::vector<Host>> SlurmHosts(const std::string& nodelist = "");

// `argv` as one POSIX shell command line: every word single-quoted.
std::string ShellJoin(const std::vector<std::string>& argv);

// Starts one process on one host, its output appended to a log file on this machine. The process
// gets a stdin pipe when `options.stdin_pipe`; closing it (Subprocess::CloseStdin) reaches the
// remote process as EOF, which `--stop-on-stdin-eof` turns into a clean stop. The Subprocess is
// the local end (ssh, srun): its exit code is the remote process's.
class RoleEngine {
 public:
  virtual ~RoleEngine() = default;
  virtual std::string name() const = 0;
  // Whether processes must watch their stdin to stop (the local end's signals do not reach them).
  virtual bool remote() const = 0;
  // The local command line that runs `argv` (argv[0] an absolute path as the host sees it) there.
  virtual std::vector<std::string> CommandLine(const Host& host,
                                               const std::vector<std::string>& argv) const = 0;
  Result<Subprocess> Start(const Host& host, const std::vector<std::string>& argv,
                           const SpawnOptions& options) const {
    return Subprocess::Spawn(CommandLine(host, argv), options);
  }
};

// On this machine: every host's address must be one of this machine's (127.0.0.x serves as
// several hosts on loopback). The test double of the remote engines, and what `metaps run` uses.
class LocalEngine final : public RoleEngine {
 public:
  std::string name() const override { return "local"; }
  bool remote() const override { return false; }
  std::vector<std::string> CommandLine(const Host&, const std::vector<std::string>& argv) const override {
    return argv;
  }
};

// Over ssh: `ssh -T -o BatchMode=yes [-o OPT]... HOST -- 'exec env VAR=... ARGV'`. The options
// given come first, so they win over the defaults (ssh keeps an option's first value).
class SshEngine final : public RoleEngine {
 public:
  // `ssh`: the program (a path or a name in $PATH); `options`: `-o` values (Port=2222, ...);
  // `env`: NAME=VALUE pairs set for the remote process (ssh passes none of ours).
  SshEngine(std::string ssh, std::vector<std::string> options, std::vector<std::string> env)
      : ssh_(std::move(ssh)), options_(std::move(options)), env_(std::move(env)) {}
  std::string name() const override { return "ssh"; }
  bool remote() const override { return true; }
  std::vector<std::string> CommandLine(const Host& host, const std::vector<std::string>& argv) const override;

 private:
  std::string ssh_;
  std::vector<std::string> options_, env_;
};

// Inside a Slurm allocation: one job step per process, `srun --nodes=1 --ntasks=1 --nodelist=HOST
// --overlap [OPT]... -- ARGV`. srun passes our environment on (--export=ALL).
class SrunEngine final : public RoleEngine {
 public:
  SrunEngine(std::string srun, std::vector<std::string> options)
      : srun_(std::move(srun)), options_(std::move(options)) {}
  std::string name() const override { return "slurm"; }
  bool remote() const override { return true; }
  std::vector<std::string> CommandLine(const Host& host, const std::vector<std::string>& argv) const override;

 private:
  std::string srun_;
  std::vector<std::string> options_;
};

// A multi-host job's placement: the scheduler on hosts[0], server s on hosts[s % n], worker w on
// hosts[w % n]. Every host must see the run directory at the same path (a shared filesystem).
struct Cluster {
  std::unique_ptr<RoleEngine> engine;
  std::vector<Host> hosts;
  std::string metaps;  // the executable as every host sees it
  // Where each server keeps its data on its own host (a local disk): ROOT/<run directory's
  // name>/shard-<i>. Empty: under the run directory (servers/shard-<i>, on the shared filesystem).
  std::string server_data_root;
  const Host& scheduler_host() const { return hosts[0]; }
  const Host& server_host(int shard) const { return hosts[shard % hosts.size()]; }
  const Host& worker_host(int id) const { return hosts[id % hosts.size()]; }
};

}  // namespace metaps::launch
