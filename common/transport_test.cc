#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <thread>

#include "common/inproc_transport.h"
#include "common/zmq_transport.h"

namespace metaps {
namespace {

using std::chrono::milliseconds;

// The same contract must hold for the real transport and its test double.
class TransportContractTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::unique_ptr<Transport> Make() {
    if (GetParam() == "zmq") return std::make_unique<ZmqTransport>();
    return std::make_unique<InprocTransport>(network_);
  }
  std::string Endpoint() { return GetParam() == "zmq" ? "tcp://127.0.0.1:0" : ""; }
  std::shared_ptr<InprocNetwork> network_ = std::make_shared<InprocNetwork>();
};

TEST_P(TransportContractTest, RequestAndReplyKeepFramesAndRouting) {
  auto server = Make();
  auto client = Make();
  auto ep = server->Bind(Endpoint());
  ASSERT_TRUE(ep.ok()) << ep.status();
  ASSERT_TRUE(client->Connect("srv", *ep).ok());

  std::vector<float> big(100000, 1.5f);
  ASSERT_TRUE(client->Send({"srv", {Bytes::CopyString("hdr"), Bytes::FromVector(big)}}).ok());
  auto req = server->Recv(milliseconds(5000));
  ASSERT_TRUE(req.ok()) << req.status();
  ASSERT_EQ(req->frames.size(), 2u);
  EXPECT_EQ(req->frames[0].AsStringView(), "hdr");
  ASSERT_TRUE(req->frames[1].Aligned<float>().IsArrayOf<float>());
  auto vals = req->frames[1].Aligned<float>();
  EXPECT_EQ(vals.As<float>().size(), 100000u);
  EXPECT_EQ(vals.As<float>()[99999], 1.5f);
  ASSERT_EQ(req->peer[0], '@');

  ASSERT_TRUE(server->Send({req->peer, {Bytes::CopyString("reply")}}).ok());
  auto rep = client->Recv(milliseconds(5000));
  ASSERT_TRUE(rep.ok()) << rep.status();
  EXPECT_EQ(rep->peer, "srv");
  EXPECT_EQ(rep->frames[0].AsStringView(), "reply");
}

TEST_P(TransportContractTest, RecvTimesOutAndInterruptWakesIt) {
  auto t = Make();
  ASSERT_TRUE(t->Bind(Endpoint()).ok());
  EXPECT_EQ(t->Recv(milliseconds(20)).status().code(), StatusCode::kDeadlineExceeded);
  std::thread waker([&] {
    std::this_thread::sleep_for(milliseconds(50));
    t->Interrupt();
  });
  EXPECT_EQ(t->Recv(milliseconds(10000)).status().code(), StatusCode::kCancelled);
  waker.join();
}

TEST_P(TransportContractTest, SendToUnknownPeerIsUnavailable) {
  auto t = Make();
  EXPECT_EQ(t->Send({"nobody", {Bytes::CopyString("x")}}).code(), StatusCode::kUnavailable);
}

TEST(ZmqCurveTest, EncryptedLinksWorkAndPlainPeersAreShutOut) {
  std::string dir = std::filesystem::temp_directory_path() / ("metaps-curve-" + std::to_string(getpid()));
  ASSERT_TRUE(WriteCurveKeys(dir).ok());
  auto keys = CurveOptionsFromDir(dir);
  ASSERT_TRUE(keys.ok()) << keys.status();
  ZmqTransport server(*keys), client(*keys), plain(ZmqOptions{.send_timeout_ms = 200});
  auto ep = server.Bind("tcp://127.0.0.1:0");
  ASSERT_TRUE(ep.ok());
  ASSERT_TRUE(client.Connect("srv", *ep).ok());
  ASSERT_TRUE(plain.Connect("srv", *ep).ok());
  (void)plain.Send({"srv", {Bytes::CopyString("plain")}});  // may time out: no handshake completes
  ASSERT_TRUE(client.Send({"srv", {Bytes::CopyString("sealed")}}).ok());
  auto got = server.Recv(milliseconds(5000));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->frames[0].AsStringView(), "sealed");
  // The unencrypted peer never completes the handshake: nothing of it arrives.
  EXPECT_EQ(server.Recv(milliseconds(500)).status().code(), StatusCode::kDeadlineExceeded);
  std::filesystem::remove_all(dir);
  EXPECT_FALSE(CurveOptionsFromDir(dir).ok());
}

INSTANTIATE_TEST_SUITE_P(Transports, TransportContractTest, ::testing::Values("zmq", "inproc"));

}  // namespace
}  // namespace metaps
