// In-process transport: a test double for ZmqTransport with the same addressing rules.
//
// Transports that share one InprocNetwork reach each other; the network is an ordinary object
// owned by the test (no global registry), so one process can host several independent jobs.
// Frames are passed by reference (Bytes), never copied. Thread-safe like ZmqTransport.
#pragma once

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common/transport.h"

namespace metaps {

class InprocNetwork {
 public:
  struct Delivery {
    std::string from_id;        // sender's transport id
    std::string via_endpoint;   // set when the sender replied from its bound endpoint
    bool to_bound = false;      // arrived at the receiver's bound endpoint
    std::vector<Bytes> frames;
  };
  struct Mailbox {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Delivery> queue;  // GUARDED_BY(mu)
    int interrupts = 0;          // GUARDED_BY(mu)
  };

  std::string NewId();
  Status Register(const std::string& id, std::shared_ptr<Mailbox> box);
  Status BindEndpoint(const std::string& endpoint, const std::string& id);
  void Unregister(const std::string& id);
  // Mailbox of the transport bound at `endpoint`, or of transport `id`.
  std::shared_ptr<Mailbox> ByEndpoint(const std::string& endpoint, std::string* id = nullptr);
  std::shared_ptr<Mailbox> ById(const std::string& id);

 private:
  std::mutex mu_;
  uint64_t next_id_ = 0;                                        // GUARDED_BY(mu_)
  std::map<std::string, std::weak_ptr<Mailbox>> boxes_;         // GUARDED_BY(mu_)
  std::map<std::string, std::string> endpoints_;                // endpoint -> id, GUARDED_BY(mu_)
};

class InprocTransport final : public Transport {
 public:
  explicit InprocTransport(std::shared_ptr<InprocNetwork> network);
  ~InprocTransport() override;

  Result<std::string> Bind(const std::string& endpoint) override;
  Status Connect(const std::string& peer, const std::string& endpoint) override;
  Status Disconnect(const std::string& peer) override;
  Status Send(Envelope env) override;
  Result<Envelope> Recv(std::chrono::milliseconds timeout) override;
  void Interrupt() override;

  const std::string& id() const { return id_; }

 private:
  std::shared_ptr<InprocNetwork> network_;
  std::string id_;
  std::string bound_;
  std::shared_ptr<InprocNetwork::Mailbox> box_;
  std::map<std::string, std::string> peers_;       // name -> endpoint
  std::map<std::string, std::string> names_;       // endpoint -> name
};

}  // namespace metaps
