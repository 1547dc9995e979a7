// Wire messages: a Cap'n Proto header in frame 0, raw payload frames after it.
//
// Decoding never trusts the sender: a truncated, garbled or oversized header, an unknown type, or
// payload sizes that disagree with the header give an InvalidArgument status (the server answers
// it with a typed error reply and keeps serving). Sizes are checked before anything is allocated.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/bytes.h"
#include "common/status.h"

namespace metaps {

enum class MsgType : uint16_t {
  kUnknown = 0,
  kError = 1,
  kPull = 2,
  kPullReply = 3,
  kPush = 4,
  kPushAck = 5,
  kPullDense = 6,
  kPullDenseReply = 7,
  kPushDense = 8,
  kCheckpoint = 9,
  kCheckpointAck = 10,
  kPing = 11,
  kPong = 12,
  kStats = 13,
  kStatsReply = 14,
  kShutdown = 15,
  kShutdownAck = 16,
  kControl = 17,
  kControlReply = 18,
  kExport = 19,
  kExportAck = 20,
};
constexpr uint16_t kMaxMsgType = 20;

const char* MsgTypeName(MsgType t);

struct Header {
  MsgType type = MsgType::kUnknown;
  std::string job_id;
  std::string sender;
  uint64_t request_id = 0;
  uint64_t epoch = 0;
  std::string auth;
  std::string table;
  uint64_t num_keys = 0;
  uint32_t dim = 0;
  uint64_t step = 0;
  uint16_t error_code = 0;
  std::string error_message;
  std::string meta;
  int32_t worker_id = -1;
};

// Largest header frame accepted, and most keys one message may declare.
constexpr size_t kMaxHeaderBytes = 64 * 1024;
constexpr uint64_t kMaxKeysPerMessage = 1ULL << 26;

Bytes EncodeHeader(const Header& h);
Result<Header> DecodeHeader(const Bytes& frame);

struct Message {
  Header header;
  std::vector<Bytes> payload;
};

// Frames of a message: the encoded header first.
std::vector<Bytes> ToFrames(const Message& m);
Result<Message> FromFrames(std::vector<Bytes> frames);

// A reply to `request` carrying `status` as a typed error.
Message ErrorReply(const Header& request, const Status& status);
// The Status an error reply carries (OK for any other type).
Status StatusFromReply(const Header& reply);

}  // namespace metaps
