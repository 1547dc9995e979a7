// Scheduler: one per job. Registration and ids, the shard map, heartbeats and dead-node detection,
// rounds under BSP / SSP / ASP (RoundClock), job progress, status and Prometheus metrics.
//
// It answers control messages (common/control.h) on its own transport from a single loop thread.
// Replies to `membership` and `clock` may be deferred: the requester blocks until the rule lets
// it go. Messages with the wrong job id or token are dropped with a logged reason.
//
// Its state (clocks, finished workers) is written to `state_file` after every change, atomically,
// so a restarted scheduler resumes where it stopped.
//
// Thread-safety: Serve() runs the loop; Stop(), StatusJson() and MetricsText() may be called from
// any thread (they read a snapshot guarded by a mutex).
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/logging.h"
#include "common/status.h"
#include "common/control.h"
#include "common/transport.h"
#include "common/wire.h"
#include "scheduler/rounds.h"

namespace metaps::scheduler {

struct SchedulerOptions {
  std::string bind = "tcp://127.0.0.1:0";
  std::string job_id;
  std::string auth;  // when not empty, every message must carry it
  int num_servers = 1;
  int num_workers = 1;
  Consistency consistency = Consistency::kBsp;
  uint32_t staleness = 0;
  uint64_t total_rounds = 0;               // 0: the workers decide when they are done
  uint32_t heartbeat_timeout_ms = 10000;   // a node silent this long is marked dead
  std::string state_file;                  // empty: state is not persisted
  // Periodic consistent checkpoints at round boundaries: every N rounds and/or every T seconds
  // (0 = off), into checkpoint_dir/round-<r>/, keeping the last `checkpoint_keep`.
  uint64_t checkpoint_every_rounds = 0;
  uint32_t checkpoint_every_seconds = 0;
  uint32_t checkpoint_keep = 2;
  // A checkpoint not acknowledged by every shard in this time is abandoned (training goes on).
  uint32_t checkpoint_timeout_ms = 30000;
  std::string checkpoint_dir;
};

// A server's store statistic that its heartbeats carry (body "store": {key: unsigned, ...}) and the
// scheduler exports in /status (servers[].store) and /metrics (metaps_server_<metric>{id="<shard>"}).
struct ServerStoreStat {
  const char* key;     // in the heartbeat's "store" object and the server's stats JSON
  const char* metric;  // Prometheus name after "metaps_server_"
  const char* help;
  bool counter;  // cumulative since the server started; otherwise a gauge
};
inline constexpr ServerStoreStat kServerStoreStats[] = {
    {"rows_cached", "rows_cached", "Rows in the server's cache.", false},
    {"cache_bytes", "cache_bytes", "Bytes the server's cache holds.", false},
    {"rows_dirty", "rows_dirty", "Cached rows changed since their last write-back.", false},
    {"log_records_pending", "log_records_pending",
     "Push-log records no write-back covers yet: what a restart would replay.", false},
    {"cache_hits", "cache_hits_total", "Row lookups the cache answered.", true},
    {"cache_misses", "cache_misses_total", "Row lookups that read RocksDB.", true},
    {"writebacks", "writebacks_total", "Write-backs completed.", true},
    {"writeback_errors", "writeback_errors_total", "Failed write-backs (retried; the push log keeps their data).", true},
    {"rows_written", "rows_written_total", "Rows written back to RocksDB.", true},
    {"replayed_records", "replayed_records", "Push-log records replayed when the server's store opened.", false},
};
// The known statistics of a heartbeat's "store" value (unsigned numbers only); anything else in it,
// or a value that is not an object, is left out.
nlohmann::json ServerStoreStats(const nlohmann::json& reported);

// The newest complete checkpoint under `dir` (one whose manifest.json exists): its round and path.
Result<std::pair<uint64_t, std::string>> LatestCheckpoint(const std::string& dir);

class Scheduler {
 public:
  Scheduler(SchedulerOptions options, std::unique_ptr<Transport> transport, Logger logger);

