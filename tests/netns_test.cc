// A server cut off by the network: a server and a client in two network namespaces made by the
// test, joined by a veth pair (both addresses live only inside those namespaces). The link is cut
// for a few seconds: a request without retries fails with a typed DEADLINE_EXCEEDED, a retried push
// succeeds once the link heals and is applied exactly once. Needs root (ip netns); skipped without.
//
// The client half is this test binary run again inside the client namespace
// (METAPS_NETNS_CLIENT names the shared scratch directory).
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "common/keys.h"
#include "common/subprocess.h"
#include "common/zmq_transport.h"
#include "ps/client.h"
#include "tests/test_util.h"

namespace metaps {
namespace {

using metaps::testing::MetapsBin;
using metaps::testing::ScratchDir;
using metaps::testing::ServerProcess;
using std::chrono::milliseconds;

constexpr const char* kServerIp = "10.77.0.1";
constexpr const char* kClientIp = "10.77.0.2";

int Run(const std::vector<std::string>& argv) {
  auto p = Subprocess::Spawn(argv, "/dev/null");
  if (!p.ok()) return -1;
  return p->Wait(std::chrono::seconds(20)).value_or(-1);
}

// Two namespaces and a veth pair between them, removed on destruction.
struct Namespaces {
  std::string srv, cli, vs, vc;
  bool ok = false;
  Namespaces() {
    std::string id = std::to_string(getpid() % 100000);
    srv = "mps" + id;
    cli = "mpc" + id;
    vs = "mvs" + id;
    vc = "mvc" + id;
    ok = Run({"/usr/sbin/ip", "netns", "add", srv}) == 0 && Run({"/usr/sbin/ip", "netns", "add", cli}) == 0 &&
         Run({"/usr/sbin/ip", "-n", srv, "link", "add", vs, "type", "veth", "peer", "name", vc, "netns", cli}) == 0 &&
         Run({"/usr/sbin/ip", "-n", srv, "addr", "add", std::string(kServerIp) + "/24", "dev", vs}) == 0 &&
         Run({"/usr/sbin/ip", "-n", cli, "addr", "add", std::string(kClientIp) + "/24", "dev", vc}) == 0 &&
         Run({"/usr/sbin/ip", "-n", srv, "link", "set", vs, "up"}) == 0 &&
         Run({"/usr/sbin/ip", "-n", cli, "link", "set", vc, "up"}) == 0 &&
         Run({"/usr/sbin/ip", "-n", srv, "link", "set", "lo", "up"}) == 0 &&
         Run({"/usr/sbin/ip", "-n", cli, "link", "set", "lo", "up"}) == 0;
  }
  ~Namespaces() {
    Run({"/usr/sbin/ip", "netns", "del", srv});
    Run({"/usr/sbin/ip", "netns", "del", cli});
  }
  bool SetLink(bool up) { return Run({"/usr/sbin/ip", "-n", srv, "link", "set", vs, up ? "up" : "down"}) == 0; }
};

bool WaitForFile(const std::string& path, std::chrono::seconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (std::filesystem::exists(path)) return true;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return false;
}

TEST(NetnsTest, ACutOffServerGivesTypedTimeoutsAndRetriesApplyOnceAfterHealing) {
  if (std::getenv("METAPS_NETNS_CLIENT")) GTEST_SKIP() << "this process is the client half";
  if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  Namespaces ns;
  if (!ns.ok) GTEST_SKIP() << "cannot create network namespaces here (ip netns)";
  ScratchDir dir("netns");
  std::string cfg = dir / "job.toml";
  std::ofstream(cfg) << "[[tables]]\nname = \"emb\"\ndim = 4\noptimizer = \"sgd\"\nlr = 1.0\ninit = \"zeros\"\n";
  std::string endpoint = std::string("tcp://") + kServerIp + ":7100";
  auto server = Subprocess::Spawn({"/usr/sbin/ip", "netns", "exec", ns.srv, MetapsBin(), "server", "--config", cfg,
                                   "--data-dir", dir / "db", "--bind", endpoint, "--endpoint-file", dir / "endpoint"},
                                  dir / "server.log");
  ASSERT_TRUE(server.ok());
  ASSERT_TRUE(WaitForFileLine(dir / "endpoint", std::chrono::seconds(30), &*server).ok())
      << ServerProcess::ReadFile(dir / "server.log");

  setenv("METAPS_NETNS_CLIENT", dir.path().c_str(), 1);
  auto client = Subprocess::Spawn({"/usr/sbin/ip", "netns", "exec", ns.cli, SelfExecutable(),
                                   "--gtest_filter=NetnsClient.*"},
                                  dir / "client.log");
  unsetenv("METAPS_NETNS_CLIENT");
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(WaitForFile(dir / "ready", std::chrono::seconds(30))) << ServerProcess::ReadFile(dir / "client.log");
  ASSERT_TRUE(ns.SetLink(false));  // the server is cut off
  std::ofstream(dir / "cut") << "1\n";
  std::this_thread::sleep_for(std::chrono::seconds(3));
  ASSERT_TRUE(ns.SetLink(true));
  std::ofstream(dir / "healed") << "1\n";
  auto code = client->Wait(std::chrono::seconds(60));
  ASSERT_TRUE(code.ok());
  std::string log = ServerProcess::ReadFile(dir / "client.log");
  EXPECT_EQ(*code, 0) << log;
  EXPECT_NE(log.find("[  PASSED  ] 1 test"), std::string::npos) << log;
  EXPECT_TRUE(server->running()) << "the server must outlive the cut";
}

// The client half, inside the client namespace.
TEST(NetnsClient, PushesAcrossACut) {
  const char* d = std::getenv("METAPS_NETNS_CLIENT");
  if (!d) GTEST_SKIP() << "run by NetnsTest inside its client namespace";
  std::string dir = d;
  ShardMap map{0, {std::string("tcp://") + kServerIp + ":7100"}};
  ps::PsClient once(ps::ClientOptions{.sender = "once", .request_timeout_ms = 500, .max_retries = 0},
                    std::make_unique<ZmqTransport>(), map);
  ps::PsClient patient(ps::ClientOptions{.sender = "patient", .request_timeout_ms = 700, .max_retries = 30},
                       std::make_unique<ZmqTransport>(), map);
  ASSERT_TRUE(once.Start().ok());
  ASSERT_TRUE(patient.Start().ok());
  std::vector<Key> keys = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<float> ones(keys.size() * 4, 1.f);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(patient.Push("emb", keys, ones).get().ok());
  std::vector<Key> other = {100};
  ASSERT_TRUE(once.Pull("emb", other).get().ok());  // connected before the cut
  std::ofstream(dir + "/ready") << "1\n";
  ASSERT_TRUE(WaitForFile(dir + "/cut", std::chrono::seconds(30)));

  // No retries: a typed, transient error.
  Status cut = once.Push("emb", other, std::vector<float>(4, 1.f)).get();
  EXPECT_EQ(cut.code(), StatusCode::kDeadlineExceeded) << cut;
  EXPECT_TRUE(cut.IsTransient());
  // Retried with the same request id until the link heals; then applied once.
  Status retried = patient.Push("emb", keys, ones).get();
  EXPECT_TRUE(retried.ok()) << retried;
  ASSERT_TRUE(WaitForFile(dir + "/healed", std::chrono::seconds(30)));

  auto r = patient.Pull("emb", keys).get();
  ASSERT_TRUE(r.ok()) << r.status();
  for (float v : r->values) EXPECT_EQ(v, -6.f) << "5 pushes before the cut + the retried one, exactly once";
  // The timed-out push may still arrive late (TCP delivers what was sent): at most once.
  auto late = patient.Pull("emb", other).get();
  ASSERT_TRUE(late.ok());
  EXPECT_TRUE(late->values[0] == 0.f || late->values[0] == -1.f) << late->values[0];
  auto stats = patient.Stats().get();
  if (stats.ok()) std::cout << "server stats after the cut: " << (*stats)[0] << "\n";
}

}  // namespace
}  // namespace metaps
