// A server cut off by the network: a server and a client in two network namespaces made by the
// test, joined by a veth pair (both addresses live only inside those namespaces). The link is cut
// for a few seconds: a request without retries fails with a typed DEADLINE_EXCEEDED, a retried push
// succeeds once the link heals and is applied exactly once. Needs root (ip netns); skipped without.
//
// The client half is this test binary run again inside the client namespace
// (METAPS_NETNS_CLIENT names the shared scratch directory).
//
// A whole job across namespaces: the scheduler, 2 servers and 2 workers each in their own
// namespace, joined by veth pairs to a bridge in a hub namespace, started by hand as
// docs/running.md describes. One server is cut off mid-job for 5 s (longer than the scheduler's
// heartbeat timeout, so it is marked dead and comes back); the job must complete, the workers must
// have seen typed timeouts and retried, and with the push audit every acknowledged push must be
// stored exactly once (the server was never killed, so its dedupe window saw every retry).
#include <gtest/gtest.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "common/keys.h"
#include "common/subprocess.h"
#include "common/zmq_transport.h"
#include "ps/client.h"
#include "tests/audit_check.h"
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


// One namespace per role, each with a veth pair to a bridge in a hub namespace; all removed on
// destruction (deleting a namespace removes its end of each veth pair, and so the pair).
struct JobNetwork {
  static constexpr int kRoles = 5;  // scheduler, server 0, server 1, worker 0, worker 1
  std::string hub;
  std::vector<std::string> ns, hub_port;
  bool ok = false;

  static std::string Ip(int role) { return "10.78.0." + std::to_string(10 + role); }

  JobNetwork() {
    const std::string id = std::to_string(getpid() % 100000);
    hub = "mjh" + id;
    ok = Run({"/usr/sbin/ip", "netns", "add", hub}) == 0;
    ok = ok && Run({"/usr/sbin/ip", "-n", hub, "link", "add", "br0", "type", "bridge"}) == 0 &&
         Run({"/usr/sbin/ip", "-n", hub, "link", "set", "br0", "up"}) == 0;
    for (int r = 0; r < kRoles; ++r) {
      ns.push_back("mj" + std::to_string(r) + "n" + id);
      hub_port.push_back("mj" + std::to_string(r) + "h" + id);  // interface names: at most 15 bytes
      std::string inside = "mj" + std::to_string(r) + "r" + id;
      ok = ok && Run({"/usr/sbin/ip", "netns", "add", ns[r]}) == 0 &&
           Run({"/usr/sbin/ip", "-n", hub, "link", "add", hub_port[r], "type", "veth", "peer", "name", inside,
                "netns", ns[r]}) == 0 &&
           Run({"/usr/sbin/ip", "-n", hub, "link", "set", hub_port[r], "master", "br0"}) == 0 &&
           Run({"/usr/sbin/ip", "-n", hub, "link", "set", hub_port[r], "up"}) == 0 &&
           Run({"/usr/sbin/ip", "-n", ns[r], "addr", "add", Ip(r) + "/24", "dev", inside}) == 0 &&
           Run({"/usr/sbin/ip", "-n", ns[r], "link", "set", inside, "up"}) == 0 &&
           Run({"/usr/sbin/ip", "-n", ns[r], "link", "set", "lo", "up"}) == 0;
    }
  }
  ~JobNetwork() {
    for (const auto& n : ns) Run({"/usr/sbin/ip", "netns", "del", n});
    Run({"/usr/sbin/ip", "netns", "del", hub});
  }
  bool SetLink(int role, bool up) {
    return Run({"/usr/sbin/ip", "-n", hub, "link", "set", hub_port[role], up ? "up" : "down"}) == 0;
  }
  std::vector<std::string> Exec(int role, std::vector<std::string> argv) const {
    argv.insert(argv.begin(), {"/usr/sbin/ip", "netns", "exec", ns[role]});
    return argv;
  }
};

// The smallest round every worker has finished, from the scheduler's state file (-1: none yet).
int64_t MinClock(const std::string& state_file) {
  std::ifstream in(state_file);
  auto j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.contains("clocks") || j["clocks"].empty()) return -1;
  int64_t m = INT64_MAX;
  for (auto& c : j["clocks"]) m = std::min<int64_t>(m, c.get<int64_t>());
  return m;
}