  // Binds the transport and loads `state_file` when it exists.
  Result<std::string> Bind();
  // Serves until every worker is done and every live server was told to stop, or Stop().
  Status Serve();
  void Stop();

  std::string StatusJson() const;
  std::string MetricsText() const;
  bool finished() const { return finished_.load(); }

 private:
  using Clock = std::chrono::steady_clock;
  struct Node {
    std::string role;
    int32_t id = -1;
    std::string name;
    std::string endpoint;
    Clock::time_point last_seen;
    bool alive = true;
    bool told_to_stop = false;
    bool left = false;  // said "leaving": it has every answer it needs from the scheduler
  };
  struct WorkerProgress {
    uint64_t round = 0;
    uint64_t tasks = 0;
    double loss = 0;
    uint64_t rows_pulled = 0;
    uint64_t rows_pushed = 0;
    double tasks_per_s = 0;
    nlohmann::json extra;  // validation metrics and anything else a worker reports
  };
  struct Deferred {
    std::string peer;
    Header request;
  };

  void HandleEnvelope(Envelope env);
  Result<nlohmann::json> HandleControl(const std::string& peer, const Header& h, const nlohmann::json& body,
                                       bool* deferred);
  void Reply(const std::string& peer, const Header& request, const nlohmann::json& body);
  void ReleaseMembershipWaiters();
  void ReleaseClockWaiters(const std::vector<std::pair<int, uint64_t>>& released);
  void CheckLiveness();
  // Answers "stop" to the workers past the last round once every live worker is past it.
  void ReleaseFinalWaiters();
  // Checkpoints: hold round `ckpt_round_` until every live worker asked for it, then checkpoint.
  void MaybeScheduleCheckpoint(uint64_t requested_clock);
  void MaybeStartCheckpoint();
  void HandleServerReply(const std::string& peer, const Message& reply);
  void FinishCheckpoint(const Status& status);
  // Releases clock waiters, holding back those at or past a pending checkpoint's round.
  void Release(const std::vector<std::pair<int, uint64_t>>& released);
  nlohmann::json MembershipBody() const;
  nlohmann::json BuildStatus() const;  // REQUIRES: loop thread
  void PublishSnapshot();
  void SaveState();
  void LoadState();
  bool AllWorkersDone() const;

  SchedulerOptions options_;
  std::unique_ptr<Transport> transport_;
  Logger logger_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> finished_{false};
  Clock::time_point started_ = Clock::now();
  Clock::time_point finished_at_;

  // Loop-thread state.
  uint64_t epoch_ = 1;
  std::map<std::string, Node> nodes_;  // key: role + "/" + id
  std::vector<std::string> server_endpoints_;
  // The store statistics each server sent with its last heartbeat (an object; empty until then).
  std::vector<nlohmann::json> server_stats_;
  RoundClock clock_;
  std::vector<bool> worker_done_;
  std::vector<WorkerProgress> progress_;
  std::vector<Deferred> membership_waiters_;
  std::map<int, Deferred> clock_waiters_;  // worker -> its pending clock request
  std::map<int, Deferred> final_waiters_;  // workers past the last round, waiting for the others
  uint64_t rejected_ = 0;
  // Checkpoint state.
  uint64_t ckpt_round_ = 0;          // round being held for a checkpoint; 0 = none pending
  bool ckpt_running_ = false;
  Clock::time_point ckpt_started_;
  std::map<uint64_t, int> ckpt_acks_;  // request id -> shard
  Status ckpt_status_;
  uint64_t last_ckpt_round_ = 0;
  Clock::time_point last_ckpt_time_ = Clock::now();
  std::vector<std::pair<int, uint64_t>> ckpt_held_;
  uint64_t next_request_id_ = 1;
  uint64_t checkpoints_written_ = 0;

  mutable std::mutex snapshot_mu_;
  std::string status_snapshot_;   // GUARDED_BY(snapshot_mu_)
  std::string metrics_snapshot_;  // GUARDED_BY(snapshot_mu_)
};

}  // namespace metaps::scheduler
