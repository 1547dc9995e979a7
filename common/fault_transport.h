// FaultTransport: a Transport decorator that injects network faults, for tests.
//
// It wraps any transport (usually InprocTransport) and, on the sending side, drops messages,
// delays them, sends them twice, or cuts the link entirely (a partition). A dropped message is
// dropped silently, as by a network: Send still returns OK. Faults are drawn from a seeded
// generator, so a test is reproducible. Thread-safety: as the wrapped transport; the fault
// settings may be changed from any thread.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <random>

#include "common/transport.h"

namespace metaps {

struct FaultOptions {
  double drop = 0;       // probability that a message is lost
  double duplicate = 0;  // probability that a message is delivered twice
  uint32_t delay_ms = 0; // added before every send
  uint64_t seed = 1;
};

class FaultTransport final : public Transport {
 public:
  FaultTransport(std::unique_ptr<Transport> inner, FaultOptions options);

  Result<std::string> Bind(const std::string& endpoint) override { return inner_->Bind(endpoint); }
  Status Connect(const std::string& peer, const std::string& endpoint) override {
    return inner_->Connect(peer, endpoint);
  }
  Status Disconnect(const std::string& peer) override { return inner_->Disconnect(peer); }
  Status Send(Envelope env) override;
  Result<Envelope> Recv(std::chrono::milliseconds timeout) override;
  void Interrupt() override { inner_->Interrupt(); }

  // While partitioned, nothing is sent and everything received is discarded.
  void SetPartitioned(bool partitioned) { partitioned_ = partitioned; }
  void SetOptions(FaultOptions options);
  uint64_t dropped() const { return dropped_; }
  uint64_t duplicated() const { return duplicated_; }

 private:
  std::unique_ptr<Transport> inner_;
  std::mutex mu_;
  FaultOptions options_;  // GUARDED_BY(mu_)
  std::mt19937_64 rng_;   // GUARDED_BY(mu_)
  std::atomic<bool> partitioned_{false};
  std::atomic<uint64_t> dropped_{0}, duplicated_{0};
};

}  // namespace metaps
