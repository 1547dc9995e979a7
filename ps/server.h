// Server: one parameter-server shard (ps-lite's KVServer), serving a ParamStore over a Transport.
//
// The request loop is single-threaded: it receives a message, validates it completely (header,
// job, token, declared sizes against payload sizes, table, dim) and answers every request with its
// reply or a typed error (MsgType::kError with a StatusCode). A malformed message never stops the
// loop. Requests that carry the wrong job id or token are dropped with a logged reason: a stale
// process from another job on a reused port must not get answers from this one.
//
// A push is answered only after the ParamStore reports it durable. A big push's log record is
// appended on the store's log thread while the loop goes on to the next request; its reply, and
// every reply after it (which may reflect it, e.g. a pull), wait in order until the pushes they
// may reflect are durable (ParamStore::AppliedSeq / DurableSeq), so no answer ever shows a push
// that a crash could lose. Retried pushes (same sender,
// same request id) are acknowledged without being applied again; the window of applied request
// ids lives in the ParamStore, which logs each push's id with it and so keeps the window across a
// crash and restart (docs/wire.md, docs/storage.md).
#pragma once

#include <atomic>
#include <deque>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "common/logging.h"
#include "common/status.h"
#include "common/transport.h"
#include "common/wire.h"
#include "ps/param_store.h"

namespace metaps::ps {

struct ServerOptions {
  std::string bind = "tcp://127.0.0.1:0";
  std::string job_id;  // when not empty, requests of other jobs are dropped
  std::string auth;    // when not empty, requests must carry this token
  int32_t shard_id = 0;
};

struct ServerCounters {
  uint64_t requests = 0;
  uint64_t errors = 0;          // requests answered with a typed error
  uint64_t rejected = 0;        // requests dropped for a wrong job or token
  uint64_t rows_pulled = 0;
  uint64_t rows_pushed = 0;
  uint64_t duplicate_pushes = 0;  // retried pushes answered without applying them again
  uint64_t pull_store_ns = 0;     // wall time inside the store's Pull (sparse tables)
  uint64_t push_store_ns = 0;     // wall time inside the store's Push (sparse tables)
};

// The store's statistics as JSON (the store part of a stats reply; also sent with heartbeats).
nlohmann::json StoreStatsJson(const StoreStats& s);

class Server {
 public:
  Server(ServerOptions options, std::unique_ptr<Transport> transport, std::unique_ptr<ParamStore> store,
         Logger logger);
  ~Server();

  // Binds the transport; returns the endpoint clients connect to.
  Result<std::string> Bind();
  // Serves until a shutdown request or Stop(). Flushes the store before returning.
  Status Serve();
  // Makes Serve() return soon. Thread-safe (also from a signal-watching thread).
  void Stop();

  // Answers one decoded request. Exposed so unit tests can drive the logic without a transport.
  // Returns false in *reply_needed when the request must be dropped (wrong job or token).
  Message Handle(Message& request, bool* reply_needed, bool* shutdown);

  const ServerCounters& counters() const { return counters_; }
  ParamStore& store() { return *store_; }

 private:
  // A reply waiting for the store's DurableSeq() to reach durable_at.
  struct HeldReply {
    std::string peer;
    Message reply;
    uint64_t durable_at;
  };
  // Handle without waiting for durability: *durable_at is what the reply waits for.
  Message HandleDeferred(Message& request, bool* reply_needed, bool* shutdown, uint64_t* durable_at);
  Result<Message> Dispatch(Message& request, bool* shutdown, uint64_t* durable_at);
  Result<Message> HandlePull(Message& request);
  Result<Message> HandlePush(Message& request, uint64_t* durable_at);
  void SendReply(const std::string& peer, const Message& reply);
  // Sends the held replies that may go, oldest first; with `wait`, first waits for the oldest.
  // When a push cannot be made durable (the store failed), every held reply that waits for it
  // or a later push is answered with that error, and the error is returned.
  Status SendDurable(bool wait);
  Result<Message> HandlePullDense(Message& request);
  Result<Message> HandlePushDense(Message& request);
  Result<Message> HandleCheckpoint(Message& request);
  Result<Message> HandleStats(Message& request);

  ServerOptions options_;
  std::deque<HeldReply> held_;  // Serve's replies waiting for durability, in request order
  std::unique_ptr<Transport> transport_;
  std::unique_ptr<ParamStore> store_;
  Logger logger_;
  std::atomic<bool> stop_{false};
  ServerCounters counters_;
};

}  // namespace metaps::ps
