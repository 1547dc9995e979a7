// `metaps server`: runs one parameter-server shard until SIGTERM/SIGINT or a shutdown message.
#include <signal.h>

#include <fstream>
#include <iostream>
#include <atomic>
#include <thread>

#include "common/config.h"
#include "common/control.h"
#include "common/logging.h"
#include "common/rocksdb_storage.h"
#include "common/zmq_transport.h"
#include "common/files.h"
#include "launch/cli.h"
#include "launch/signals.h"
#include "launch/job_config.h"
#include "ps/param_store.h"
#include "ps/server.h"
#include "ps/table_spec.h"

namespace metaps::launch {
namespace {

struct ServerFlags {
  std::string config_path;
  std::vector<std::string> overrides;
  std::string bind, data_dir, restore_from, endpoint_file, log_file, job_id, token_file, scheduler, curve_keys, curve_name;
  int64_t heartbeat_ms = 1000;
  int64_t shard_id = -1;
  int64_t cache_bytes = -1;
  bool sync = false;
  bool stop_on_stdin_eof = false;
};

int RunServer(const ServerFlags& f) {
  // Before any thread exists (RocksDB, ZeroMQ, the writer): SIGTERM/SIGINT then always reach the
  // watcher and stop the loop cleanly (the store writes back before the process exits).
  StopOnSignals on_signal;
  if (f.stop_on_stdin_eof) StopOnStdinEof();
  // A file-size limit (ulimit -f) makes writes fail with EFBIG, which the store reports (a failed
  // push log append stops the server with a logged error), instead of killing it by signal.
  signal(SIGXFSZ, SIG_IGN);
  auto cfg = LoadJobConfig(f.config_path, f.overrides);
  if (!cfg.ok()) return UsageError("server", cfg.status());
  auto opts = ServerSettingsFromConfig(*cfg);
  if (!opts.ok()) return UsageError("server", opts.status());
  auto secrets = LoadNodeSecrets(f.token_file, f.curve_keys, f.curve_name);
  if (!secrets.ok()) return UsageError("server", secrets.status());
  ServerSettings s = std::move(opts).value();
  if (!f.bind.empty()) s.server.bind = f.bind;
  if (!f.data_dir.empty()) s.store.data_dir = f.data_dir;
  if (!f.restore_from.empty()) s.store.restore_from = f.restore_from;
  if (f.shard_id >= 0) s.server.shard_id = static_cast<int32_t>(f.shard_id);
  if (f.cache_bytes >= 0) s.store.cache_bytes = static_cast<uint64_t>(f.cache_bytes);
  if (f.sync) s.store.sync = true;
  if (!f.job_id.empty()) s.server.job_id = f.job_id;
  if (!f.token_file.empty()) s.server.auth = secrets->auth;
  if (s.store.data_dir.empty()) {
    std::cerr << "metaps server: server.data_dir: required (or --data-dir)\n";
    return 2;
  }

  Logger log = MakeLogger("server-" + std::to_string(s.server.shard_id), f.log_file, s.log_level);
  secrets->zmq.log = log;  // refused CURVE handshakes are logged here
  const ZmqOptions* zmq_options = &secrets->zmq;
  if (Status st = ps::ParamStore::PrepareDataDir(s.store); !st.ok()) {
    log->error("cannot restore {}: {}", s.store.restore_from, st.ToString());
    return 1;
  }
  RocksDbOptions rocks;
  rocks.sync = s.store.sync;
  auto storage = RocksDbStorage::Open(s.store.data_dir, rocks);
  if (!storage.ok()) {
    log->error("cannot open storage: {}", storage.status().ToString());
    return 1;
  }
  auto store = ps::ParamStore::Open(s.store, s.tables, std::move(storage).value());
  if (!store.ok()) {
    log->error("cannot open the parameter store: {}", store.status().ToString());
    return 1;
  }
  ps::Server server(s.server, std::make_unique<ZmqTransport>(*zmq_options), std::move(store).value(), log);
  auto endpoint = server.Bind();
  if (!endpoint.ok()) {
    log->error("{}", endpoint.status().ToString());
    return 1;
  }
  log->info("listening on {} (data in {})", *endpoint, s.store.data_dir);
  std::cout << *endpoint << std::endl;
  if (!f.endpoint_file.empty()) {
    // Written to a temporary name and renamed, so a reader never sees half a line.
    if (Status w = WriteFileAtomically(f.endpoint_file, *endpoint + "\n"); !w.ok()) {
      log->error("{}", w.ToString());
      return 1;
    }
  }

  auto armed = on_signal.ArmFor([&server] { server.Stop(); });
  // With a scheduler: register, then heartbeat until the job ends (the scheduler says stop).
  std::atomic<bool> serving{true};
  std::thread heartbeat;
  if (!f.scheduler.empty()) {
    heartbeat = std::thread([&] {
      NodeIdentity self{s.server.job_id, s.server.auth, "server", s.server.shard_id,
                        "server-" + std::to_string(s.server.shard_id)};
      // A send to a scheduler that is gone blocks for the send timeout; keep it short so that a
      // stopping server joins this thread (and writes back) well within a supervisor's SIGKILL grace.
      ZmqOptions link_options = *zmq_options;
      link_options.send_timeout_ms = 1000;
      ControlLink link(std::make_unique<ZmqTransport>(link_options), f.scheduler, self);
      if (Status c = link.Connect(); !c.ok()) {
        log->error("scheduler {}: {}", f.scheduler, c.ToString());
        return;
      }
      bool registered = false;
      while (serving) {
        auto timeout = std::chrono::milliseconds(std::max<int64_t>(1000, 3 * f.heartbeat_ms));
        if (!registered) {
          auto r = link.Call("register", {{"role", "server"}, {"id", s.server.shard_id}, {"endpoint", *endpoint}},
                             timeout);
          registered = r.ok();
          if (!r.ok()) log->warn("registration with the scheduler failed: {}; retrying", r.status().ToString());
        } else {
          // The store's statistics ride along: the scheduler exports them (/status, /metrics).
          auto r = link.Call("heartbeat",
                             {{"role", "server"}, {"id", s.server.shard_id},
                              {"store", ps::StoreStatsJson(server.store().Stats())}},
                             timeout);
          if (r.ok() && r->value("stop", false)) {
            log->info("the scheduler says the job is over");
            server.Stop();
            // Lets the scheduler leave: it waits for this so that its last answers are not lost
            // with its connections. Its reply is not needed (it may leave before sending it).
            (void)link.Call("leaving", {{"role", "server"}, {"id", s.server.shard_id}}, std::chrono::milliseconds(1000));
            return;
          }
          if (!r.ok()) log->info("heartbeat: {}", r.status().ToString());
          if (!r.ok() && r.status().code() == StatusCode::kFailedPrecondition) registered = false;  // scheduler restarted
        }
        for (int64_t waited = 0; serving && waited < f.heartbeat_ms; waited += 50) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
      }
    });
  }
  Status st = server.Serve();
  serving = false;
  if (heartbeat.joinable()) heartbeat.join();
  if (!st.ok()) {
    log->error("stopped with error: {}", st.ToString());
    return 1;
  }
  log->info("stopped");
  return 0;
}

}  // namespace

void RegisterServerCommand(CLI::App& app, Action* action) {
  auto f = std::make_shared<ServerFlags>();
  auto* cmd = app.add_subcommand("server", "Run one parameter-server shard");
  cmd->add_option("-c,--config", f->config_path, "Job config (TOML) with [[tables]] and [server]")->required();
  cmd->add_option("--set", f->overrides, "Override a config key: --set server.cache_bytes=1000000");
  cmd->add_option("--bind", f->bind, "Endpoint to listen on (default server.bind, tcp://127.0.0.1:0)");
  cmd->add_option("--data-dir", f->data_dir, "RocksDB directory of this shard (server.data_dir)");
  cmd->add_option("--restore-from", f->restore_from, "Checkpoint directory to start from when data-dir is new");
  cmd->add_option("--shard-id", f->shard_id, "Shard id (server.shard_id)");
  cmd->add_option("--cache-bytes", f->cache_bytes, "Row cache budget in bytes (server.cache_bytes)");
  cmd->add_flag("--sync", f->sync, "fsync every push before acknowledging it (server.sync)");
  cmd->add_option("--endpoint-file", f->endpoint_file, "Write the bound endpoint to this file");
  cmd->add_option("--log-file", f->log_file, "Also write the log here");
  cmd->add_option("--job-id", f->job_id, "Only serve requests of this job");
  cmd->add_option("--token-file", f->token_file, "Only serve requests carrying the token in this file");
  cmd->add_option("--scheduler", f->scheduler, "Register with the scheduler at this endpoint and heartbeat to it");
  cmd->add_option("--heartbeat-ms", f->heartbeat_ms, "Heartbeat period");
  cmd->add_option("--curve-keys", f->curve_keys, kCurveKeysHelp);
  cmd->add_option("--curve-name", f->curve_name, kCurveNameHelp)->default_str("client");
  cmd->add_flag("--stop-on-stdin-eof", f->stop_on_stdin_eof, kStopOnStdinEofHelp);
  cmd->callback([f, action] { *action = [f] { return RunServer(*f); }; });
}

}  // namespace metaps::launch
