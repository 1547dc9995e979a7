#include <gtest/gtest.h>

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

INSTANTIATE_TEST_SUITE_P(Transports, TransportContractTest, ::testing::Values("zmq", "inproc"));

}  // namespace
}  // namespace metaps
