// Transport: moves multipart messages between nodes (ps-lite's "Van").
//
// A node binds one endpoint where peers reach it, and connects to the peers it calls. Messages are
// Envelopes: a peer name and frames. A message that arrives at the bound endpoint carries the
// sender's routing name (starting with '@'); replying to that name reaches the sender. A message
// that arrives over a connection carries the name given to Connect.
//
// Delivery is ordered per link; nothing is retried here (callers own timeouts and retries).
// Thread-safety: Bind/Connect/Send/Recv must be called from one thread at a time (they are the
// node's I/O loop). Threads may take turns when a mutex orders each turn after the last (PsClient
// does); Interrupt() may be called from any thread and wakes a blocked Recv.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/status.h"

namespace metaps {

struct Envelope {
  std::string peer;
  std::vector<Bytes> frames;
};

class Transport {
 public:
  virtual ~Transport() = default;

  // Starts listening. `endpoint` may ask for any free port ("tcp://127.0.0.1:0"); the result is
  // the concrete endpoint peers should use.
  virtual Result<std::string> Bind(const std::string& endpoint) = 0;
  // Opens a link named `peer` (must not start with '@') to a node bound at `endpoint`.
  virtual Status Connect(const std::string& peer, const std::string& endpoint) = 0;
  virtual Status Disconnect(const std::string& peer) = 0;
  // Queues the frames for `env.peer`. Unavailable when the peer is unknown or unreachable.
  virtual Status Send(Envelope env) = 0;
  // The next message from any peer: DeadlineExceeded after `timeout`, Cancelled on Interrupt().
  virtual Result<Envelope> Recv(std::chrono::milliseconds timeout) = 0;
  // Wakes one pending or the next Recv with Cancelled. Thread-safe.
  virtual void Interrupt() = 0;
};

}  // namespace metaps
