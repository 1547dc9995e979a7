// The scheduler's protocol over the in-process transport: membership, BSP and SSP rounds,
// dead-node detection, job end, rejection of strangers.
#include "scheduler/scheduler.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <unistd.h>
#include <thread>

#include "common/control.h"
#include "common/inproc_transport.h"

namespace metaps::scheduler {
namespace {

using std::chrono::milliseconds;

class SchedulerTest : public ::testing::Test {
 protected:
  void Start(SchedulerOptions o) {
    o.bind = "inproc://scheduler";
    o.job_id = "job";
    o.auth = "secret";
    scheduler_ = std::make_unique<Scheduler>(o, std::make_unique<InprocTransport>(net_), MakeLogger("sched", "", "warn"));
    auto ep = scheduler_->Bind();
    ASSERT_TRUE(ep.ok());
    endpoint_ = *ep;
    loop_ = std::thread([this] { (void)scheduler_->Serve(); });
  }
  void TearDown() override {
    if (scheduler_) scheduler_->Stop();
    if (loop_.joinable()) loop_.join();
  }
  std::unique_ptr<ControlLink> Link(const std::string& role, int id, const std::string& auth = "secret") {
    auto l = std::make_unique<ControlLink>(std::make_unique<InprocTransport>(net_), endpoint_,
                                           NodeIdentity{"job", auth, role, id, role + std::to_string(id)});
    EXPECT_TRUE(l->Connect().ok());
    return l;
  }
  static nlohmann::json Register(ControlLink& l, const std::string& endpoint = "") {
    nlohmann::json body = {{"role", l.self().role}, {"id", l.self().id}};
    if (!endpoint.empty()) body["endpoint"] = endpoint;
    auto r = l.Call("register", body, milliseconds(2000));
    EXPECT_TRUE(r.ok()) << r.status();
    return r.value_or(nlohmann::json());
  }

