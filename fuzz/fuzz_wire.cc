// fuzz_wire: untrusted bytes -> frames -> FromFrames -> ps::Server::Handle over an in-memory store.
//
// Properties checked (a violation aborts):
//   - decoding never crashes; a refused message is InvalidArgument, answered as the server's loop
//     answers it (ErrorReply), and that reply decodes again;
//   - a decoded header re-encodes to the same header;
//   - Handle answers every request of this job with its success reply or a typed error
//     (kError carrying a StatusCode), echoes the request id, and drops only requests with the
//     wrong job id or token; every reply decodes again (a client must be able to read it);
//   - a pull reply carries num_keys * dim floats.
// Frame layout: fuzz/wire_frames.h.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "common/memory_storage.h"
#include "common/wire.h"
#include "fuzz/fuzz_util.h"
#include "fuzz/wire_frames.h"
#include "ps/param_store.h"
#include "ps/server.h"
#include "ps/table_spec.h"

namespace metaps::fuzz {
namespace {

const std::vector<ps::TableSpec>& Tables() {
  static const std::vector<ps::TableSpec> tables = [] {
    auto cfg = Config::ParseString(R"(
      [[tables]]
      name = "emb"
      dim = 4
      optimizer = "sgd"
      lr = 0.5
      [[tables]]
      name = "item"
      dim = 3
      optimizer = "adam"
      lr = 0.01
      [[tables]]
      name = "w"
      dim = 5
      dense = true
      optimizer = "adagrad"
      lr = 0.1
    )");
    FUZZ_CHECK(cfg.ok(), cfg.status().ToString());
    auto t = ps::ParseTableSpecs(*cfg);
    FUZZ_CHECK(t.ok(), t.status().ToString());
    return *t;
  }();
  return tables;
}

const Logger& QuietLogger() {
  static const Logger logger = MakeLogger("fuzz-server", "", "off");
  return logger;
}

void CheckSameHeader(const Header& a, const Header& b) {
  FUZZ_CHECK(a.type == b.type && a.job_id == b.job_id && a.sender == b.sender && a.request_id == b.request_id &&
                 a.epoch == b.epoch && a.auth == b.auth && a.table == b.table && a.num_keys == b.num_keys &&
                 a.dim == b.dim && a.step == b.step && a.error_code == b.error_code &&
                 a.error_message == b.error_message && a.meta == b.meta && a.worker_id == b.worker_id,
             "header does not survive encode(decode(x))");
}

void CheckDecodes(const Message& reply, const char* what) {
  auto back = FromFrames(ToFrames(reply));
  FUZZ_CHECK(back.ok(), std::string(what) + " does not decode: " + back.status().ToString());
  FUZZ_CHECK(back->header.type == reply.header.type && back->header.request_id == reply.header.request_id,
             std::string(what) + " changed in transit");
}

MsgType SuccessReplyOf(MsgType t) {
  switch (t) {
    case MsgType::kPull: return MsgType::kPullReply;
    case MsgType::kPush: return MsgType::kPushAck;
    case MsgType::kPullDense: return MsgType::kPullDenseReply;
    case MsgType::kPushDense: return MsgType::kPushAck;
    case MsgType::kCheckpoint: return MsgType::kCheckpointAck;
    case MsgType::kStats: return MsgType::kStatsReply;
    case MsgType::kPing: return MsgType::kPong;
    case MsgType::kShutdown: return MsgType::kShutdownAck;
    default: return MsgType::kError;  // the server handles nothing else
  }
}

}  // namespace
}  // namespace metaps::fuzz

using namespace metaps;        // NOLINT
using namespace metaps::fuzz;  // NOLINT

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  uint8_t flags = 0;
  std::vector<Bytes> frames = SplitFrames(data, size, &flags);

  if (!frames.empty()) {
    auto h = DecodeHeader(frames[0]);
    if (h.ok()) {
      auto again = DecodeHeader(EncodeHeader(*h));
      FUZZ_CHECK(again.ok(), again.status().ToString());
      CheckSameHeader(*h, *again);
    } else {
      FUZZ_CHECK(h.status().code() == StatusCode::kInvalidArgument, h.status().ToString());
    }
  }

  auto msg = FromFrames(std::move(frames));
  if (!msg.ok()) {
    FUZZ_CHECK(msg.status().code() == StatusCode::kInvalidArgument, msg.status().ToString());
    Message reply = ErrorReply(Header{}, msg.status());  // what Server::Serve sends back
    CheckDecodes(reply, "error reply to an undecodable message");
    return 0;
  }

  // A fresh shard per input, so every input replays alone (no state leaks between runs).
  auto store = ps::ParamStore::Open(ps::StoreOptions{.cache_bytes = 64 << 10}, Tables(),
                                    std::make_unique<MemoryStorage>(std::vector<std::string>{"rows", "log", "meta"}));
  FUZZ_CHECK(store.ok(), store.status().ToString());
  ps::ServerOptions options;
  if (flags & kServerJobId) options.job_id = "job";
  if (flags & kServerAuth) options.auth = "tok";
  ps::Server server(options, /*transport=*/nullptr, std::move(store).value(), QuietLogger());

  // A checkpoint writes to the directory named in `meta`: keep it inside the scratch directory.
  const bool checkpoint = msg->header.type == MsgType::kCheckpoint && !msg->header.meta.empty();
  if (checkpoint) msg->header.meta = ScratchPath("checkpoint");

  const Header request = msg->header;
  bool reply_needed = false, shutdown = false;
  Message reply = server.Handle(*msg, &reply_needed, &shutdown);
  if (checkpoint) {
    std::error_code ec;
    std::filesystem::remove_all(ScratchPath("checkpoint"), ec);
  }

  const bool foreign = (!options.job_id.empty() && request.job_id != options.job_id) ||
                       (!options.auth.empty() && request.auth != options.auth);
  FUZZ_CHECK(reply_needed == !foreign, "a request was dropped (or answered) against the job/token rule");
  if (!reply_needed) return 0;
  FUZZ_CHECK(reply.header.request_id == request.request_id, "reply does not echo the request id");
  const MsgType ok_type = SuccessReplyOf(request.type);
  FUZZ_CHECK(reply.header.type == MsgType::kError || reply.header.type == ok_type,
             std::string("a ") + MsgTypeName(request.type) + " was answered with " + MsgTypeName(reply.header.type));
  if (reply.header.type == MsgType::kError) {
    Status s = StatusFromReply(reply.header);
    FUZZ_CHECK(!s.ok() && s.code() != StatusCode::kUnknown, "error reply without a typed status");
  }
  if (reply.header.type == MsgType::kPullReply) {
    FUZZ_CHECK(reply.payload.size() == 1 && reply.payload[0].size() == reply.header.num_keys * reply.header.dim * 4,
               "pull reply size disagrees with its header");
  }
  // Every reply must decode: replies never echo names over 4 KiB (ps/server.cc ReplyTo).
  CheckDecodes(reply, "server reply");
  return 0;
}
