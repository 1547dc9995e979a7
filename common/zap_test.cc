// CURVE authentication with real sockets on loopback: the ZAP handler admits listed client keys
// only, counts and logs the others, and keeps serving the authorized clients.
#include "common/zap.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <zmq.hpp>

#include "common/zmq_transport.h"

namespace metaps {
namespace {

using std::chrono::milliseconds;

// A key directory for one test: a server pair and the named client pairs, all authorized.
class CurveKeysTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (std::filesystem::temp_directory_path() /
            ("metaps-zap-" + std::to_string(getpid()) + "-" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name()))
               .string();
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // A logger whose lines the test can read.
  Logger CapturingLogger() {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(log_text_);
    return std::make_shared<spdlog::logger>("zap-test", sink);
  }

  std::string dir_;
  std::ostringstream log_text_;
};

// Sends on `client` and waits for `server` to receive it, retrying the send while the CURVE
// handshake is still in progress (the DEALER is ZMQ_IMMEDIATE: no link, no queueing).
Result<Envelope> SendAndReceive(ZmqTransport& client, ZmqTransport& server, const std::string& text) {
  for (int attempt = 0; attempt < 50; ++attempt) {
    if (client.Send({"srv", {Bytes::CopyString(text)}}).ok()) return server.Recv(milliseconds(10000));
  }
  return Unavailable("the authorized client never got a link");
}

TEST_F(CurveKeysTest, AuthorizedClientTalksUnlistedAndPlainClientsAreRefused) {
  ASSERT_TRUE(WriteCurveKeys(dir_, {"scheduler", "worker-0"}).ok());
  auto server_opts = CurveOptionsFromDir(dir_, "scheduler");
  ASSERT_TRUE(server_opts.ok()) << server_opts.status();
  server_opts->log = CapturingLogger();
  auto good_opts = CurveOptionsFromDir(dir_, "worker-0");
  ASSERT_TRUE(good_opts.ok()) << good_opts.status();

  // A valid key pair the job never listed, holding the server's public key all the same.
  char pub[41], sec[41];
  ASSERT_EQ(zmq_curve_keypair(pub, sec), 0);
  ZmqOptions rogue_opts{.send_timeout_ms = 200};
  rogue_opts.curve_server_public = server_opts->curve_server_public;
  rogue_opts.curve_client_public = pub;
  rogue_opts.curve_client_secret = sec;

  ZmqTransport server(*server_opts), good(*good_opts), rogue(rogue_opts), plain(ZmqOptions{.send_timeout_ms = 200});
  auto ep = server.Bind("tcp://127.0.0.1:0");
  ASSERT_TRUE(ep.ok()) << ep.status();
  ASSERT_TRUE(good.Connect("srv", *ep).ok());
  ASSERT_TRUE(rogue.Connect("srv", *ep).ok());
  ASSERT_TRUE(plain.Connect("srv", *ep).ok());

  auto got = SendAndReceive(good, server, "sealed");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->frames[0].AsStringView(), "sealed");
  ASSERT_TRUE(server.Send({got->peer, {Bytes::CopyString("answer")}}).ok());
  auto answer = good.Recv(milliseconds(10000));
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->frames[0].AsStringView(), "answer");

  // The unlisted client never gets a link: its send times out with a typed error and it hears
  // nothing back.
  EXPECT_EQ(rogue.Send({"srv", {Bytes::CopyString("let me in")}}).code(), StatusCode::kUnavailable);
  EXPECT_EQ(rogue.Recv(milliseconds(300)).status().code(), StatusCode::kDeadlineExceeded);
  // The plain client fails the handshake before any ZAP request (mechanism mismatch).
  (void)plain.Send({"srv", {Bytes::CopyString("plain")}});
  EXPECT_EQ(plain.Recv(milliseconds(300)).status().code(), StatusCode::kDeadlineExceeded);

  // The rejection is counted (the rogue keeps reconnecting: at least once) and logged with its
  // address and key. Wait for the handler thread rather than assume how fast it is.
  for (int i = 0; i < 1000 && server.curve_rejections() == 0; ++i) std::this_thread::sleep_for(milliseconds(10));
  EXPECT_GE(server.curve_rejections(), 1u);
  server_opts->log->flush();
  std::string log = log_text_.str();
  EXPECT_NE(log.find(pub), std::string::npos) << log;
  EXPECT_NE(log.find("127.0.0.1"), std::string::npos) << log;
  EXPECT_EQ(log.find(good_opts->curve_client_public), std::string::npos) << "the authorized key was logged as refused";

  // Nothing of the refused clients arrived, and the authorized client is still served.
  auto again = SendAndReceive(good, server, "still here");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->frames[0].AsStringView(), "still here");
  EXPECT_EQ(server.Recv(milliseconds(300)).status().code(), StatusCode::kDeadlineExceeded);
}

