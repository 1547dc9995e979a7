#include "common/control.h"

namespace metaps {

ControlLink::ControlLink(std::unique_ptr<Transport> transport, std::string scheduler_endpoint, NodeIdentity self)
    : transport_(std::move(transport)), endpoint_(std::move(scheduler_endpoint)), self_(std::move(self)) {}

Status ControlLink::Connect() { return transport_->Connect("scheduler", endpoint_); }

bool LateReplyAnswers(const std::string& kind) { return kind == "heartbeat" || kind == "done" || kind == "progress"; }

Result<nlohmann::json> ControlLink::Call(const std::string& kind, const nlohmann::json& body,
                                         std::chrono::milliseconds timeout) {
  Message m;
  m.header.type = MsgType::kControl;
  m.header.job_id = self_.job_id;
  m.header.auth = self_.auth;
  m.header.sender = self_.name;
  m.header.worker_id = self_.id;
  m.header.table = kind;
  m.header.meta = body.is_null() ? "{}" : body.dump();  // `{}` as an argument is JSON null
  m.header.request_id = next_request_id_++;
  METAPS_RETURN_IF_ERROR(transport_->Send({"scheduler", ToFrames(m)}));
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return DeadlineExceeded("scheduler did not answer '" + kind + "' in time");
    auto env = transport_->Recv(left);
    if (!env.ok()) {
      if (env.status().code() == StatusCode::kCancelled) continue;
      if (env.status().code() == StatusCode::kDeadlineExceeded) {
        return DeadlineExceeded("scheduler did not answer '" + kind + "' in time");
      }
      return env.status();
    }
    auto reply = FromFrames(std::move(env->frames));
    if (!reply.ok()) continue;
    if (reply->header.request_id != m.header.request_id) {
      // A reply to an earlier call that timed out. For kinds whose answer does not depend on the
      // moment it was asked (see LateReplyAnswers), it answers this call too: otherwise a heartbeat
      // answered "stop" just after its call timed out is lost, and the scheduler, which counted
      // that node as told, may already have left.
      if (!LateReplyAnswers(kind) || reply->header.table != kind || reply->header.request_id >= m.header.request_id) {
        continue;
      }
    }
    METAPS_RETURN_IF_ERROR(StatusFromReply(reply->header));
    return ParseControlBody(reply->header);
  }
}

Result<nlohmann::json> ParseControlBody(const Header& h) {
  if (h.meta.empty()) return nlohmann::json::object();
  auto j = nlohmann::json::parse(h.meta, nullptr, false);
  if (j.is_null()) return nlohmann::json::object();
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgument("control message '" + h.table + "' has a body that is not a JSON object");
  }
  return j;
}

}  // namespace metaps
