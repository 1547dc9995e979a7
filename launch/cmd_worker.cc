// `metaps worker`: one training worker of a job.
#include <atomic>
#include <iostream>

#include "common/zmq_transport.h"
#include "launch/cli.h"
#include "launch/job_config.h"
#include "launch/signals.h"
#include "ps/client.h"
#include "worker/node.h"
#include "worker/onednn_kernels.h"

namespace metaps::launch {
namespace {

// worker::ParamClient over the real parameter-server client.
class PsParams final : public worker::ParamClient {
 public:
  explicit PsParams(std::unique_ptr<ps::PsClient> client) : client_(std::move(client)) {}
  std::future<Result<std::vector<float>>> Pull(const std::string& table, std::span<const Key> keys) override {
    // Adapt the value type (a copy of the rows: the trainer keeps a vector).
    auto f = std::make_shared<std::future<Result<ps::PullResult>>>(client_->Pull(table, keys));
    return std::async(std::launch::deferred, [f]() -> Result<std::vector<float>> {
      auto r = f->get();
      if (!r.ok()) return r.status();
      return r->ToVector();
    });
  }
  std::future<Status> Push(const std::string& table, std::span<const Key> keys, std::span<const float> grads,
                           uint64_t step) override {
    return client_->Push(table, keys, grads, step);
  }
  std::future<Result<std::vector<float>>> PullDense(const std::string& tensor) override {
    return client_->PullDense(tensor);
  }
  std::future<Status> PushDense(const std::string& tensor, std::span<const float> grads, uint64_t step) override {
    return client_->PushDense(tensor, grads, step);
  }
  ps::PsClient& client() { return *client_; }