TEST_F(CurveKeysTest, EveryListedClientIsAdmittedUnderItsOwnKey) {
  ASSERT_TRUE(WriteCurveKeys(dir_, {"scheduler", "server-0", "worker-0", "worker-1"}).ok());
  auto server_opts = CurveOptionsFromDir(dir_, "server-0");
  ASSERT_TRUE(server_opts.ok()) << server_opts.status();
  EXPECT_EQ(server_opts->curve_authorized_clients.size(), 4u);
  ZmqTransport server(*server_opts);
  auto ep = server.Bind("tcp://127.0.0.1:0");
  ASSERT_TRUE(ep.ok()) << ep.status();
  for (std::string name : {"scheduler", "worker-0", "worker-1"}) {
    auto opts = CurveOptionsFromDir(dir_, name);
    ASSERT_TRUE(opts.ok()) << opts.status();
    ZmqTransport client(*opts);
    ASSERT_TRUE(client.Connect("srv", *ep).ok());
    auto got = SendAndReceive(client, server, name);
    ASSERT_TRUE(got.ok()) << name << ": " << got.status();
    EXPECT_EQ(got->frames[0].AsStringView(), name);
  }
  EXPECT_EQ(server.curve_rejections(), 0u);
}

TEST_F(CurveKeysTest, KeyFilesAreValidatedAndSecretsPrivate) {
  ASSERT_TRUE(WriteCurveKeys(dir_, {"worker-0"}).ok());
  EXPECT_EQ(std::filesystem::status(dir_ + "/worker-0.key").permissions() & std::filesystem::perms::others_read,
            std::filesystem::perms::none);
  EXPECT_EQ(std::filesystem::status(dir_ + "/server.key").permissions() & std::filesystem::perms::group_read,
            std::filesystem::perms::none);
  EXPECT_EQ(CurveOptionsFromDir(dir_, "worker-9").status().code(), StatusCode::kNotFound);
  EXPECT_EQ(CurveOptionsFromDir(dir_, "../etc").status().code(), StatusCode::kInvalidArgument);
  EXPECT_FALSE(WriteCurveKeys(dir_ + "-bad", {"a/b"}).ok());

  // A node holding only the public server key (a worker host) connects but cannot bind.
  std::filesystem::remove(dir_ + "/server.key");
  auto worker = CurveOptionsFromDir(dir_, "worker-0");
  ASSERT_TRUE(worker.ok()) << worker.status();
  ZmqTransport t(*worker);
  EXPECT_EQ(t.Bind("tcp://127.0.0.1:0").status().code(), StatusCode::kFailedPrecondition);

  std::ofstream(dir_ + "/authorized_keys", std::ios::app) << "not-a-key worker-9\n";
  auto bad = CurveAllowList::FromFile(dir_ + "/authorized_keys");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("authorized_keys:3"), std::string::npos) << bad.status();
}

TEST(ZapPolicyTest, AcceptsOnlyListedCurveKeysInTheMetapsDomain) {
  char pub[41], sec[41];
  ASSERT_EQ(zmq_curve_keypair(pub, sec), 0);
  CurveAllowList allow;
  ASSERT_TRUE(allow.Add(pub, "worker-3").ok());
  std::string bin(32, '\0');
  ASSERT_NE(zmq_z85_decode(reinterpret_cast<uint8_t*>(bin.data()), pub), nullptr);
  EXPECT_EQ(KeyToZ85(bin), pub);
  ZapRequest r{"1.0", "7", kZapDomain, "10.0.0.1", "", "CURVE", {bin}};
  ZapDecision ok = DecideZap(r, allow);
  EXPECT_EQ(ok.status_code, "200");
  EXPECT_EQ(ok.user_id, "worker-3");
  ZapRequest other = r;
  other.credentials[0][0] ^= 1;
  EXPECT_EQ(DecideZap(other, allow).status_code, "400");
  ZapRequest domain = r;
  domain.domain = "elsewhere";
  EXPECT_EQ(DecideZap(domain, allow).status_code, "400");
  ZapRequest null_mech = r;
  null_mech.mechanism = "NULL";
  null_mech.credentials.clear();
  EXPECT_EQ(DecideZap(null_mech, allow).status_code, "400");
  EXPECT_EQ(DecideZap(ZapRequest{"2.0", "1", kZapDomain, "", "", "CURVE", {bin}}, allow).status_code, "400");
}

TEST(ZapHandlerTest, OneHandlerPerContextAndItStopsCleanly) {
  auto context = std::make_unique<zmq::context_t>();
  CurveAllowList allow;
  auto first = ZapHandler::Start(*context, allow, nullptr);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(ZapHandler::Start(*context, allow, nullptr).status().code(), StatusCode::kFailedPrecondition);
  first->reset();   // joins its thread, which closes the handler socket ...
  context.reset();  // ... so terminating the context does not wait forever
}

}  // namespace
}  // namespace metaps
