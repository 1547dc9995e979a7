#include "common/wire.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include "common/schema/wire.capnp.h"

namespace metaps {

const char* MsgTypeName(MsgType t) {
  static const char* kNames[] = {"unknown", "error", "pull", "pullReply", "push", "pushAck",
                                 "pullDense", "pullDenseReply", "pushDense", "checkpoint",
                                 "checkpointAck", "ping", "pong", "stats", "statsReply",
                                 "shutdown", "shutdownAck", "control", "controlReply",
                                 "export", "exportAck"};
  auto i = static_cast<uint16_t>(t);
  return i <= kMaxMsgType ? kNames[i] : "invalid";
}

Bytes EncodeHeader(const Header& h) {
  capnp::MallocMessageBuilder builder(128);
  auto b = builder.initRoot<wire::Header>();
  b.setType(static_cast<wire::MsgType>(h.type));
  b.setJobId(h.job_id);
  b.setSender(h.sender);
  b.setRequestId(h.request_id);
  b.setEpoch(h.epoch);
  b.setAuth(kj::arrayPtr(reinterpret_cast<const kj::byte*>(h.auth.data()), h.auth.size()));
  b.setTable(h.table);
  b.setNumKeys(h.num_keys);
  b.setDim(h.dim);
  b.setStep(h.step);
  b.setErrorCode(h.error_code);
  b.setErrorMessage(h.error_message);
  b.setMeta(h.meta);
  b.setWorkerId(h.worker_id);
  kj::Array<capnp::word> words = capnp::messageToFlatArray(builder);
  auto bytes = words.asBytes();
  return Bytes::Copy(bytes.begin(), bytes.size());
}

Result<Header> DecodeHeader(const Bytes& frame) {
  if (frame.size() == 0) return InvalidArgument("empty header frame");
  if (frame.size() > kMaxHeaderBytes) {
    return InvalidArgument("header frame of " + std::to_string(frame.size()) + " bytes exceeds " +
                           std::to_string(kMaxHeaderBytes));
  }
  if (frame.size() % sizeof(capnp::word) != 0) {
    return InvalidArgument("header frame of " + std::to_string(frame.size()) +
                           " bytes is not a whole number of Cap'n Proto words");
  }
  Bytes aligned = frame.Aligned<capnp::word>();
  kj::ArrayPtr<const capnp::word> words(reinterpret_cast<const capnp::word*>(aligned.data()),
                                        aligned.size() / sizeof(capnp::word));
  Header h;
  kj::Maybe<kj::Exception> err = kj::runCatchingExceptions([&]() {
    capnp::ReaderOptions opts;
    opts.traversalLimitInWords = kMaxHeaderBytes / sizeof(capnp::word);
    opts.nestingLimit = 8;
    capnp::FlatArrayMessageReader reader(words, opts);
    auto r = reader.getRoot<wire::Header>();
    uint16_t type = static_cast<uint16_t>(r.getType());
    h.type = type <= kMaxMsgType ? static_cast<MsgType>(type) : MsgType::kUnknown;
    h.job_id = r.getJobId();
    h.sender = r.getSender();
    h.request_id = r.getRequestId();
    h.epoch = r.getEpoch();
    auto auth = r.getAuth();
    h.auth.assign(reinterpret_cast<const char*>(auth.begin()), auth.size());
    h.table = r.getTable();
    h.num_keys = r.getNumKeys();
    h.dim = r.getDim();
    h.step = r.getStep();
    h.error_code = r.getErrorCode();
    h.error_message = r.getErrorMessage();
    h.meta = r.getMeta();
    h.worker_id = r.getWorkerId();
  });
  KJ_IF_MAYBE(e, err) {
    return InvalidArgument(std::string("malformed header: ") + e->getDescription().cStr());
  }
  return h;
}

std::vector<Bytes> ToFrames(const Message& m) {
  std::vector<Bytes> frames;
  frames.reserve(1 + m.payload.size());
  frames.push_back(EncodeHeader(m.header));
  for (const Bytes& p : m.payload) frames.push_back(p);
  return frames;
}

Result<Message> FromFrames(std::vector<Bytes> frames) {
  if (frames.empty()) return InvalidArgument("message has no frames");
  Message m;
  METAPS_ASSIGN_OR_RETURN(m.header, DecodeHeader(frames[0]));
  m.payload.assign(std::make_move_iterator(frames.begin() + 1), std::make_move_iterator(frames.end()));
  return m;
}

namespace {

// Longest text an error reply echoes or carries. A request's header may be up to kMaxHeaderBytes,
// and error messages quote its fields (e.g. "no table '<name>'"), so an unbounded reply could exceed
// kMaxHeaderBytes and be refused by the very peer it answers. Three fields of at most this size keep
// every error reply decodable.
constexpr size_t kMaxErrorTextBytes = 4096;

std::string Clip(const std::string& s) {
  if (s.size() <= kMaxErrorTextBytes) return s;
  return s.substr(0, kMaxErrorTextBytes) + "... (" + std::to_string(s.size()) + " bytes)";
}

}  // namespace

Message ErrorReply(const Header& request, const Status& status) {
  Message m;
  m.header.type = MsgType::kError;
  // Over-long names are not echoed (a clipped name would be a different, plausible one).
  if (request.job_id.size() <= kMaxErrorTextBytes) m.header.job_id = request.job_id;
  m.header.request_id = request.request_id;
  m.header.epoch = request.epoch;
  if (request.table.size() <= kMaxErrorTextBytes) m.header.table = request.table;
  m.header.error_code = static_cast<uint16_t>(status.code());
  m.header.error_message = Clip(status.message());
  return m;
}

Status StatusFromReply(const Header& reply) {
  if (reply.type != MsgType::kError) return Status::Ok();
  auto code = reply.error_code;
  if (code == 0 || code > static_cast<uint16_t>(StatusCode::kUnauthenticated)) {
    return Status(StatusCode::kUnknown, reply.error_message);
  }
  return Status(static_cast<StatusCode>(code), reply.error_message);
}

}  // namespace metaps