 private:
  std::unique_ptr<ps::PsClient> client_;
};

struct WorkerFlags {
  std::string config_path, scheduler, token_file, log_file, run_dir, job_id, curve_keys, curve_name;
  std::vector<std::string> overrides;
  int64_t id = 0;
  uint64_t start_round = 0;
  bool stop_on_stdin_eof = false;
};

int RunWorker(const WorkerFlags& f) {
  // A worker has nothing to save on the way out (the servers hold the model): SIGTERM ends it.
  if (f.stop_on_stdin_eof) StopOnStdinEof();
  auto cfg = LoadJobConfig(f.config_path, f.overrides);
  if (!cfg.ok()) return UsageError("worker", cfg.status());
  auto sched = SchedulerSettingsFromConfig(*cfg);
  if (!sched.ok()) return UsageError("worker", sched.status());
  auto secrets = LoadNodeSecrets(f.token_file, f.curve_keys, f.curve_name);
  if (!secrets.ok()) return UsageError("worker", secrets.status());
  const std::string& auth = secrets->auth;
  const ZmqOptions* zmq_options = &secrets->zmq;
  std::string job_id = f.job_id.empty() ? sched->scheduler.job_id : f.job_id;
  Logger log = MakeLogger("worker-" + std::to_string(f.id), f.log_file, sched->log_level);
  auto kernels = worker::OneDnnKernels::Create();
  if (!kernels.ok()) {
    log->error("oneDNN: {}", kernels.status().ToString());
    return 1;
  }
  // [worker]: audit_pushes is read by the node; the parameter client's patience is set here.
  auto worker_cfg = cfg->GetTable("worker");
  if (!worker_cfg.ok()) return UsageError("worker", worker_cfg.status());
  if (Status k = worker_cfg->CheckKnownKeys({"audit_pushes", "request_timeout_ms", "max_retries"}); !k.ok()) {
    return UsageError("worker", k);
  }
  auto timeout_ms = worker_cfg->GetIntIn("request_timeout_ms", 5000, 1, 3600 * 1000);
  if (!timeout_ms.ok()) return UsageError("worker", timeout_ms.status());
  auto max_retries = worker_cfg->GetIntIn("max_retries", 6, 0, 1000000);
  if (!max_retries.ok()) return UsageError("worker", max_retries.status());
  int32_t id = static_cast<int32_t>(f.id);
  PsParams* live = nullptr;
  auto retries = std::make_shared<std::atomic<uint64_t>>(0);
  worker::WorkerEnv env;
  env.logger = log;
  env.kernels = kernels->get();
  env.control = [&] {
    return std::make_unique<ControlLink>(std::make_unique<ZmqTransport>(*zmq_options), f.scheduler,
                                         NodeIdentity{job_id, auth, "worker", id, "worker-" + std::to_string(id)});
  };
  env.params = [&](const std::vector<std::string>& servers,
                   uint64_t epoch) -> Result<std::unique_ptr<worker::ParamClient>> {
    auto c = std::make_unique<ps::PsClient>(
        ps::ClientOptions{.job_id = job_id, .sender = "worker-" + std::to_string(id), .auth = auth,
                          .request_timeout_ms = static_cast<uint32_t>(*timeout_ms),
                          .max_retries = static_cast<uint32_t>(*max_retries), .worker_id = id,
                          .on_retry =
                              [log, retries](int32_t shard, const Status& cause, uint32_t retry) {
                                // Retries reuse the request id: a server applies a push once.
                                retries->fetch_add(1);
                                log->warn("shard {}: {}; retry {} with the same request id", shard,
                                          cause.ToString(), retry);
                              }},
        std::make_unique<ZmqTransport>(*zmq_options), ShardMap{epoch, servers});
    METAPS_RETURN_IF_ERROR(c->Start());
    auto p = std::make_unique<PsParams>(std::move(c));
    live = p.get();
    return std::unique_ptr<worker::ParamClient>(std::move(p));
  };
  env.checkpoint = [&](const std::string& dir) -> Status {
    if (!live) return FailedPrecondition("no server connection");
    return live->client().Checkpoint(dir).get();
  };
  env.server_stats = [&]() -> Result<std::vector<std::string>> {
    if (!live) return FailedPrecondition("no server connection");
    return live->client().Stats().get();
  };
  worker::WorkerNode node({.worker_id = id, .num_workers = sched->scheduler.num_workers, .run_dir = f.run_dir, .start_round = f.start_round},
                          *cfg, std::move(env));
  Status s = node.Run();
  if (retries->load() > 0) log->info("worker {}: {} parameter-server requests were retried", id, retries->load());
  if (!s.ok()) {
    log->error("worker {} failed: {}", id, s.ToString());
    return 1;
  }
  return 0;
}

}  // namespace

void RegisterWorkerCommand(CLI::App& app, Action* action) {
  auto f = std::make_shared<WorkerFlags>();
  auto* cmd = app.add_subcommand("worker", "Run one training worker of a job");
  cmd->add_option("-c,--config", f->config_path, "Job config (TOML)")->required();
  cmd->add_option("--set", f->overrides, "Override a config key");
  cmd->add_option("--id", f->id, "Worker id, 0..job.workers-1")->required();
  cmd->add_option("--scheduler", f->scheduler, "Scheduler endpoint")->required();
  cmd->add_option("--token-file", f->token_file, "Job token file");
  cmd->add_option("--job-id", f->job_id, "Job id (job.id)");
  cmd->add_option("--run-dir", f->run_dir, "Where worker 0 writes report.json and the final checkpoint");
  cmd->add_option("--log-file", f->log_file, "Also write the log here");
  cmd->add_option("--start-round", f->start_round, "Resume at this round (a checkpoint's)");
  cmd->add_option("--curve-keys", f->curve_keys, kCurveKeysHelp);
  cmd->add_option("--curve-name", f->curve_name, kCurveNameHelp)->default_str("client");
  cmd->add_flag("--stop-on-stdin-eof", f->stop_on_stdin_eof, kStopOnStdinEofHelp);
  cmd->callback([f, action] { *action = [f] { return RunWorker(*f); }; });
}

}  // namespace metaps::launch