TEST(NetnsTest, AJobAcrossNamespacesSurvivesAServerCutOffForSeconds) {
  if (std::getenv("METAPS_NETNS_CLIENT")) GTEST_SKIP() << "this process is the client half";
  if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  if (!std::filesystem::exists("/usr/sbin/ip")) GTEST_SKIP() << "no /usr/sbin/ip";
  ScratchDir dir("netns-job");
  // The derived job config ([[tables]], data) from a short `metaps run` on loopback.
  const char* src = std::getenv("METAPS_SOURCE");
  std::string prep = dir / "prep";
  {
    auto p = Subprocess::Spawn({MetapsBin(), "run", std::string(src ? src : ".") + "/examples/synthetic.toml",
                                "--run-dir", prep, "--set", "datagen.users=300", "--set", "train.epochs=1", "--quiet"},
                               prep + ".out");
    ASSERT_TRUE(p.ok());
    ASSERT_EQ(p->Wait(std::chrono::seconds(120)).value_or(-1), 0) << ServerProcess::ReadFile(prep + ".out");
  }
  JobNetwork net;
  if (!net.ok) GTEST_SKIP() << "cannot create network namespaces here (ip netns)";
  constexpr int kSched = 0, kServer0 = 1, kWorker0 = 3, kCut = 2;  // server 1 is cut off
  constexpr int64_t kRounds = 50, kCutAtRound = 10;
  std::string run = dir / "run";
  std::filesystem::create_directories(run + "/logs");
  std::filesystem::create_directories(run + "/servers");
  std::filesystem::copy_file(prep + "/job.toml", run + "/job.toml");
  std::ofstream(run + "/token") << "netns-job-token\n";
  std::string cfg = run + "/job.toml", token = run + "/token", state = run + "/scheduler.state";
  const std::vector<std::string> sets = {
      "--set", "train.rounds=" + std::to_string(kRounds),
      // Shorter than the cut; not much shorter, or a server slowed by a busy machine at the very end
      // is marked dead, never told the job is over, and keeps running (see docs/operations.md).
      "--set", "scheduler.heartbeat_timeout_ms=3000",
      "--set", "scheduler.state_file=\"" + state + "\"",
      "--set", "checkpoint.every_rounds=0",
      "--set", "train.validate_every=0",
      "--set", "worker.audit_pushes=true",
      "--set", "worker.request_timeout_ms=1000",
      "--set", "worker.max_retries=30"};
  auto with_sets = [&](std::vector<std::string> argv) {
    argv.insert(argv.end(), sets.begin(), sets.end());
    return argv;
  };
  const std::string sched_ep = "tcp://" + JobNetwork::Ip(kSched) + ":7000";
  auto scheduler = Subprocess::Spawn(net.Exec(kSched, with_sets({MetapsBin(), "scheduler", "-c", cfg, "--bind", sched_ep,
                                                                 "--http-port", "-1", "--token-file", token,
                                                                 "--endpoint-file", run + "/scheduler.endpoint"})),
                                     run + "/logs/scheduler.log");
  ASSERT_TRUE(scheduler.ok());
  ASSERT_TRUE(WaitForFileLine(run + "/scheduler.endpoint", std::chrono::seconds(30), &*scheduler).ok())
      << ServerProcess::ReadFile(run + "/logs/scheduler.log");
  std::vector<Subprocess> servers, workers;
  for (int s = 0; s < 2; ++s) {
    std::string shard = "shard-" + std::to_string(s);
    auto p = Subprocess::Spawn(
        net.Exec(kServer0 + s, with_sets({MetapsBin(), "server", "-c", cfg, "--shard-id", std::to_string(s),
                                          "--data-dir", run + "/servers/" + shard, "--scheduler", sched_ep,
                                          "--token-file", token, "--job-id", "synthetic", "--bind",
                                          "tcp://" + JobNetwork::Ip(kServer0 + s) + ":7100", "--endpoint-file",
                                          run + "/servers/" + shard + ".endpoint"})),
        run + "/logs/server-" + std::to_string(s) + ".log");
    ASSERT_TRUE(p.ok());
    servers.push_back(std::move(p).value());
  }
  for (int w = 0; w < 2; ++w) {
    auto p = Subprocess::Spawn(net.Exec(kWorker0 + w, with_sets({MetapsBin(), "worker", "-c", cfg, "--id",
                                                                 std::to_string(w), "--scheduler", sched_ep,
                                                                 "--token-file", token, "--run-dir", run})),
                               run + "/logs/worker-" + std::to_string(w) + ".log");
    ASSERT_TRUE(p.ok());
    workers.push_back(std::move(p).value());
  }
  auto logs = [&] {
    std::string all;
    for (std::string n : {"scheduler", "server-0", "server-1", "worker-0", "worker-1"}) {
      all += "--- " + n + "\n" + ServerProcess::ReadFile(run + "/logs/" + n + ".log");
    }
    return all;
  };

  // Mid-job: cut server 1 off for 5 s, then heal.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (MinClock(state) < kCutAtRound && std::chrono::steady_clock::now() < deadline && workers[0].running() &&
         workers[1].running()) {
    std::this_thread::sleep_for(milliseconds(20));
  }
  int64_t cut_at = MinClock(state);
  ASSERT_GE(cut_at, kCutAtRound) << logs();
  ASSERT_LT(cut_at, kRounds) << "the job ended before the cut";
  ASSERT_TRUE(net.SetLink(kCut, false));
  std::this_thread::sleep_for(std::chrono::seconds(5));
  int64_t during_cut = MinClock(state);
  ASSERT_TRUE(net.SetLink(kCut, true));
  std::cout << "cut server 1 off at round " << cut_at << " for 5 s (round " << during_cut << " when healed)\n";

  for (int w = 0; w < 2; ++w) {
    auto code = workers[w].Wait(std::chrono::seconds(90));
    ASSERT_TRUE(code.ok()) << "worker " << w << " did not finish\n" << logs();
    EXPECT_EQ(*code, 0) << logs();
  }
  for (int s = 0; s < 2; ++s) {
    auto code = servers[s].Wait(std::chrono::seconds(20));
    EXPECT_TRUE(code.ok()) << "server " << s << " still runs: " << code.status() << "\n" << logs();
    EXPECT_EQ(code.value_or(0), 0) << logs();
  }
  EXPECT_EQ(scheduler->Wait(std::chrono::seconds(20)).value_or(-1), 0) << logs();
  EXPECT_TRUE(std::filesystem::exists(run + "/report.json")) << logs();

  // The cut stalled the job (BSP) and the workers saw typed timeouts and retried.
  EXPECT_LT(during_cut, kRounds);
  std::string w0 = ServerProcess::ReadFile(run + "/logs/worker-0.log");
  std::string w1 = ServerProcess::ReadFile(run + "/logs/worker-1.log");
  EXPECT_TRUE((w0 + w1).find("shard 1: DEADLINE_EXCEEDED") != std::string::npos) << logs();
  EXPECT_TRUE((w0 + w1).find("with the same request id") != std::string::npos) << logs();
  // The scheduler missed the cut server's heartbeats, marked it dead and took it back.
  std::string sl = ServerProcess::ReadFile(run + "/logs/scheduler.log");
  EXPECT_NE(sl.find("server 1 missed heartbeats"), std::string::npos) << sl;
  EXPECT_NE(sl.find("server 1 is alive again"), std::string::npos) << sl;
  std::smatch m;
  std::regex dup("server 1 stats: .*\"duplicate_pushes\":([0-9]+)");
  if (std::regex_search(w0, m, dup)) std::cout << "server 1 answered " << m[1] << " repeated pushes from its record\n";
  else ADD_FAILURE() << "worker 0 logged no stats of server 1\n" << w0;

  // Retries were idempotent: every acknowledged push stored exactly once.
  metaps::testing::AckCounts counts;
  auto records = metaps::testing::CountAcknowledgedPushes(run + "/audit", &counts);
  ASSERT_TRUE(records.ok()) << records.status();
  auto c = metaps::testing::CompareWithFinalCheckpoint(run, counts, dir / "inspect");
  ASSERT_TRUE(c.ok()) << c.status();
  c->records = *records;
  std::cout << "[ audit    ] " << c->ToString() << std::endl;
  EXPECT_GT(c->records, 0u);
  EXPECT_EQ(c->lost_rows, 0u) << c->ToString();
  EXPECT_EQ(c->stored, c->acked) << c->ToString();
  EXPECT_EQ(c->rows_with_excess, 0u) << c->ToString();
}

}  // namespace
}  // namespace metaps
