// PsClient: the worker's view of the sharded parameter servers (ps-lite's KVWorker).
//
// Pull and Push take keys in the caller's order, possibly with duplicates. The client
// deduplicates them, splits them by shard (ShardOf), sends one request per shard in parallel and
// returns a future; a pull's values come back in the caller's order, duplicates repeated. Dense
// tensors live whole on the shard their name hashes to.
//
// Every request gets a reply, a typed error from a server, or DeadlineExceeded after
// `request_timeout_ms`. A request whose shards fail partway reports the first error; pushes to the
// shards that answered OK stay applied (each shard's push is atomic and durable on its own).
//
// Threading: one internal I/O thread owns the transport. All public methods are thread-safe and
// may be called concurrently; futures may be waited on from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/keys.h"
#include "common/sharding.h"
#include "common/status.h"
#include "common/transport.h"
#include "common/wire.h"

namespace metaps::ps {

struct ClientOptions {
  std::string job_id;
  std::string sender = "client";
  std::string auth;                   // job token, sent in every header
  uint32_t request_timeout_ms = 30000;  // per attempt
  // A request without a reply in time is sent again, with the same request id, this many times
  // before it fails with DeadlineExceeded. Servers answer a repeated push from their record of it
  // instead of applying it twice, so retries are idempotent (see docs/wire.md).
  uint32_t max_retries = 3;
  int32_t worker_id = -1;
  // Optional: called on the I/O thread before each retry with the shard, the typed error that
  // caused it (DeadlineExceeded: no reply in time) and the retry's number (1 = first). Must not
  // block; meant for logs and counters.
  std::function<void(int32_t shard, const Status& cause, uint32_t retry)> on_retry;
};

namespace internal {
// One logical request fanned out to several shards; completed on the client's I/O thread.
struct ClientOp {
  virtual ~ClientOp() = default;
  // One shard's successful, non-error reply. May set `error`.
  virtual void OnPart(int32_t shard, Message& reply) = 0;
  // Called once, after the last part, with `error` OK or the first error seen.
  virtual void Finish() = 0;
  int remaining = 0;
  Status error;
};
}  // namespace internal

// Values of a pull in the caller's key order: keys.size() rows of `dim` floats.
struct PullResult {
  uint32_t dim = 0;
  std::vector<float> values;
};

class PsClient {
 public:
  PsClient(ClientOptions options, std::unique_ptr<Transport> transport, ShardMap shards);
  ~PsClient();
  PsClient(const PsClient&) = delete;
  PsClient& operator=(const PsClient&) = delete;

  // Connects to every shard and starts the I/O thread. Until it succeeds, every request fails at
  // once with FailedPrecondition (nothing waits on a client that is not running).
  Status Start();
  // Fails pending requests with Cancelled and joins the I/O thread. Idempotent.
  void Stop();

  std::future<Result<PullResult>> Pull(const std::string& table, std::span<const Key> keys);
  // grads: keys.size() * dim floats, row i for keys[i]. Duplicate keys may repeat; they are summed.
  std::future<Status> Push(const std::string& table, std::span<const Key> keys, std::span<const float> grads,
                           uint64_t step = 0);
  std::future<Result<std::vector<float>>> PullDense(const std::string& tensor);
  std::future<Status> PushDense(const std::string& tensor, std::span<const float> grads, uint64_t step = 0);

  // Asks every shard to checkpoint into `dir`/shard-<id>. Resolves when all have.
  std::future<Status> Checkpoint(const std::string& dir);
  // Per-shard statistics as JSON text, index = shard id.
  std::future<Result<std::vector<std::string>>> Stats();
  // Sends an arbitrary message to one shard and returns its reply (errors become Status).
  std::future<Result<Message>> Call(int32_t shard, Message request);

  int32_t num_shards() const { return shards_.size(); }
  int32_t DenseShard(const std::string& tensor) const { return ShardOf(Hash64(tensor), shards_.size()); }

 private:
  using Op = internal::ClientOp;
  struct Part {
    std::shared_ptr<Op> op;
    int32_t shard;
    std::chrono::steady_clock::time_point deadline;
    std::vector<Bytes> frames;  // kept for a retry (shared with the transport, not copied)
    uint32_t attempts = 0;
  };
  struct Outgoing {
    int32_t shard;
    Message message;
    std::shared_ptr<Op> op;
  };

  void Submit(std::vector<Outgoing> parts);
  void IoLoop();
  void Complete(Part part, Result<Message> reply);
  Header MakeHeader(MsgType type, const std::string& table) const;

  ClientOptions options_;
  std::unique_ptr<Transport> transport_;
  ShardMap shards_;

  std::mutex mu_;
  std::deque<Outgoing> outbox_;  // GUARDED_BY(mu_)
  bool stopping_ = false;        // GUARDED_BY(mu_)
  bool running_ = false;         // GUARDED_BY(mu_): the I/O thread was started
  std::atomic<uint64_t> next_request_id_{1};
  std::string incarnation_;  // appended to the sender name: a restarted client is a new sender
  std::thread io_thread_;
  // Owned by the I/O thread.
  std::unordered_map<uint64_t, Part> pending_;
};

}  // namespace metaps::ps
