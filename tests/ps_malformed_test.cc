// Garbage, truncated and inconsistent messages sent to a real server process get typed error
// replies, and the server keeps serving.
#include <gtest/gtest.h>

#include "common/wire.h"
#include "common/zmq_transport.h"
#include "tests/test_util.h"

namespace metaps {
namespace {

using metaps::testing::ScratchDir;
using metaps::testing::ServerProcess;

constexpr const char* kConfig = R"(
[[tables]]
name = "emb"
dim = 4
optimizer = "sgd"
lr = 0.1
)";

class MalformedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ = ServerProcess::Start(dir_ / "s", kConfig);
    ASSERT_TRUE(t_.Connect("srv", server_.endpoint).ok());
  }

  // Sends raw frames and returns the decoded reply.
  Message Exchange(std::vector<Bytes> frames) {
    EXPECT_TRUE(t_.Send({"srv", std::move(frames)}).ok());
    auto env = t_.Recv(std::chrono::seconds(20));
    EXPECT_TRUE(env.ok()) << env.status();
    if (!env.ok()) return {};
    auto m = FromFrames(std::move(env->frames));
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? std::move(m).value() : Message{};
  }

  StatusCode ErrorOf(std::vector<Bytes> frames) {
    Message m = Exchange(std::move(frames));
    EXPECT_EQ(m.header.type, MsgType::kError);
    return StatusFromReply(m.header).code();
  }

  static Bytes H(Header h) { return EncodeHeader(h); }
  static Bytes KeysFrame(std::vector<uint64_t> k) { return Bytes::FromVector(std::move(k)); }
  static Bytes Floats(size_t n) { return Bytes::FromVector(std::vector<float>(n, 1.f)); }

  ScratchDir dir_{"ps-malformed"};
  ServerProcess server_;
  ZmqTransport t_;
};

TEST_F(MalformedTest, EveryBadRequestGetsATypedErrorAndTheServerKeepsServing) {
  Bytes good = H({.type = MsgType::kPull, .table = "emb", .num_keys = 2});
  // Not Cap'n Proto at all.
  EXPECT_EQ(ErrorOf({Bytes::CopyString("hello, server")}), StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorOf({Bytes::CopyString(std::string(4096, '\xab'))}), StatusCode::kInvalidArgument);
  // A valid header cut short.
  EXPECT_EQ(ErrorOf({Bytes::Copy(good.data(), good.size() - 8), KeysFrame({1, 2})}), StatusCode::kInvalidArgument);
  // Unknown table, wrong dim, keys and gradients of different lengths.
  EXPECT_EQ(ErrorOf({H({.type = MsgType::kPull, .table = "nope", .num_keys = 1}), KeysFrame({1})}),
            StatusCode::kNotFound);
  EXPECT_EQ(ErrorOf({H({.type = MsgType::kPush, .table = "emb", .num_keys = 2, .dim = 5}), KeysFrame({1, 2}),
                     Floats(10)}),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorOf({H({.type = MsgType::kPush, .table = "emb", .num_keys = 2, .dim = 4}), KeysFrame({1, 2}),
                     Floats(7)}),
            StatusCode::kInvalidArgument);
  // Keys frame not a whole number of u64, or disagreeing with the header.
  EXPECT_EQ(ErrorOf({H({.type = MsgType::kPull, .table = "emb", .num_keys = 1}), Bytes::CopyString("1234567")}),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(ErrorOf({H({.type = MsgType::kPull, .table = "emb", .num_keys = 3}), KeysFrame({1, 2})}),
            StatusCode::kInvalidArgument);
  // A header claiming 10^12 keys is refused before anything is allocated.
  EXPECT_EQ(ErrorOf({H({.type = MsgType::kPull, .table = "emb", .num_keys = 1000000000000ULL}), KeysFrame({1})}),
            StatusCode::kInvalidArgument);
  // Missing payload frames.
  EXPECT_EQ(ErrorOf({H({.type = MsgType::kPush, .table = "emb", .num_keys = 1, .dim = 4})}),
            StatusCode::kInvalidArgument);
  // A type a server does not serve, and a type number from the future.
  EXPECT_EQ(ErrorOf({H({.type = MsgType::kPullReply})}), StatusCode::kUnimplemented);
  Header future{.type = MsgType::kUnknown};
  EXPECT_EQ(ErrorOf({H(future)}), StatusCode::kUnimplemented);

  // Still alive, still correct.
  Message ok = Exchange({H({.type = MsgType::kPull, .request_id = 99, .table = "emb", .num_keys = 2}),
                         KeysFrame({1, 2})});
  EXPECT_EQ(ok.header.type, MsgType::kPullReply);
  EXPECT_EQ(ok.header.request_id, 99u);
  ASSERT_EQ(ok.payload.size(), 1u);
  EXPECT_EQ(ok.payload[0].size(), 2 * 4 * sizeof(float));
  EXPECT_TRUE(server_.proc.running());
}

TEST_F(MalformedTest, WrongJobIdIsDroppedNotAnswered) {
  ServerProcess guarded = ServerProcess::Start(dir_ / "g", kConfig, {"--job-id", "job-a"});
  ZmqTransport t;
  ASSERT_TRUE(t.Connect("g", guarded.endpoint).ok());
  Header stranger{.type = MsgType::kPing, .job_id = "job-b"};
  ASSERT_TRUE(t.Send({"g", {EncodeHeader(stranger)}}).ok());
  EXPECT_EQ(t.Recv(std::chrono::milliseconds(500)).status().code(), StatusCode::kDeadlineExceeded);
  Header member{.type = MsgType::kPing, .job_id = "job-a"};
  ASSERT_TRUE(t.Send({"g", {EncodeHeader(member)}}).ok());
  auto env = t.Recv(std::chrono::seconds(10));
  ASSERT_TRUE(env.ok());
  EXPECT_EQ(FromFrames(std::move(env->frames))->header.type, MsgType::kPong);
  EXPECT_NE(ServerProcess::ReadFile(guarded.log).find("job id 'job-b' is not this job's"), std::string::npos);
}

}  // namespace
}  // namespace metaps
