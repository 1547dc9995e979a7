#include "common/fault_transport.h"

#include <thread>

namespace metaps {

FaultTransport::FaultTransport(std::unique_ptr<Transport> inner, FaultOptions options)
    : inner_(std::move(inner)), options_(options), rng_(options.seed) {}

void FaultTransport::SetOptions(FaultOptions options) {
  std::lock_guard<std::mutex> l(mu_);
  options_ = options;
}

Status FaultTransport::Send(Envelope env) {
  bool drop, dup;
  uint32_t delay;
  {
    std::lock_guard<std::mutex> l(mu_);
    std::uniform_real_distribution<double> u(0, 1);
    drop = partitioned_ || u(rng_) < options_.drop;
    dup = u(rng_) < options_.duplicate;
    delay = options_.delay_ms;
  }
  if (delay) std::this_thread::sleep_for(std::chrono::milliseconds(delay));
  if (drop) {
    ++dropped_;
    return Status::Ok();
  }
  if (dup) {
    ++duplicated_;
    METAPS_RETURN_IF_ERROR(inner_->Send(env));  // frames are shared, not copied
  }
  return inner_->Send(std::move(env));
}

Result<Envelope> FaultTransport::Recv(std::chrono::milliseconds timeout) {
  while (true) {
    auto env = inner_->Recv(timeout);
    if (!env.ok() || !partitioned_) return env;
    ++dropped_;  // arrived across a partition: lost
  }
}

}  // namespace metaps
