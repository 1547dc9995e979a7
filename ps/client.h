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
// Threading: all public methods are thread-safe and may be called concurrently; futures may be
// waited on from any thread, before or after the client stops or is destroyed, but a get() must not
// start while the destructor runs (a waiter already inside get() is released by Stop(), which the
// destructor waits for; one that starts during destruction would touch the dying client).
//
// No thread sits between a caller and the socket (the hand-offs cost more than the server's own
// work on small machines):
//   - a request is sent on the calling thread, under the client's lock, unless another thread is
//     receiving at that moment; then it is queued and that thread is woken to send it;
//   - a caller waiting on a future receives replies itself (it completes any request whose reply it
//     reads, and wakes that request's waiter) until its own request is complete; one caller receives
//     at a time, the others wait on a condition variable;
//   - a background thread (`ps-client-io`) wakes every 100 ms to read replies nobody waits for and to
//     resend requests past their deadline, so retries and timeouts run even when no caller waits.
// The futures are deferred (std::launch::deferred): get() and wait() run the receive loop above;
// wait_for() and wait_until() report future_status::deferred and must not be relied on.
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
#include <utility>
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
  // Keys are deduplicated before they are sent (a push sums the repeats' gradients). A pull of
  // 1024+ keys whose repeats come to under ~10% (judged from its first 512 keys) is sent with them
  // instead: removing them costs more client CPU than the server spends answering them twice, and
  // the rows come back the same. true: every pull is deduplicated, however few its repeats.
  bool dedupe_every_pull = false;
  // Optional: called before each retry with the shard, the typed error that caused it
  // (DeadlineExceeded: no reply in time) and the retry's number (1 = first). It runs under the
  // client's lock on whichever thread noticed the deadline: it must not block or call the client;
  // meant for logs and counters.
  std::function<void(int32_t shard, const Status& cause, uint32_t retry)> on_retry;
};

namespace internal {
// One logical request fanned out to several shards. Its parts are completed under the client's
// lock by whichever thread reads their replies; the result is built by the waiter, after `done`.
struct ClientOp {
  virtual ~ClientOp() = default;
  // One shard's successful, non-error reply. Cheap (it keeps the reply); may set `error`.
  virtual void OnPart(int32_t shard, Message& reply) = 0;
  int remaining = 0;               // parts without a reply yet
  Status error;                    // the first error seen
  std::atomic<bool> done{false};   // every part answered (or failed); set once, under the lock
};
}  // namespace internal

// Values of a pull in the caller's key order: keys.size() rows of `dim` floats. `values` views
// memory owned by `storage` (the server's reply itself when the keys had no duplicates and one
// shard owns them all, else one buffer the rows were gathered into), so it stays valid while any
// copy of this PullResult lives; copies share the memory.
struct PullResult {
  uint32_t dim = 0;
  std::span<const float> values;
  Bytes storage;
  std::vector<float> ToVector() const { return {values.begin(), values.end()}; }
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

  // Sends the parts (or queues them for the thread holding the transport) and returns a deferred
  // future whose get() waits for `op` and returns op->Take().
  template <typename O>
  std::future<decltype(std::declval<O&>().Take())> Submit(std::shared_ptr<O> op, std::vector<Outgoing> parts);
  // Returns once `op` is done, receiving replies on this thread while no other thread does.
  void Wait(Op& op);
  // Receives and completes replies until `op` is done or the client stops. REQUIRES: mu_ held by
  // `l` and transport_owned_ set by this thread.
  void Lead(Op& op, std::unique_lock<std::mutex>& l);
  // Waits up to `timeout` for one message with mu_ released, then (holding `l` again) completes the
  // request it answers. False when none came (timeout, or an Interrupt). REQUIRES: as Lead.
  bool ReceiveOne(std::unique_lock<std::mutex>& l, std::chrono::milliseconds timeout);
  void IoLoop();
  // REQUIRES (all *Locked): mu_ held, and this thread may use the transport (transport_owned_ set by
  // it, or unset and kept unset while mu_ is held).
  void SendLocked(Part part, uint64_t request_id);
  void FlushOutboxLocked();
  void ExpireLocked();
  void OnReplyLocked(Result<Message> msg);
  // Completes one part; marks its op done after the last one and then returns true (the op may be
  // gone by the time it returns: a waiter checks `done` without the lock). Needs only mu_.
  bool CompleteLocked(Part part, Result<Message> reply);
  Header MakeHeader(MsgType type, const std::string& table) const;

  ClientOptions options_;
  std::unique_ptr<Transport> transport_;
  ShardMap shards_;
  std::vector<std::string> peers_;  // "shard-<i>"

  std::mutex mu_;
  std::condition_variable cv_;       // an op became done, or the transport became free
  std::condition_variable io_cv_;    // wakes the background thread (Stop)
  // A thread is using the transport with mu_ released (a caller receiving, or the background
  // thread); others queue their sends in outbox_ and Interrupt() it.
  bool transport_owned_ = false;  // GUARDED_BY(mu_)
  std::deque<std::pair<Part, uint64_t>> outbox_;  // GUARDED_BY(mu_): parts and their request ids
  int waiters_ = 0;               // GUARDED_BY(mu_): threads inside Wait()
  bool stopping_ = false;         // GUARDED_BY(mu_)
  bool running_ = false;          // GUARDED_BY(mu_): Start succeeded
  std::atomic<uint64_t> next_request_id_{1};
  std::string incarnation_;  // appended to the sender name: a restarted client is a new sender
  std::thread io_thread_;
  std::unordered_map<uint64_t, Part> pending_;  // GUARDED_BY(mu_): sent, waiting for a reply
};

}  // namespace metaps::ps
