// CURVE authentication: a ZAP handler (ZeroMQ RFC 27) that admits only listed client keys.
//
// libzmq asks the handler bound at inproc://zeromq.zap.01 of a socket's context about every CURVE
// handshake on that socket; without a handler it admits every client that knows the server's
// public key. ZapHandler binds that endpoint in a given context and answers on its own thread:
// 200 for a client public key in its CurveAllowList, 400 for any other key, mechanism or domain.
// Each rejection is counted and logged with the peer's address and key (Z85).
//
// Ownership: a ZapHandler borrows the context; it must be destroyed before the context is
// terminated (the destructor stops and joins the thread, which closes the handler socket).
// One per context: a second Start in the same context fails (the endpoint is taken).
// Thread-safety: rejected() and accepted() may be read from any thread.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/logging.h"
#include "common/status.h"

namespace zmq {
class context_t;
class socket_t;
}  // namespace zmq

namespace metaps {

// The ZAP domain every metaps CURVE server sets (ZMQ_ZAP_DOMAIN); the handler refuses others.
inline constexpr const char* kZapDomain = "metaps";

// The client public keys a CURVE server accepts, each with a label (the node it belongs to).
class CurveAllowList {
 public:
  // Adds a Z85 public key (40 characters). InvalidArgument for anything else.
  Status Add(const std::string& z85, const std::string& label = "");
  // Reads an authorized_keys file: one "<z85 key> [label]" per line; blank lines and lines
  // starting with '#' are skipped. Errors name the file and line.
  static Result<CurveAllowList> FromFile(const std::string& path);

  // The label of a 32-byte binary key, or nullptr when the key is not listed.
  const std::string* Find(const std::string& binary_key) const;
  bool empty() const { return keys_.empty(); }
  size_t size() const { return keys_.size(); }

 private:
  std::map<std::string, std::string> keys_;  // binary key -> label
};

// Z85 text of 32 key bytes (what the logs and the key files show).
std::string KeyToZ85(const std::string& binary_key);

// One ZAP request (RFC 27) as the server socket sends it.
struct ZapRequest {
  std::string version, request_id, domain, address, identity, mechanism;
  std::vector<std::string> credentials;
};

struct ZapDecision {
  std::string status_code;  // "200" or "400"
  std::string status_text;
  std::string user_id;      // the key's label when accepted
};

// The handler's policy, without sockets: accept CURVE in kZapDomain from a listed key.
ZapDecision DecideZap(const ZapRequest& request, const CurveAllowList& allow);

class ZapHandler {
 public:
  // Binds inproc://zeromq.zap.01 in `context` (before returning, so sockets bound afterwards are
  // covered) and starts answering. `log` may be null (rejections are then only counted).
  static Result<std::unique_ptr<ZapHandler>> Start(zmq::context_t& context, CurveAllowList allow, Logger log);
  ~ZapHandler();
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  uint64_t accepted() const { return accepted_.load(std::memory_order_relaxed); }
  uint64_t rejected() const { return rejected_.load(std::memory_order_relaxed); }

 private:
  ZapHandler(CurveAllowList allow, Logger log, std::unique_ptr<zmq::socket_t> socket, int stop_fd);
  void Loop();
  void Answer(const ZapRequest& request, const ZapDecision& decision);
  void Record(const ZapRequest& request, const ZapDecision& decision);

  const CurveAllowList allow_;
  Logger log_;
  std::unique_ptr<zmq::socket_t> socket_;  // used only by thread_ once it runs
  int stop_fd_ = -1;                       // eventfd written by the destructor
  std::atomic<uint64_t> accepted_{0}, rejected_{0};
  std::map<std::string, uint64_t> rejections_by_key_;  // thread_ only: for rate-limited logs
  std::thread thread_;
};

}  // namespace metaps
