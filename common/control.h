// The control protocol between nodes and the scheduler, and ControlLink, a node's side of it.
//
// Control messages are MsgType::kControl requests whose header `table` names the kind and whose
// `meta` carries a JSON body; the scheduler answers kControlReply with a JSON body, or a typed
// error. Kinds (see docs/scheduler.md):
//   register   {role: "server"|"worker", id, name, endpoint?}   -> {id, epoch}
//   membership {}                    -> {epoch, servers: [endpoints], num_workers, ...}; deferred
//                                       until every server has registered
//   heartbeat  {role, id}            -> {stop: bool}
//   clock      {worker, clock}       -> {clock, stop}; deferred until the consistency rule allows
//                                       round `clock` (BSP barrier, SSP bound, ASP at once)
//   progress   {worker, round, tasks, loss, ...} -> {}
//   done       {worker}              -> {}
//   leaving    {role, id}            -> {}; a node that has its last answer and exits (the
//                                       scheduler waits for every node's before it leaves)
//   status     {}                    -> the job's status
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "common/transport.h"
#include "common/wire.h"

namespace metaps {

struct NodeIdentity {
  std::string job_id;
  std::string auth;
  std::string role;  // "server", "worker", "tool"
  int32_t id = -1;
  std::string name;
};

// Synchronous calls to the scheduler. Not thread-safe: use one link per thread.
class ControlLink {
 public:
  ControlLink(std::unique_ptr<Transport> transport, std::string scheduler_endpoint, NodeIdentity self);

  Status Connect();
  // Sends `kind` with `body` and waits for its reply. DeadlineExceeded after `timeout`;
  // a typed error reply becomes its Status. For the kinds of LateReplyAnswers, a late reply to an
  // earlier call of the same kind on this link answers this one too.
  Result<nlohmann::json> Call(const std::string& kind, const nlohmann::json& body,
                              std::chrono::milliseconds timeout);

  const NodeIdentity& self() const { return self_; }

 private:
  std::unique_ptr<Transport> transport_;
  std::string endpoint_;
  NodeIdentity self_;
  uint64_t next_request_id_ = 1;
};

// Kinds whose reply does not depend on when they were asked (heartbeat, done, progress): a late
// reply to an earlier, timed-out call of the same kind is as good as the reply to a repeat. Not
// clock (its reply is for one round) nor register/membership.
bool LateReplyAnswers(const std::string& kind);

// Parses a control body (`meta`), naming the message kind on error.
Result<nlohmann::json> ParseControlBody(const Header& h);

}  // namespace metaps
