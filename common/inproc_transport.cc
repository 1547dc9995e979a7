#include "common/inproc_transport.h"

namespace metaps {

std::string InprocNetwork::NewId() {
  std::lock_guard<std::mutex> l(mu_);
  return "inproc-" + std::to_string(next_id_++);
}

Status InprocNetwork::Register(const std::string& id, std::shared_ptr<Mailbox> box) {
  std::lock_guard<std::mutex> l(mu_);
  boxes_[id] = box;
  return Status::Ok();
}

Status InprocNetwork::BindEndpoint(const std::string& endpoint, const std::string& id) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = endpoints_.find(endpoint);
  if (it != endpoints_.end() && boxes_.count(it->second) && !boxes_[it->second].expired()) {
    return Unavailable("endpoint " + endpoint + " is in use");
  }
  endpoints_[endpoint] = id;
  return Status::Ok();
}

void InprocNetwork::Unregister(const std::string& id) {
  std::lock_guard<std::mutex> l(mu_);
  boxes_.erase(id);
  for (auto it = endpoints_.begin(); it != endpoints_.end();) {
    it = it->second == id ? endpoints_.erase(it) : std::next(it);
  }
}

std::shared_ptr<InprocNetwork::Mailbox> InprocNetwork::ByEndpoint(const std::string& endpoint, std::string* id) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = endpoints_.find(endpoint);
  if (it == endpoints_.end()) return nullptr;
  if (id) *id = it->second;
  auto b = boxes_.find(it->second);
  return b == boxes_.end() ? nullptr : b->second.lock();
}

std::shared_ptr<InprocNetwork::Mailbox> InprocNetwork::ById(const std::string& id) {
  std::lock_guard<std::mutex> l(mu_);
  auto b = boxes_.find(id);
  return b == boxes_.end() ? nullptr : b->second.lock();
}

InprocTransport::InprocTransport(std::shared_ptr<InprocNetwork> network)
    : network_(std::move(network)), id_(network_->NewId()), box_(std::make_shared<InprocNetwork::Mailbox>()) {
  (void)network_->Register(id_, box_);
}

InprocTransport::~InprocTransport() { network_->Unregister(id_); }

Result<std::string> InprocTransport::Bind(const std::string& endpoint) {
  if (!bound_.empty()) return FailedPrecondition("transport is already bound");
  std::string ep = endpoint;
  if (ep.empty() || (ep.size() > 2 && ep.compare(ep.size() - 2, 2, ":0") == 0)) ep = "inproc://" + id_;
  METAPS_RETURN_IF_ERROR(network_->BindEndpoint(ep, id_));
  bound_ = ep;
  return ep;
}

Status InprocTransport::Connect(const std::string& peer, const std::string& endpoint) {
  if (peer.empty() || peer[0] == '@') return InvalidArgument("peer name '" + peer + "' is reserved");
  peers_[peer] = endpoint;
  names_[endpoint] = peer;
  return Status::Ok();
}

Status InprocTransport::Disconnect(const std::string& peer) {
  auto it = peers_.find(peer);
  if (it == peers_.end()) return NotFound("no connection named " + peer);
  names_.erase(it->second);
  peers_.erase(it);
  return Status::Ok();
}

Status InprocTransport::Send(Envelope env) {
  if (env.frames.empty()) return InvalidArgument("message has no frames");
  InprocNetwork::Delivery d;
  d.from_id = id_;
  d.frames = std::move(env.frames);
  std::shared_ptr<InprocNetwork::Mailbox> box;
  if (!env.peer.empty() && env.peer[0] == '@') {
    if (bound_.empty()) return FailedPrecondition("reply to " + env.peer + " on an unbound transport");
    box = network_->ById(env.peer.substr(1));
    d.via_endpoint = bound_;
  } else {
    auto it = peers_.find(env.peer);
    if (it == peers_.end()) return Unavailable("no connection named " + env.peer);
    box = network_->ByEndpoint(it->second);
    d.to_bound = true;
  }
  if (!box) return Unavailable("peer " + env.peer + " is gone");
  {
    std::lock_guard<std::mutex> l(box->mu);
    box->queue.push_back(std::move(d));
  }
  box->cv.notify_one();
  return Status::Ok();
}

Result<Envelope> InprocTransport::Recv(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(box_->mu);
  bool ready = box_->cv.wait_for(l, timeout, [&] { return !box_->queue.empty() || box_->interrupts > 0; });
  if (box_->interrupts > 0) {
    --box_->interrupts;
    return Cancelled("transport interrupted");
  }
  if (!ready) return DeadlineExceeded("no message within " + std::to_string(timeout.count()) + " ms");
  InprocNetwork::Delivery d = std::move(box_->queue.front());
  box_->queue.pop_front();
  l.unlock();
  Envelope env;
  env.frames = std::move(d.frames);
  if (d.to_bound) {
    env.peer = "@" + d.from_id;
  } else {
    auto it = names_.find(d.via_endpoint);
    env.peer = it == names_.end() ? "@" + d.from_id : it->second;
  }
  return env;
}

void InprocTransport::Interrupt() {
  {
    std::lock_guard<std::mutex> l(box_->mu);
    ++box_->interrupts;
  }
  box_->cv.notify_all();
}

}  // namespace metaps
