// ZeroMQ transport: a ROUTER socket for the bound endpoint, a DEALER socket per connection.
//
// Payload frames are handed to ZeroMQ without copying (the frame's Bytes owner is kept alive until
// ZeroMQ releases it) and received frames become Bytes that own the zmq message. Sends to a vanished
// router peer fail with Unavailable (ZMQ_ROUTER_MANDATORY) rather than being dropped silently.
//
// With CURVE keys every link is encrypted, and the bound socket authenticates clients: Bind starts
// a ZapHandler (common/zap.h) in the transport's own context that admits only the client public
// keys of `curve_authorized_clients`. A refused client never completes a handshake, so its sends
// time out (Unavailable) and nothing it sends arrives.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/logging.h"
#include "common/transport.h"
#include "common/zap.h"

namespace zmq {
class context_t;
class socket_t;
}  // namespace zmq

namespace metaps {

struct ZmqOptions {
  int send_hwm = 1000;        // messages queued per peer before Send blocks/fails
  int recv_hwm = 1000;
  int linger_ms = 1000;       // how long close waits to flush queued messages
  int send_timeout_ms = 10000;
  // Optional CURVE keys (Z85 text). When client keys are set, Bind requires the server secret
  // and a non-empty allow-list (a CURVE node never binds an unencrypted or unauthenticated socket).
  std::string curve_server_secret;
  std::string curve_server_public;  // used by Connect: the server's public key
  std::string curve_client_public;
  std::string curve_client_secret;
  CurveAllowList curve_authorized_clients;  // the client keys the bound socket admits
  Logger log;  // where refused CURVE handshakes are logged; may be null
};

// The CURVE keys of a job, Z85 text files in one directory:
//   server.pub, server.key  the pair every bound socket uses (server.key only where nodes bind)
//   <name>.pub, <name>.key  a node's own client pair, used by its connecting sockets
//   authorized_keys         "<z85 public key> <name>" per line: the clients bound sockets admit
// WriteCurveKeys makes a fresh server pair, a client pair for each of `clients` and the
// authorized_keys listing exactly those; secrets are created with mode 0600.
Status WriteCurveKeys(const std::string& dir, const std::vector<std::string>& clients = {"client"});
// ZmqOptions with the keys of `dir` for the node whose client pair is `client` (ZmqOptions{} when
// dir is empty). Without an authorized_keys file the allow-list is client.pub alone (key
// directories made before authorized_keys existed).
Result<ZmqOptions> CurveOptionsFromDir(const std::string& dir, const std::string& client = "client");

class ZmqTransport final : public Transport {
 public:
  explicit ZmqTransport(ZmqOptions options = {});
  ~ZmqTransport() override;
  ZmqTransport(const ZmqTransport&) = delete;
  ZmqTransport& operator=(const ZmqTransport&) = delete;

  Result<std::string> Bind(const std::string& endpoint) override;
  Status Connect(const std::string& peer, const std::string& endpoint) override;
  Status Disconnect(const std::string& peer) override;
  Status Send(Envelope env) override;
  Result<Envelope> Recv(std::chrono::milliseconds timeout) override;
  void Interrupt() override;

  // CURVE handshakes the bound socket refused (unlisted client key); 0 without CURVE. May be
  // called from any thread once Bind has returned.
  uint64_t curve_rejections() const;

 private:
  Result<Envelope> ReadFrom(zmq::socket_t& socket, bool is_router, const std::string& name);

  ZmqOptions options_;
  std::unique_ptr<zmq::context_t> context_;
  std::unique_ptr<ZapHandler> zap_;  // started by Bind with CURVE; stopped before context_ ends
  std::unique_ptr<zmq::socket_t> router_;
  std::map<std::string, std::unique_ptr<zmq::socket_t>> dealers_;
  int wake_fd_ = -1;  // eventfd written by Interrupt()
  size_t next_poll_start_ = 0;
};

}  // namespace metaps
