// ZeroMQ transport: a ROUTER socket for the bound endpoint, a DEALER socket per connection.
//
// Payload frames are handed to ZeroMQ without copying (the frame's Bytes owner is kept alive until
// ZeroMQ releases it) and received frames become Bytes that own the zmq message. Sends to a vanished
// router peer fail with Unavailable (ZMQ_ROUTER_MANDATORY) rather than being dropped silently.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/transport.h"

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
  // Optional CURVE keys (Z85 text). When server keys are set the bound socket requires CURVE.
  std::string curve_server_secret;
  std::string curve_server_public;  // used by Connect: the server's public key
  std::string curve_client_public;
  std::string curve_client_secret;
};

// CURVE keys of a job, as Z85 text files in one directory: server.pub, server.key (the key pair
// every bound socket uses) and client.pub, client.key (every connecting socket's pair).
// Authentication of nodes is the job token's job; CURVE encrypts every link and lets only holders
// of the server public key connect.
Status WriteCurveKeys(const std::string& dir);
// ZmqOptions with the keys of `dir` (ZmqOptions{} when dir is empty).
Result<ZmqOptions> CurveOptionsFromDir(const std::string& dir);

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

 private:
  Result<Envelope> ReadFrom(zmq::socket_t& socket, bool is_router, const std::string& name);

  ZmqOptions options_;
  std::unique_ptr<zmq::context_t> context_;
  std::unique_ptr<zmq::socket_t> router_;
  std::map<std::string, std::unique_ptr<zmq::socket_t>> dealers_;
  int wake_fd_ = -1;  // eventfd written by Interrupt()
  size_t next_poll_start_ = 0;
};

}  // namespace metaps
