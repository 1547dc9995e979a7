#include "common/zmq_transport.h"

#include "common/files.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <zmq.hpp>

namespace metaps {
namespace {

// Frames below this size are copied: cheaper than the bookkeeping of a zero-copy hand-off.
constexpr size_t kCopyBelow = 1024;

void ReleaseOwner(void* /*data*/, void* hint) { delete static_cast<std::shared_ptr<const void>*>(hint); }

zmq::message_t ToZmq(const Bytes& b) {
  if (b.size() < kCopyBelow || !b.owner()) return zmq::message_t(b.data(), b.size());
  auto* hint = new std::shared_ptr<const void>(b.owner());
  return zmq::message_t(const_cast<std::byte*>(b.data()), b.size(), &ReleaseOwner, hint);
}

Bytes FromZmq(zmq::message_t&& m) {
  auto owner = std::make_shared<zmq::message_t>(std::move(m));
  return Bytes(owner->data(), owner->size(), owner);
}

Status ZmqError(const zmq::error_t& e, const std::string& what) {
  return Unavailable(what + ": " + e.what());
}

Result<std::string> ReadKey(const std::string& path) {
  std::ifstream in(path);
  std::string k;
  if (!(in >> k)) return NotFound("cannot read CURVE key " + path);
  if (k.size() != 40) return InvalidArgument(path + ": a CURVE key is 40 Z85 characters");
  return k;
}

}  // namespace

namespace {

Status WriteKeyPair(const std::string& base, std::string* pub_out) {
  char pub[41], sec[41];
  if (zmq_curve_keypair(pub, sec) != 0) return Unimplemented("this libzmq has no CURVE support");
  METAPS_RETURN_IF_ERROR(WriteFileWithMode(base + ".key", std::string(sec) + "\n", 0600));
  METAPS_RETURN_IF_ERROR(WriteFileWithMode(base + ".pub", std::string(pub) + "\n", 0644));
  *pub_out = pub;
  return Status::Ok();
}

bool ValidClientName(const std::string& n) {
  if (n.empty() || n == "server" || n == "authorized_keys") return false;
  for (char c : n) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return false;
  }
  return n[0] != '.';
}

}  // namespace

