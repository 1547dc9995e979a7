#include "common/zap.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <zmq.hpp>

namespace metaps {
namespace {

constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";
constexpr size_t kKeyBytes = 32;
// Rejections are logged the first time a key shows up and then every kLogEvery-th time, so a client
// that keeps opening connections cannot flood the log; the count says how often.
constexpr uint64_t kLogEvery = 100;
constexpr size_t kMaxTrackedKeys = 4096;

}  // namespace

std::string KeyToZ85(const std::string& binary_key) {
  // (append, not "<" + ...: GCC 12 warns falsely about that form with -Wrestrict.)
  if (binary_key.size() != kKeyBytes) {
    return std::string("<").append(std::to_string(binary_key.size())).append("-byte credential>");
  }
  char text[41];
  zmq_z85_encode(text, reinterpret_cast<const uint8_t*>(binary_key.data()), kKeyBytes);
  return std::string(text, 40);
}

Status CurveAllowList::Add(const std::string& z85, const std::string& label) {
  if (z85.size() != 40) return InvalidArgument("a CURVE public key is 40 Z85 characters, not '" + z85 + "'");
  std::string bin(kKeyBytes, '\0');
  if (zmq_z85_decode(reinterpret_cast<uint8_t*>(bin.data()), z85.c_str()) == nullptr) {
    return InvalidArgument("'" + z85 + "' is not Z85 text");
  }
  keys_[bin] = label;
  return Status::Ok();
}

Result<CurveAllowList> CurveAllowList::FromFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("cannot read authorized keys " + path);
  CurveAllowList list;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    std::istringstream fields(line);
    std::string key, label;
    if (!(fields >> key) || key[0] == '#') continue;
    fields >> label;
    METAPS_RETURN_IF_ERROR(list.Add(key, label).WithContext(path + ":" + std::to_string(n)));
  }
  return list;
}

const std::string* CurveAllowList::Find(const std::string& binary_key) const {
  auto it = keys_.find(binary_key);
  return it == keys_.end() ? nullptr : &it->second;
}

ZapDecision DecideZap(const ZapRequest& r, const CurveAllowList& allow) {
  if (r.version != "1.0") return {"400", "unsupported ZAP version", ""};
  if (r.mechanism != "CURVE") return {"400", "only CURVE clients are accepted", ""};
  if (r.domain != kZapDomain) return {"400", "unknown ZAP domain", ""};
  if (r.credentials.size() != 1 || r.credentials[0].size() != kKeyBytes) return {"400", "malformed CURVE credentials", ""};
  const std::string* label = allow.Find(r.credentials[0]);
  if (label == nullptr) return {"400", "client key not authorized", ""};
  return {"200", "OK", label->empty() ? KeyToZ85(r.credentials[0]) : *label};
}

Result<std::unique_ptr<ZapHandler>> ZapHandler::Start(zmq::context_t& context, CurveAllowList allow, Logger log) {
  int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return Internal(std::string("eventfd: ") + std::strerror(errno));
  try {
    auto s = std::make_unique<zmq::socket_t>(context, zmq::socket_type::rep);
    s->set(zmq::sockopt::linger, 0);
    s->bind(kZapEndpoint);
    return std::unique_ptr<ZapHandler>(new ZapHandler(std::move(allow), std::move(log), std::move(s), fd));
  } catch (const zmq::error_t& e) {
    close(fd);
    if (e.num() == EADDRINUSE) return FailedPrecondition("this context already has a ZAP handler");
    return Unavailable(std::string("ZAP handler: ") + e.what());
  }
}

ZapHandler::ZapHandler(CurveAllowList allow, Logger log, std::unique_ptr<zmq::socket_t> socket, int stop_fd)
    : allow_(std::move(allow)), log_(std::move(log)), socket_(std::move(socket)), stop_fd_(stop_fd) {
  thread_ = std::thread([this] { Loop(); });
}

ZapHandler::~ZapHandler() {
  uint64_t one = 1;
  (void)!write(stop_fd_, &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  close(stop_fd_);
}

void ZapHandler::Loop() {
  while (true) {
    zmq::pollitem_t items[] = {{socket_->handle(), 0, ZMQ_POLLIN, 0}, {nullptr, stop_fd_, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 2, std::chrono::milliseconds(-1));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;
      if (log_) log_->error("ZAP handler stopped: poll: {}", e.what());
      break;
    }
    if (items[1].revents & ZMQ_POLLIN) break;
    if (!(items[0].revents & ZMQ_POLLIN)) continue;
    std::vector<std::string> frames;
    try {
      while (true) {
        zmq::message_t m;
        if (!socket_->recv(m, zmq::recv_flags::dontwait)) break;
        frames.push_back(m.to_string());
        if (!m.more()) break;
      }
    } catch (const zmq::error_t& e) {
      if (log_) log_->error("ZAP handler stopped: recv: {}", e.what());
      break;
    }
    if (frames.empty()) continue;
    ZapRequest r;
    std::string* fields[] = {&r.version, &r.request_id, &r.domain, &r.address, &r.identity, &r.mechanism};
    for (size_t i = 0; i < frames.size(); ++i) {
      if (i < 6) *fields[i] = std::move(frames[i]);
      else r.credentials.push_back(std::move(frames[i]));
    }
    ZapDecision d = DecideZap(r, allow_);
    Record(r, d);
    Answer(r, d);
  }
  socket_.reset();  // closed on the thread that used it, before the context can terminate
}

void ZapHandler::Answer(const ZapRequest& r, const ZapDecision& d) {
  // A REP socket must answer every request, malformed ones included, or it stops receiving.
  const std::string* reply[] = {nullptr, &r.request_id, &d.status_code, &d.status_text, &d.user_id};
  static const std::string kVersion = "1.0";
  reply[0] = &kVersion;
  try {
    for (const std::string* f : reply) socket_->send(zmq::buffer(*f), zmq::send_flags::sndmore);
    socket_->send(zmq::message_t(), zmq::send_flags::none);  // no metadata
  } catch (const zmq::error_t& e) {
    if (log_) log_->error("ZAP reply: {}", e.what());
  }
}

void ZapHandler::Record(const ZapRequest& r, const ZapDecision& d) {
  if (d.status_code == "200") {
    accepted_.fetch_add(1, std::memory_order_relaxed);
    if (log_) log_->debug("CURVE client {} ({}) authorized from {}", d.user_id, KeyToZ85(r.credentials[0]), r.address);
    return;
  }
  uint64_t total = rejected_.fetch_add(1, std::memory_order_relaxed) + 1;
  std::string key = r.credentials.empty() ? "" : KeyToZ85(r.credentials[0]);
  if (rejections_by_key_.size() >= kMaxTrackedKeys) rejections_by_key_.clear();
  uint64_t n = ++rejections_by_key_[r.mechanism + "/" + key];
  if (!log_) return;
  if (n == 1 || n % kLogEvery == 0) {
    log_->warn("rejected {} handshake from {} with key {}: {} ({} times from this key, {} rejections in all)",
               r.mechanism.empty() ? "?" : r.mechanism, r.address.empty() ? "?" : r.address,
               key.empty() ? "-" : key, d.status_text, n, total);
  }
}

}  // namespace metaps
