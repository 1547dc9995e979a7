// `metaps keygen`: the secrets of a multi-host job, made once on one host: the job token and,
// with --curve, the CURVE keys (a server pair, one client pair per node, authorized_keys) in the
// layout `--token-file` / `--curve-keys DIR --curve-name NAME` read. See docs/operations.md.
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "common/files.h"
#include "common/zmq_transport.h"
#include "launch/cli.h"
#include "launch/job_config.h"

namespace metaps::launch {
namespace {

struct KeygenFlags {
  std::string dir;
  int servers = 0;
  int workers = 0;
  std::vector<std::string> names;  // extra node names
  bool curve = false;
};

int RunKeygen(const KeygenFlags& f) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(f.dir) && !fs::is_empty(f.dir, ec)) {
    std::cerr << "metaps keygen: " << f.dir << " is not empty; secrets are never overwritten\n";
    return 2;
  }
  fs::create_directories(f.dir, ec);
  if (ec) {
    std::cerr << "metaps keygen: cannot create " << f.dir << ": " << ec.message() << "\n";
    return 1;
  }
  chmod(f.dir.c_str(), 0700);
  auto token = MakeToken();
  if (!token.ok()) {
    std::cerr << "metaps keygen: " << token.status().message() << "\n";
    return 1;
  }
  const std::string token_file = f.dir + "/token";
  if (Status w = WriteFileWithMode(token_file, *token + "\n", 0600); !w.ok()) {
    std::cerr << "metaps keygen: " << w.message() << "\n";
    return 1;
  }
  std::cout << "token: " << token_file << "\n";
  if (!f.curve) return 0;
  std::vector<std::string> nodes = {"scheduler"};
  for (int i = 0; i < f.servers; ++i) nodes.push_back("server-" + std::to_string(i));
  for (int i = 0; i < f.workers; ++i) nodes.push_back("worker-" + std::to_string(i));
  nodes.insert(nodes.end(), f.names.begin(), f.names.end());
  const std::string keys = f.dir + "/keys";
  if (Status s = WriteCurveKeys(keys, nodes); !s.ok()) {
    std::cerr << "metaps keygen: " << s.message() << "\n";
    return 2;
  }
  std::cout << "CURVE keys for " << nodes.size() << " nodes: " << keys
            << " (give each host server.pub and its own <name>.pub/.key; binding hosts also server.key and "
               "authorized_keys)\n";
  return 0;
}

}  // namespace

void RegisterKeygenCommand(CLI::App& app, Action* action) {
  auto f = std::make_shared<KeygenFlags>();
  auto* cmd = app.add_subcommand("keygen", "Make a multi-host job's token and (with --curve) its CURVE keys");
  cmd->add_option("dir", f->dir, "Directory to create (must be absent or empty)")->required();
  cmd->add_flag("--curve", f->curve, "Also make CURVE keys: DIR/keys/ with a pair per node and authorized_keys");
  cmd->add_option("--servers", f->servers, "Servers: nodes server-0..server-N-1")->check(CLI::Range(0, 4096));
  cmd->add_option("--workers", f->workers, "Workers: nodes worker-0..worker-N-1")->check(CLI::Range(0, 65536));
  cmd->add_option("--name", f->names, "Another node name (repeatable)");
  cmd->callback([f, action] { *action = [f] { return RunKeygen(*f); }; });
}

}  // namespace metaps::launch
