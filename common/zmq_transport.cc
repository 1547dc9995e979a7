#include "common/zmq_transport.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <sys/stat.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <cstring>
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

Status WriteCurveKeys(const std::string& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Internal("cannot create " + dir + ": " + ec.message());
  for (const char* role : {"server", "client"}) {
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) != 0) return Unimplemented("this libzmq has no CURVE support");
    std::string base = dir + "/" + role;
    std::ofstream(base + ".pub") << pub << "\n";
    {
      std::ofstream k(base + ".key");
      k << sec << "\n";
    }
    chmod((base + ".key").c_str(), 0600);
  }
  return Status::Ok();
}

Result<ZmqOptions> CurveOptionsFromDir(const std::string& dir) {
  ZmqOptions o;
  if (dir.empty()) return o;
  METAPS_ASSIGN_OR_RETURN(o.curve_server_public, ReadKey(dir + "/server.pub"));
  METAPS_ASSIGN_OR_RETURN(o.curve_server_secret, ReadKey(dir + "/server.key"));
  METAPS_ASSIGN_OR_RETURN(o.curve_client_public, ReadKey(dir + "/client.pub"));
  METAPS_ASSIGN_OR_RETURN(o.curve_client_secret, ReadKey(dir + "/client.key"));
  return o;
}

ZmqTransport::ZmqTransport(ZmqOptions options)
    : options_(std::move(options)), context_(std::make_unique<zmq::context_t>(1)) {
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

ZmqTransport::~ZmqTransport() {
  dealers_.clear();
  router_.reset();
  context_.reset();
  if (wake_fd_ >= 0) close(wake_fd_);
}

Result<std::string> ZmqTransport::Bind(const std::string& endpoint) {
  if (router_) return FailedPrecondition("transport is already bound");
  try {
    auto s = std::make_unique<zmq::socket_t>(*context_, zmq::socket_type::router);
    s->set(zmq::sockopt::router_mandatory, 1);
    s->set(zmq::sockopt::sndhwm, options_.send_hwm);
    s->set(zmq::sockopt::rcvhwm, options_.recv_hwm);
    s->set(zmq::sockopt::linger, options_.linger_ms);
    s->set(zmq::sockopt::sndtimeo, options_.send_timeout_ms);
    if (!options_.curve_server_secret.empty()) {
      s->set(zmq::sockopt::curve_server, 1);
      s->set(zmq::sockopt::curve_secretkey, options_.curve_server_secret);
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
      env.peer = "@" + std::string(static_cast<const char*>(m.data()), m.size());
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

void ZmqTransport::Interrupt() {
  uint64_t one = 1;
  (void)!write(wake_fd_, &one, sizeof(one));
}

}  // namespace metaps
