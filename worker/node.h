// WorkerNode: the `metaps worker` process's life.
//
//   load the data, split users (every worker computes the same split from the seed), keep this
//   worker's partition of the train users -> register with the scheduler -> wait for the shard map
//   -> rounds: ask the scheduler for round r (BSP/SSP/ASP decide when), run it, report progress;
//   worker 0 also validates every `validate_every` rounds -> at the end (the scheduler answers
//   "stop" once every worker finished the last round) worker 0 evaluates the test users against
//   the baselines, writes report.json and asks the servers for a final checkpoint -> done.
//
// With `worker.audit_pushes = true` every acknowledged push is recorded in
// <run_dir>/audit/worker-<id>.pushes (worker/push_audit.h).
//
// A separate thread heartbeats to the scheduler. Concrete classes (transport, parameter client,
// kernels) are chosen by the caller (launch/) and passed in.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "common/config.h"
#include "common/control.h"
#include "common/logging.h"
#include "common/status.h"
#include "worker/kernels.h"
#include "worker/param_client.h"

namespace metaps::worker {

struct WorkerNodeOptions {
  int worker_id = 0;
  int num_workers = 1;
  std::string run_dir;            // report.json and the final checkpoint go here (worker 0)
  uint32_t heartbeat_ms = 1000;
  // Resume at this round (a checkpoint's): the sampler skips the meta-batches of earlier rounds,
  // so the worker continues its partition where the checkpoint left it.
  uint64_t start_round = 0;
};

struct WorkerEnv {
  // A new link to the scheduler (the node uses one for rounds and one for heartbeats).
  std::function<std::unique_ptr<ControlLink>()> control;
  // Connects to the servers of the shard map.
  std::function<Result<std::unique_ptr<ParamClient>>(const std::vector<std::string>& servers, uint64_t epoch)> params;
  // Asks every server to checkpoint into the directory.
  std::function<Status(const std::string& dir)> checkpoint;
  // Optional: every server's statistics (JSON text per shard), logged once training is over.
  std::function<Result<std::vector<std::string>>()> server_stats;
  Kernels* kernels = nullptr;
  Logger logger;
};

class WorkerNode {
 public:
  WorkerNode(WorkerNodeOptions options, Config config, WorkerEnv env);
  Status Run();

 private:
  WorkerNodeOptions options_;
  Config config_;
  WorkerEnv env_;
};

}  // namespace metaps::worker