Status WriteCurveKeys(const std::string& dir, const std::vector<std::string>& clients) {
  if (clients.empty()) return InvalidArgument("CURVE keys need at least one client");
  for (const auto& c : clients) {
    if (!ValidClientName(c)) return InvalidArgument("'" + c + "' cannot name a CURVE client (letters, digits, -_.)");
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Internal("cannot create " + dir + ": " + ec.message());
  std::string pub;
  METAPS_RETURN_IF_ERROR(WriteKeyPair(dir + "/server", &pub));
  std::string authorized = "# CURVE client keys the job's bound sockets accept: <z85 public key> <name>\n";
  for (const auto& c : clients) {
    METAPS_RETURN_IF_ERROR(WriteKeyPair(dir + "/" + c, &pub));
    authorized += pub + " " + c + "\n";
  }
  return WriteFileWithMode(dir + "/authorized_keys", authorized, 0644);
}

Result<ZmqOptions> CurveOptionsFromDir(const std::string& dir, const std::string& client) {
  ZmqOptions o;
  if (dir.empty()) return o;
  if (!ValidClientName(client)) return InvalidArgument("'" + client + "' cannot name a CURVE client");
  METAPS_ASSIGN_OR_RETURN(o.curve_server_public, ReadKey(dir + "/server.pub"));
  if (std::filesystem::exists(dir + "/server.key")) {
    METAPS_ASSIGN_OR_RETURN(o.curve_server_secret, ReadKey(dir + "/server.key"));
  }
  METAPS_ASSIGN_OR_RETURN(o.curve_client_public, ReadKey(dir + "/" + client + ".pub"));
  METAPS_ASSIGN_OR_RETURN(o.curve_client_secret, ReadKey(dir + "/" + client + ".key"));
  if (std::filesystem::exists(dir + "/authorized_keys")) {
    METAPS_ASSIGN_OR_RETURN(o.curve_authorized_clients, CurveAllowList::FromFile(dir + "/authorized_keys"));
  } else if (std::filesystem::exists(dir + "/client.pub")) {
    METAPS_ASSIGN_OR_RETURN(std::string only, ReadKey(dir + "/client.pub"));
    METAPS_RETURN_IF_ERROR(o.curve_authorized_clients.Add(only, "client"));
  }
  return o;
}

ZmqTransport::ZmqTransport(ZmqOptions options)
    : options_(std::move(options)), context_(std::make_unique<zmq::context_t>(1)) {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

ZmqTransport::~ZmqTransport() {
  dealers_.clear();
  router_.reset();
  zap_.reset();  // its socket must close before the context terminates
  context_.reset();
  if (wake_fd_ >= 0) close(wake_fd_);
}

Result<std::string> ZmqTransport::Bind(const std::string& endpoint) {
  if (router_) return FailedPrecondition("transport is already bound");
  const bool curve = !options_.curve_server_secret.empty();
  if (!curve && !options_.curve_client_secret.empty()) {
    return FailedPrecondition("bind " + endpoint + ": CURVE keys without server.key; this node cannot bind");
  }
  if (curve && options_.curve_authorized_clients.empty()) {
    return FailedPrecondition("bind " + endpoint + ": CURVE with no authorized client keys would admit nobody");
  }
  if (curve && !zap_) {
    // Before the bind: libzmq admits every client of a CURVE socket whose context has no handler.
    METAPS_ASSIGN_OR_RETURN(zap_, ZapHandler::Start(*context_, options_.curve_authorized_clients, options_.log));
  }
  try {
    auto s = std::make_unique<zmq::socket_t>(*context_, zmq::socket_type::router);
    s->set(zmq::sockopt::router_mandatory, 1);
    s->set(zmq::sockopt::sndhwm, options_.send_hwm);
    s->set(zmq::sockopt::rcvhwm, options_.recv_hwm);
    s->set(zmq::sockopt::linger, options_.linger_ms);
    s->set(zmq::sockopt::sndtimeo, options_.send_timeout_ms);
    if (curve) {
      s->set(zmq::sockopt::curve_server, 1);
      s->set(zmq::sockopt::curve_secretkey, options_.curve_server_secret);
      s->set(zmq::sockopt::zap_domain, std::string(kZapDomain));
    }
    std::string ep = endpoint;
    // ZeroMQ's wildcard port is '*'; accept the conventional ':0' too.
    if (ep.size() > 2 && ep.compare(ep.size() - 2, 2, ":0") == 0) ep = ep.substr(0, ep.size() - 1) + "*";
    s->bind(ep);
    std::string last = s->get(zmq::sockopt::last_endpoint);
    router_ = std::move(s);
    return last;
  } catch (const zmq::error_t& e) {
    return ZmqError(e, "bind " + endpoint);
  }
}

Status ZmqTransport::Connect(const std::string& peer, const std::string& endpoint) {
  if (peer.empty() || peer[0] == '@') return InvalidArgument("peer name '" + peer + "' is reserved");
  try {
    auto s = std::make_unique<zmq::socket_t>(*context_, zmq::socket_type::dealer);
    s->set(zmq::sockopt::sndhwm, options_.send_hwm);
    s->set(zmq::sockopt::rcvhwm, options_.recv_hwm);
    s->set(zmq::sockopt::linger, options_.linger_ms);
    s->set(zmq::sockopt::sndtimeo, options_.send_timeout_ms);
    s->set(zmq::sockopt::immediate, 1);
    if (!options_.curve_server_public.empty()) {
      s->set(zmq::sockopt::curve_serverkey, options_.curve_server_public);
      s->set(zmq::sockopt::curve_publickey, options_.curve_client_public);
      s->set(zmq::sockopt::curve_secretkey, options_.curve_client_secret);
    }
    s->connect(endpoint);
    dealers_[peer] = std::move(s);
    return Status::Ok();
  } catch (const zmq::error_t& e) {
    return ZmqError(e, "connect " + endpoint);
  }
}

Status ZmqTransport::Disconnect(const std::string& peer) {
  if (dealers_.erase(peer) == 0) return NotFound("no connection named " + peer);
  return Status::Ok();
}

Status ZmqTransport::Send(Envelope env) {
  try {
    zmq::socket_t* socket = nullptr;
    bool routed = !env.peer.empty() && env.peer[0] == '@';
    if (routed) {
      if (!router_) return FailedPrecondition("reply to " + env.peer + " on an unbound transport");
      socket = router_.get();
    } else {
      auto it = dealers_.find(env.peer);
      if (it == dealers_.end()) return Unavailable("no connection named " + env.peer);
      socket = it->second.get();
    }
    if (env.frames.empty()) return InvalidArgument("message has no frames");
    if (routed) {
      zmq::message_t id(env.peer.data() + 1, env.peer.size() - 1);
      if (!socket->send(id, zmq::send_flags::sndmore)) return Unavailable("send to " + env.peer + " timed out");
    }
    for (size_t i = 0; i < env.frames.size(); ++i) {
      auto flags = i + 1 < env.frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
      zmq::message_t m = ToZmq(env.frames[i]);
      if (!socket->send(m, flags)) return Unavailable("send to " + env.peer + " timed out");
    }
    return Status::Ok();
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) return Unavailable("peer " + env.peer + " is gone");
    return ZmqError(e, "send to " + env.peer);
  }
}

Result<Envelope> ZmqTransport::ReadFrom(zmq::socket_t& socket, bool is_router, const std::string& name) {
  Envelope env;
  bool first = true;
  while (true) {
    zmq::message_t m;
    if (!socket.recv(m, zmq::recv_flags::dontwait)) return Internal("readable socket had no message");
    bool more = m.more();
    if (first && is_router) {
      env.peer.assign(1, '@').append(static_cast<const char*>(m.data()), m.size());
    } else {
      env.frames.push_back(FromZmq(std::move(m)));
    }
    first = false;
    if (!more) break;
  }
  if (!is_router) env.peer = name;
  return env;
}

Result<Envelope> ZmqTransport::Recv(std::chrono::milliseconds timeout) {
  std::vector<zmq::pollitem_t> items;
  std::vector<std::pair<zmq::socket_t*, const std::string*>> sockets;
  if (router_) sockets.emplace_back(router_.get(), nullptr);
  for (auto& [name, s] : dealers_) sockets.emplace_back(s.get(), &name);
  for (auto& [s, name] : sockets) items.push_back({s->handle(), 0, ZMQ_POLLIN, 0});
  items.push_back({nullptr, wake_fd_, ZMQ_POLLIN, 0});
  try {
    int n = zmq::poll(items.data(), items.size(), timeout);
    if (n == 0) return DeadlineExceeded("no message within " + std::to_string(timeout.count()) + " ms");
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return Cancelled("interrupted by a signal");
    return ZmqError(e, "poll");
  }
  if (items.back().revents & ZMQ_POLLIN) {
    uint64_t v;
    (void)!read(wake_fd_, &v, sizeof(v));
    return Cancelled("transport interrupted");
  }
  // Start at a rotating index so one busy peer cannot starve the others.
  size_t n = sockets.size();
  for (size_t k = 0; k < n; ++k) {
    size_t i = (next_poll_start_ + k) % n;
    if (items[i].revents & ZMQ_POLLIN) {
      next_poll_start_ = i + 1;
      bool is_router = sockets[i].second == nullptr;
      return ReadFrom(*sockets[i].first, is_router, is_router ? std::string() : *sockets[i].second);
    }
  }
  return DeadlineExceeded("spurious wake-up");
}

uint64_t ZmqTransport::curve_rejections() const { return zap_ ? zap_->rejected() : 0; }

void ZmqTransport::Interrupt() {
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
}

}  // namespace metaps
