// ControlLink against a hand-driven fake scheduler on the in-process transport: late replies.
#include "common/control.h"

#include <gtest/gtest.h>

#include <future>

#include "common/inproc_transport.h"

namespace metaps {
namespace {

using std::chrono::milliseconds;

struct FakeScheduler {
  std::shared_ptr<InprocNetwork> net = std::make_shared<InprocNetwork>();
  InprocTransport transport{net};
  std::string endpoint = transport.Bind("inproc://fake-scheduler").value();

  // Receives one control request (the envelope's peer and header).
  std::pair<std::string, Header> Receive() {
    auto env = transport.Recv(milliseconds(5000));
    EXPECT_TRUE(env.ok()) << env.status();
    auto m = FromFrames(std::move(env->frames));
    EXPECT_TRUE(m.ok()) << m.status();
    return {env->peer, m->header};
  }
  void Answer(const std::string& peer, const Header& request, const nlohmann::json& body) {
    Message m;
    m.header.type = MsgType::kControlReply;
    m.header.request_id = request.request_id;
    m.header.table = request.table;
    m.header.meta = body.dump();
    ASSERT_TRUE(transport.Send({peer, ToFrames(m)}).ok());
  }
};

ControlLink Link(FakeScheduler& s) {
  ControlLink l(std::make_unique<InprocTransport>(s.net), s.endpoint, NodeIdentity{"job", "", "server", 0, "server-0"});
  EXPECT_TRUE(l.Connect().ok());
  return l;
}

// The scheduler answers heartbeat 1 with stop=true only after that call timed out, then never
// answers again (it left): the repeat must take the late answer instead of waiting forever.
TEST(ControlLinkTest, LateHeartbeatReplyAnswersTheRepeat) {
  FakeScheduler s;
  ControlLink link = Link(s);
  auto first = link.Call("heartbeat", {{"role", "server"}, {"id", 0}}, milliseconds(50));
  EXPECT_EQ(first.status().code(), StatusCode::kDeadlineExceeded);
  auto [peer, h1] = s.Receive();
  auto second = std::async(std::launch::async, [&] { return link.Call("heartbeat", {{"role", "server"}, {"id", 0}}, milliseconds(5000)); });
  auto [peer2, h2] = s.Receive();  // the repeat arrives; it will not be answered
  EXPECT_GT(h2.request_id, h1.request_id);
  s.Answer(peer, h1, {{"stop", true}});
  auto r = second.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->value("stop", false));
}

// A late reply to an earlier clock call is for another round: it must not answer this one.
TEST(ControlLinkTest, LateClockReplyIsIgnored) {
  FakeScheduler s;
  ControlLink link = Link(s);
  EXPECT_EQ(link.Call("clock", {{"worker", 0}, {"clock", 1}}, milliseconds(50)).status().code(),
            StatusCode::kDeadlineExceeded);
  auto [peer, h1] = s.Receive();
  auto second = std::async(std::launch::async, [&] { return link.Call("clock", {{"worker", 0}, {"clock", 2}}, milliseconds(5000)); });
  auto [peer2, h2] = s.Receive();
  s.Answer(peer, h1, {{"clock", 1}});   // late, for round 1: ignored
  s.Answer(peer2, h2, {{"clock", 2}});  // the real answer
  auto r = second.get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->value("clock", 0), 2);
}

// A late reply of another kind never answers a call.
TEST(ControlLinkTest, LateReplyOfAnotherKindIsIgnored) {
  FakeScheduler s;
  ControlLink link = Link(s);
  EXPECT_FALSE(link.Call("progress", {{"worker", 0}}, milliseconds(50)).ok());
  auto [peer, h1] = s.Receive();
  auto second = std::async(std::launch::async, [&] { return link.Call("heartbeat", {{"role", "server"}, {"id", 0}}, milliseconds(300)); });
  (void)s.Receive();
  s.Answer(peer, h1, {{"stop", true}});
  EXPECT_EQ(second.get().status().code(), StatusCode::kDeadlineExceeded);
}

}  // namespace
}  // namespace metaps