  std::shared_ptr<InprocNetwork> net_ = std::make_shared<InprocNetwork>();
  std::unique_ptr<Scheduler> scheduler_;
  std::string endpoint_;
  std::thread loop_;
};

TEST_F(SchedulerTest, MembershipWaitsForEveryServer) {
  Start({.num_servers = 2, .num_workers = 1});
  auto w = Link("worker", 0);
  Register(*w);
  auto pending = std::async(std::launch::async, [&] { return w->Call("membership", {}, milliseconds(5000)); });
  EXPECT_EQ(pending.wait_for(milliseconds(200)), std::future_status::timeout);
  auto s0 = Link("server", 0), s1 = Link("server", 1);
  Register(*s0, "tcp://127.0.0.1:1000");
  Register(*s1, "tcp://127.0.0.1:1001");
  auto m = pending.get();
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ((*m)["servers"], (nlohmann::json{"tcp://127.0.0.1:1000", "tcp://127.0.0.1:1001"}));
}

TEST_F(SchedulerTest, BspHoldsEachWorkerAtTheBarrierUntilAllArrive) {
  Start({.num_servers = 1, .num_workers = 2, .consistency = Consistency::kBsp});
  auto w0 = Link("worker", 0), w1 = Link("worker", 1);
  Register(*w0);
  Register(*w1);
  auto first = std::async(std::launch::async,
                          [&] { return w0->Call("clock", {{"worker", 0}, {"clock", 1}}, milliseconds(5000)); });
  EXPECT_EQ(first.wait_for(milliseconds(300)), std::future_status::timeout) << "worker 0 must wait for worker 1";
  auto second = w1->Call("clock", {{"worker", 1}, {"clock", 1}}, milliseconds(5000));
  ASSERT_TRUE(second.ok()) << second.status();
  auto released = first.get();
  ASSERT_TRUE(released.ok()) << released.status();
  EXPECT_EQ((*released)["clock"], 1);
}

TEST_F(SchedulerTest, SspLetsAWorkerRunAheadBoundedByStaleness) {
  Start({.num_servers = 1, .num_workers = 2, .consistency = Consistency::kSsp, .staleness = 1});
  auto w0 = Link("worker", 0), w1 = Link("worker", 1);
  Register(*w0);
  Register(*w1);
  EXPECT_TRUE(w0->Call("clock", {{"worker", 0}, {"clock", 1}}, milliseconds(1000)).ok());  // 1 <= 0 + 1
  auto blocked = std::async(std::launch::async,
                            [&] { return w0->Call("clock", {{"worker", 0}, {"clock", 2}}, milliseconds(5000)); });
  EXPECT_EQ(blocked.wait_for(milliseconds(300)), std::future_status::timeout) << "2 > 0 + 1: must wait";
  EXPECT_TRUE(w1->Call("clock", {{"worker", 1}, {"clock", 1}}, milliseconds(1000)).ok());
  EXPECT_TRUE(blocked.get().ok());
}

TEST_F(SchedulerTest, ASilentWorkerIsMarkedDeadAndReleasesTheBarrier) {
  Start({.num_servers = 1, .num_workers = 2, .heartbeat_timeout_ms = 300});
  auto w0 = Link("worker", 0), w1 = Link("worker", 1);
  Register(*w0);
  Register(*w1);
  // Worker 1 never heartbeats again; worker 0 keeps doing so while it waits.
  std::atomic<bool> waiting{true};
  std::thread beats([&] {
    auto hb = Link("worker", 0);
    while (waiting) {
      (void)hb->Call("heartbeat", {{"role", "worker"}, {"id", 0}}, milliseconds(1000));
      std::this_thread::sleep_for(milliseconds(50));
    }
  });
  auto r = w0->Call("clock", {{"worker", 0}, {"clock", 1}}, milliseconds(5000));
  waiting = false;
  beats.join();
  ASSERT_TRUE(r.ok()) << r.status();
  auto st = nlohmann::json::parse(scheduler_->StatusJson());
  EXPECT_FALSE(st["workers"][1]["alive"].get<bool>()) << st.dump();
  EXPECT_TRUE(st["workers"][0]["alive"].get<bool>());
  EXPECT_NE(scheduler_->MetricsText().find("metaps_node_alive{role=\"worker\",id=\"1\"} 0"), std::string::npos);
}

TEST_F(SchedulerTest, JobFinishesWhenEveryWorkerIsDoneAndServersAreToldToStop) {
  Start({.num_servers = 1, .num_workers = 1, .total_rounds = 2});
  auto s = Link("server", 0), w = Link("worker", 0);
  Register(*s, "tcp://127.0.0.1:1");
  Register(*w);
  auto stop = w->Call("clock", {{"worker", 0}, {"clock", 2}}, milliseconds(1000));
  ASSERT_TRUE(stop.ok()) << stop.status();
  EXPECT_TRUE((*stop)["stop"].get<bool>()) << "round 2 of 2 is past the end";
  ASSERT_TRUE(w->Call("done", {{"worker", 0}}, milliseconds(1000)).ok());
  auto hb = s->Call("heartbeat", {{"role", "server"}, {"id", 0}}, milliseconds(1000));
  ASSERT_TRUE(hb.ok());
  EXPECT_TRUE((*hb)["stop"].get<bool>());
  // The scheduler stays until every node said it is leaving: its last answers must not be lost
  // with its connections. A repeated heartbeat is still answered "stop".
  std::this_thread::sleep_for(milliseconds(300));
  auto again = s->Call("heartbeat", {{"role", "server"}, {"id", 0}}, milliseconds(1000));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE((*again)["stop"].get<bool>());
  EXPECT_TRUE(s->Call("leaving", {{"role", "server"}, {"id", 0}}, milliseconds(1000)).ok());
  EXPECT_TRUE(w->Call("leaving", {{"role", "worker"}, {"id", 0}}, milliseconds(1000)).ok());
  loop_.join();  // Serve returns by itself once every node left
  EXPECT_TRUE(scheduler_->finished());
}

TEST_F(SchedulerTest, TheEndIsABarrierEvenUnderAsp) {
  Start({.num_servers = 1, .num_workers = 2, .consistency = Consistency::kAsp, .total_rounds = 1});
  auto w0 = Link("worker", 0), w1 = Link("worker", 1);
  Register(*w0);
  Register(*w1);
  EXPECT_TRUE(w1->Call("clock", {{"worker", 1}, {"clock", 0}}, milliseconds(1000)).ok());
  auto end0 = std::async(std::launch::async,
                         [&] { return w0->Call("clock", {{"worker", 0}, {"clock", 1}}, milliseconds(5000)); });
  EXPECT_EQ(end0.wait_for(milliseconds(300)), std::future_status::timeout) << "worker 1 is still in round 0";
  auto end1 = w1->Call("clock", {{"worker", 1}, {"clock", 1}}, milliseconds(5000));
  ASSERT_TRUE(end1.ok());
  EXPECT_TRUE((*end1)["stop"].get<bool>());
  auto r0 = end0.get();
  ASSERT_TRUE(r0.ok());
  EXPECT_TRUE((*r0)["stop"].get<bool>());
}

// A shard double that answers checkpoint requests by creating the directory it was given.
class FakeShard {
 public:
  FakeShard(std::shared_ptr<InprocNetwork> net, const std::string& endpoint) : t_(net) {
    EXPECT_TRUE(t_.Bind(endpoint).ok());
    thread_ = std::thread([this] {
      while (!stop_) {
        auto env = t_.Recv(milliseconds(50));
        if (!env.ok()) continue;
        auto m = FromFrames(std::move(env->frames));
        if (!m.ok() || m->header.type != MsgType::kCheckpoint) continue;
        std::filesystem::create_directories(m->header.meta);
        ++checkpoints;
        Message ack;
        ack.header.type = MsgType::kCheckpointAck;
        ack.header.request_id = m->header.request_id;
        (void)t_.Send({env->peer, ToFrames(ack)});
      }
    });
  }
  ~FakeShard() {
    stop_ = true;
    thread_.join();
  }
  std::atomic<int> checkpoints{0};

 private:
  InprocTransport t_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST_F(SchedulerTest, CheckpointsAreAConsistentCutAtARoundBoundary) {
  std::string dir = std::filesystem::temp_directory_path() / ("metaps-sched-ckpt-" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  FakeShard shard(net_, "inproc://shard0");
  Start({.num_servers = 1, .num_workers = 2, .consistency = Consistency::kSsp, .staleness = 5,
         .checkpoint_every_rounds = 2, .checkpoint_keep = 1, .checkpoint_dir = dir});
  auto s0 = Link("server", 0), w0 = Link("worker", 0), w1 = Link("worker", 1);
  Register(*s0, "inproc://shard0");
  Register(*w0);
  Register(*w1);
  EXPECT_TRUE(w0->Call("clock", {{"worker", 0}, {"clock", 1}}, milliseconds(1000)).ok());
  // Round 2 is a checkpoint round: even under SSP, worker 0 waits for worker 1 to get there.
  auto held = std::async(std::launch::async,
                         [&] { return w0->Call("clock", {{"worker", 0}, {"clock", 2}}, milliseconds(5000)); });
  EXPECT_EQ(held.wait_for(milliseconds(300)), std::future_status::timeout);
  EXPECT_EQ(shard.checkpoints.load(), 0);
  EXPECT_TRUE(w1->Call("clock", {{"worker", 1}, {"clock", 1}}, milliseconds(1000)).ok());
  auto both = std::async(std::launch::async,
                         [&] { return w1->Call("clock", {{"worker", 1}, {"clock", 2}}, milliseconds(5000)); });
  ASSERT_TRUE(held.get().ok());
  ASSERT_TRUE(both.get().ok());
  EXPECT_EQ(shard.checkpoints.load(), 1);
  auto latest = LatestCheckpoint(dir);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(latest->first, 2u);
  auto manifest = nlohmann::json::parse(std::ifstream(latest->second + "/manifest.json"));
  EXPECT_EQ(manifest["clocks"], (nlohmann::json{2, 2}));
  std::filesystem::remove_all(dir);
}

TEST_F(SchedulerTest, ACheckpointNoShardAcknowledgesIsAbandonedAndTheRoundGoesOn) {
  std::string dir = std::filesystem::temp_directory_path() / ("metaps-sched-ckpt-lost-" + std::to_string(getpid()));
  InprocTransport silent(net_);  // a shard that died after registering: never answers
  ASSERT_TRUE(silent.Bind("inproc://silent-shard").ok());
  Start({.num_servers = 1, .num_workers = 1, .checkpoint_every_rounds = 1, .checkpoint_timeout_ms = 300,
         .checkpoint_dir = dir});
  auto s0 = Link("server", 0), w0 = Link("worker", 0);
  Register(*s0, "inproc://silent-shard");
  Register(*w0);
  auto r = w0->Call("clock", {{"worker", 0}, {"clock", 1}}, milliseconds(5000));
  ASSERT_TRUE(r.ok()) << r.status() << ": the round must be released once the checkpoint times out";
  EXPECT_FALSE(LatestCheckpoint(dir).ok()) << "an abandoned checkpoint is not a checkpoint";
  std::filesystem::remove_all(dir);
}

TEST_F(SchedulerTest, StrangersAreDroppedAndBadBodiesGetTypedErrors) {
  Start({.num_servers = 1, .num_workers = 1});
  auto stranger = Link("worker", 0, "wrong-token");
  auto r = stranger->Call("register", {{"role", "worker"}, {"id", 0}}, milliseconds(300));
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded);
  auto w = Link("worker", 0);
  EXPECT_EQ(w->Call("register", {{"role", "worker"}, {"id", 7}}, milliseconds(1000)).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(w->Call("teleport", {}, milliseconds(1000)).status().code(), StatusCode::kUnimplemented);
  std::this_thread::sleep_for(milliseconds(300));
  auto st = nlohmann::json::parse(scheduler_->StatusJson());
  EXPECT_EQ(st["rejected_messages"], 1);
}

// Servers send their store's statistics with each heartbeat; the scheduler shows the known ones
// per server in /status and as metaps_server_* samples in /metrics, and drops anything else.
TEST_F(SchedulerTest, ServerStoreStatisticsFromHeartbeatsAreExported) {
  Start({.num_servers = 2, .num_workers = 1});
  auto s0 = Link("server", 0), s1 = Link("server", 1);
  Register(*s0, "tcp://127.0.0.1:1000");
  Register(*s1, "tcp://127.0.0.1:1001");
  nlohmann::json store = {{"rows_cached", 12},       {"cache_hits", 34},  {"log_records_pending", 2},
                          {"rows_written", 5},       {"cache_misses", -3}, {"writebacks", "many"},
                          {"not_a_statistic", 99}};
  ASSERT_TRUE(s0->Call("heartbeat", {{"role", "server"}, {"id", 0}, {"store", store}}, milliseconds(1000)).ok());
  // A heartbeat whose store is not an object is still a heartbeat.
  ASSERT_TRUE(s1->Call("heartbeat", {{"role", "server"}, {"id", 1}, {"store", "garbage"}}, milliseconds(1000)).ok());
  const nlohmann::json want = {{"rows_cached", 12}, {"cache_hits", 34}, {"log_records_pending", 2}, {"rows_written", 5}};
  nlohmann::json st;
  for (int i = 0; i < 50; ++i) {  // the snapshot is published every 200 ms
    st = nlohmann::json::parse(scheduler_->StatusJson());
    if (st["servers"][0]["store"] == want) break;
    std::this_thread::sleep_for(milliseconds(50));
  }
  EXPECT_EQ(st["servers"][0]["store"], want) << st.dump();
  EXPECT_EQ(st["servers"][1]["store"], nlohmann::json::object()) << st.dump();
  const std::string metrics = scheduler_->MetricsText();
  for (const char* line : {"# TYPE metaps_server_cache_hits_total counter\n", "metaps_server_cache_hits_total{id=\"0\"} 34\n",
                           "# TYPE metaps_server_rows_cached gauge\n", "metaps_server_rows_cached{id=\"0\"} 12\n",
                           "metaps_server_log_records_pending{id=\"0\"} 2\n", "metaps_server_rows_written_total{id=\"0\"} 5\n"}) {
    EXPECT_NE(metrics.find(line), std::string::npos) << line << " not in\n" << metrics;
  }
  for (const char* absent : {"metaps_server_cache_misses_total{", "metaps_server_writebacks_total{", "{id=\"1\"} ",
                             "not_a_statistic"}) {
    EXPECT_EQ(metrics.find(absent), std::string::npos) << absent << " in\n" << metrics;
  }
}

}  // namespace
}  // namespace metaps::scheduler
