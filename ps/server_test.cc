// Server and client logic in one process over the in-process transport and in-memory storage
// (RocksDB for the restart tests at the end).
#include "ps/server.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/fault_transport.h"
#include "common/inproc_transport.h"
#include "common/memory_storage.h"
#include "common/rocksdb_storage.h"
#include "ps/client.h"

namespace metaps::ps {
namespace {

class InprocJob {
 public:
  explicit InprocJob(int shards, FaultOptions server_faults = {}) {
    auto cfg = Config::ParseString(R"(
      [[tables]]
      name = "emb"
      dim = 3
      optimizer = "sgd"
      lr = 1.0
      init = "zeros"
      [[tables]]
      name = "w"
      dim = 5
      dense = true
      optimizer = "sgd"
      lr = 1.0
      init = "zeros"
    )");
    auto tables = ParseTableSpecs(*cfg);
    EXPECT_TRUE(tables.ok()) << tables.status();
    for (int s = 0; s < shards; ++s) {
      auto store = ParamStore::Open(StoreOptions{}, *tables, std::make_unique<MemoryStorage>(std::vector<std::string>{"rows", "log", "meta"}));
      EXPECT_TRUE(store.ok()) << store.status();
      auto server = std::make_unique<Server>(ServerOptions{.bind = "inproc://shard-" + std::to_string(s), .shard_id = s},
                                             std::make_unique<FaultTransport>(std::make_unique<InprocTransport>(net_),
                                                                              server_faults),
                                             std::move(store).value(),
                                             MakeLogger("shard-" + std::to_string(s), "", "warn"));
      auto ep = server->Bind();
      EXPECT_TRUE(ep.ok());
      map_.endpoints.push_back(*ep);
      Server* raw = server.get();
      threads_.emplace_back([raw] { (void)raw->Serve(); });
      servers_.push_back(std::move(server));
    }
  }
  ~InprocJob() {
    for (auto& s : servers_) s->Stop();
    for (auto& t : threads_) t.join();
  }
  std::unique_ptr<PsClient> Client() { return Client(ClientOptions{}, nullptr); }
  // A client whose transport is `*faults` (owned by the client); nullptr: a clean link.
  std::unique_ptr<PsClient> Client(ClientOptions options, FaultTransport** faults, FaultOptions f = {}) {
    auto t = std::make_unique<FaultTransport>(std::make_unique<InprocTransport>(net_), f);
    if (faults) *faults = t.get();
    auto c = std::make_unique<PsClient>(options, std::move(t), map_);
    EXPECT_TRUE(c->Start().ok());
    return c;
  }
  Server& server(int i) { return *servers_[i]; }

 private:
  std::shared_ptr<InprocNetwork> net_ = std::make_shared<InprocNetwork>();
  ShardMap map_;
  std::vector<std::unique_ptr<Server>> servers_;
  std::vector<std::thread> threads_;
};

TEST(ServerTest, PullReturnsCallerOrderWithDuplicatesAcrossShards) {
  InprocJob job(3);
  auto client = job.Client();
  std::vector<Key> keys = {10, 20, 30, 10, 40, 20, 50};
  // grads row i = (i+1) in every element; sgd lr 1 from zeros gives -sum of the key's rows.
  std::vector<float> grads;
  for (size_t i = 0; i < keys.size(); ++i) grads.insert(grads.end(), 3, static_cast<float>(i + 1));
  ASSERT_TRUE(client->Push("emb", keys, grads).get().ok());
  auto r = client->Pull("emb", keys).get();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->dim, 3u);
  std::vector<float> want_row = {-(1.f + 4.f), -(2.f + 6.f), -3.f, -(1.f + 4.f), -5.f, -(2.f + 6.f), -7.f};
  for (size_t i = 0; i < keys.size(); ++i) {
    for (int d = 0; d < 3; ++d) EXPECT_EQ(r->values[i * 3 + d], want_row[i]) << "key index " << i;
  }
  // Every shard holds only its own keys.
  uint64_t pushed = 0;
  for (int s = 0; s < 3; ++s) pushed += job.server(s).counters().rows_pushed;
  EXPECT_EQ(pushed, 5u);  // unique keys
}

// One shard takes the client's fast paths: no duplicates (keys and grads sent as given, reply
// used in place) and duplicates (summed, then repeated in the caller's order).
TEST(ServerTest, OneShardPullsAndPushesWithAndWithoutDuplicates) {
  InprocJob job(1);
  auto client = job.Client();
  std::vector<Key> unique_keys;
  std::vector<float> grads;
  for (Key k = 0; k < 1000; ++k) {
    unique_keys.push_back(k * 7919);
    grads.insert(grads.end(), 3, static_cast<float>(k % 13));
  }
  ASSERT_TRUE(client->Push("emb", unique_keys, grads).get().ok());
  auto r = client->Pull("emb", unique_keys).get();
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->values.size(), unique_keys.size() * 3);
  for (size_t i = 0; i < unique_keys.size(); ++i) {
    for (int d = 0; d < 3; ++d) ASSERT_EQ(r->values[i * 3 + d], -static_cast<float>(i % 13)) << i;
  }
  // Duplicates after a run of unique keys, and at the start.
  std::vector<Key> keys = {unique_keys[5], unique_keys[6], unique_keys[7], unique_keys[5], unique_keys[5], unique_keys[7]};
  std::vector<float> g;
  for (size_t i = 0; i < keys.size(); ++i) g.insert(g.end(), 3, 1.0f);
  ASSERT_TRUE(client->Push("emb", keys, g).get().ok());
  r = client->Pull("emb", keys).get();
  ASSERT_TRUE(r.ok()) << r.status();
  const std::vector<float> want = {-5.f - 3, -6.f - 1, -7.f - 2, -5.f - 3, -5.f - 3, -7.f - 2};
  ASSERT_EQ(r->values.size(), keys.size() * 3);
  for (size_t i = 0; i < keys.size(); ++i) {
    for (int d = 0; d < 3; ++d) EXPECT_EQ(r->values[i * 3 + d], want[i]) << i;
  }
  EXPECT_EQ(job.server(0).counters().rows_pushed, 1000u + 3u);  // the duplicates were summed by the client
}

// The server counts the time its requests spend inside the store, per op, and reports it in its
// stats (bench ps sets it beside the row-memory floor). A failed request still counts its time.
TEST(ServerTest, StoreTimeIsCountedPerOpAndReported) {
  InprocJob job(1);
  auto client = job.Client();
  auto stats = [&] {
    auto s = client->Stats().get();
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? nlohmann::json::parse((*s)[0]) : nlohmann::json::object();
  };
  auto before = stats();
  EXPECT_EQ(before["pull_store_ns"], 0u);
  EXPECT_EQ(before["push_store_ns"], 0u);
  std::vector<Key> keys(5000);
  for (size_t i = 0; i < keys.size(); ++i) keys[i] = i * 31 + 1;
  ASSERT_TRUE(client->Pull("emb", keys).get().ok());
  auto after_pull = stats();
  EXPECT_GT(after_pull["pull_store_ns"].get<uint64_t>(), 0u);
  EXPECT_EQ(after_pull["push_store_ns"], 0u);
  ASSERT_TRUE(client->Push("emb", keys, std::vector<float>(keys.size() * 3, 1.0f)).get().ok());
  auto after_push = stats();
  EXPECT_EQ(after_push["pull_store_ns"], after_pull["pull_store_ns"]);
  EXPECT_GT(after_push["push_store_ns"].get<uint64_t>(), 0u);
  EXPECT_EQ(job.server(0).counters().push_store_ns, after_push["push_store_ns"].get<uint64_t>());
  // The store's helpers (default options: resolved for this machine) and their joins are reported.
  EXPECT_EQ(after_push["helper_threads"].get<int>(), StoreOptions::ResolveHelperThreads(-1));
  EXPECT_TRUE(after_push["helper_joins"].is_number_unsigned());
  // The push's log record is pending until a write-back covers it (one snapshot: both or neither).
  EXPECT_TRUE((after_push["log_records_pending"] == 1u && after_push["writebacks"] == 0u) ||
              (after_push["log_records_pending"] == 0u && after_push["writebacks"].get<uint64_t>() > 0))
      << after_push.dump();
  EXPECT_EQ(before["log_records_pending"], 0u);
  EXPECT_EQ(after_push["writeback_errors"], 0u);
  EXPECT_EQ(after_push["replayed_records"], 0u);
}

TEST(ServerTest, DenseTensorsArePulledAndPushedWhole) {
  InprocJob job(2);
  auto client = job.Client();
  std::vector<float> g = {1, 2, 3, 4, 5};
  ASSERT_TRUE(client->PushDense("w", g).get().ok());
  auto w = client->PullDense("w").get();
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(*w, (std::vector<float>{-1, -2, -3, -4, -5}));
  auto bad = client->PushDense("w", std::vector<float>{1, 2}).get();
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
}

TEST(ServerTest, ErrorsComeBackTypedToTheCaller) {
  InprocJob job(2);
  auto client = job.Client();
  std::vector<Key> keys = {1, 2, 3};
  EXPECT_EQ(client->Pull("missing", keys).get().status().code(), StatusCode::kNotFound);
  EXPECT_EQ(client->Push("emb", keys, std::vector<float>(8, 1.f)).get().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(client->Push("emb", keys, std::vector<float>(12, 1.f)).get().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(client->Pull("emb", keys).get().ok());
}

TEST(ServerTest, ManyConcurrentCallersGetTheirOwnResults) {
  InprocJob job(2);
  auto client = job.Client();
  std::vector<std::thread> callers;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        std::vector<Key> keys = {static_cast<Key>(1000 * t + i)};
        auto r = client->Pull("emb", keys).get();
        if (!r.ok() || r->values.size() != 3) ++wrong;
      }
    });
  }
  for (auto& c : callers) c.join();
  EXPECT_EQ(wrong.load(), 0);
}

// Every server reply has a chance to be lost; the client retries with the same request id and the
// servers' dedupe windows keep each push applied exactly once.
TEST(ServerFaultTest, RetriedPushesAfterLostRepliesApplyExactlyOnce) {
  InprocJob job(2, FaultOptions{.drop = 0.3, .seed = 5});
  auto client = job.Client(ClientOptions{.request_timeout_ms = 50, .max_retries = 20}, nullptr);
  std::vector<Key> keys = {1, 2, 3, 4, 5, 6, 7, 8};
  std::vector<float> ones(keys.size() * 3, 1.f);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(client->Push("emb", keys, ones).get().ok()) << i;
  auto r = client->Pull("emb", keys).get();
  ASSERT_TRUE(r.ok()) << r.status();
  for (float v : r->values) EXPECT_EQ(v, -20.f);  // sgd, lr 1, from zeros: exactly 20 pushes
  uint64_t dups = job.server(0).counters().duplicate_pushes + job.server(1).counters().duplicate_pushes;
  EXPECT_GT(dups, 0u) << "the faults must have forced retries of applied pushes";
}

TEST(ServerFaultTest, DuplicatedMessagesApplyOnce) {
  InprocJob job(1);
  auto client = job.Client(ClientOptions{}, nullptr, FaultOptions{.duplicate = 1.0});
  std::vector<Key> keys = {42};
  ASSERT_TRUE(client->Push("emb", keys, std::vector<float>{1, 1, 1}).get().ok());
  ASSERT_TRUE(client->PushDense("w", std::vector<float>{1, 1, 1, 1, 1}).get().ok());
  auto r = client->Pull("emb", keys).get();
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->ToVector(), (std::vector<float>{-1, -1, -1}));
  EXPECT_EQ(*client->PullDense("w").get(), (std::vector<float>{-1, -1, -1, -1, -1}));
  EXPECT_EQ(job.server(0).counters().duplicate_pushes, 2u);
}

TEST(ServerFaultTest, APartitionGivesDeadlineExceededAndHealingRestoresService) {
  InprocJob job(1);
  FaultTransport* link = nullptr;
  auto client = job.Client(ClientOptions{.request_timeout_ms = 50, .max_retries = 2}, &link);
  std::vector<Key> keys = {7};
  link->SetPartitioned(true);
  auto cut = client->Push("emb", keys, std::vector<float>{1, 1, 1}).get();
  EXPECT_EQ(cut.code(), StatusCode::kDeadlineExceeded) << cut;
  EXPECT_TRUE(cut.IsTransient());
  link->SetPartitioned(false);
  auto r = client->Pull("emb", keys).get();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ToVector(), (std::vector<float>{0, 0, 0})) << "the cut push never arrived";
}

TEST(ServerTest, AClientThatIsNotRunningFailsRequestsAtOnce) {
  PsClient client(ClientOptions{}, std::make_unique<InprocTransport>(std::make_shared<InprocNetwork>()),
                  ShardMap{0, {"inproc://nowhere"}});
  std::vector<Key> keys = {1};
  EXPECT_EQ(client.Pull("emb", keys).get().status().code(), StatusCode::kFailedPrecondition);
  client.Stop();
  EXPECT_EQ(client.Pull("emb", keys).get().status().code(), StatusCode::kCancelled);
}

TEST(ServerTest, RequestsToADeadShardTimeOutWithDeadlineExceeded) {
  auto net = std::make_shared<InprocNetwork>();
  InprocTransport silent(net);
  auto ep = silent.Bind("inproc://silent");
  ASSERT_TRUE(ep.ok());
  PsClient client(ClientOptions{.request_timeout_ms = 200}, std::make_unique<InprocTransport>(net), ShardMap{0, {*ep}});
  ASSERT_TRUE(client.Start().ok());
  std::vector<Key> keys = {1};
  EXPECT_EQ(client.Pull("emb", keys).get().status().code(), StatusCode::kDeadlineExceeded);
}

// Several threads each keep a window of pulls in flight and wait on them out of order: whichever
// thread is receiving completes the others' requests too, and each gets its own rows.
TEST(ClientTest, ConcurrentWaitersEachGetTheirOwnRowsWhicheverThreadReceives) {
  InprocJob job(2);
  auto client = job.Client();
  constexpr int kThreads = 4, kKeys = 64;
  // Row of key k: -(k % 97) in every column (sgd, lr 1, from zeros).
  std::vector<Key> all;
  std::vector<float> grads;
  for (int k = 0; k < kThreads * kKeys; ++k) {
    all.push_back(k);
    for (int d = 0; d < 3; ++d) grads.push_back(static_cast<float>(k % 97));
  }
  ASSERT_TRUE(client->Push("emb", all, grads).get().ok());
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < kThreads; ++t) {
    callers.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        std::vector<std::vector<Key>> batches;
        std::vector<std::future<Result<PullResult>>> window;
        for (int w = 0; w < 6; ++w) {
          std::vector<Key> keys;
          for (int i = 0; i < 16; ++i) keys.push_back(t * kKeys + (round * 7 + w * 5 + i * 3) % kKeys);
          keys.insert(keys.begin() + 5, keys[3]);  // a duplicate: the rows after it shift
          window.push_back(client->Pull("emb", keys));
          batches.push_back(std::move(keys));
        }
        for (int w = 5; w >= 0; --w) {  // newest first: most were completed by someone else
          auto r = window[w].get();
          if (!r.ok()) {
            ++failed;
            continue;
          }
          for (size_t i = 0; i < batches[w].size(); ++i) {
            for (int d = 0; d < 3; ++d) wrong += r->values[i * 3 + d] != -static_cast<float>(batches[w][i] % 97);
          }
        }
      }
    });
  }
  for (auto& c : callers) c.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
}

// A big pull whose keys barely repeat is sent as it is (finding and removing the few repeats
// costs the client more than the server's answering them twice), one whose keys repeat a lot is
// deduplicated; with one shard and with two, both return every caller position's row in order.
TEST(ClientTest, BigPullsKeepAFewRepeatsAndRemoveMany) {
  for (int shards : {1, 2}) {
    SCOPED_TRACE(shards);
    InprocJob job(shards);
    auto client = job.Client();
    // Row of key k: -(k % 89) in every column (sgd, lr 1, from zeros).
    std::vector<Key> pushed;
    std::vector<float> grads;
    for (Key k = 0; k < 40000; k += 7) {
      pushed.push_back(k);
      for (int d = 0; d < 3; ++d) grads.push_back(static_cast<float>(k % 89));
    }
    ASSERT_TRUE(client->Push("emb", pushed, grads).get().ok());
    auto expect = [](Key k) { return k % 7 == 0 ? -static_cast<float>(k % 89) : 0.0f; };
    auto rows_pulled = [&] {
      uint64_t n = 0;
      for (int s = 0; s < shards; ++s) n += job.server(s).counters().rows_pulled;
      return n;
    };
    std::mt19937_64 rng(9);
    // few: 4000 distinct keys of 40000, then 3 of them again; many: 4000 keys of 300.
    for (const bool many : {false, true}) {
      SCOPED_TRACE(many ? "many repeats" : "a few repeats");
      std::vector<Key> keys;
      if (many) {
        for (int i = 0; i < 4000; ++i) keys.push_back(rng() % 300);
      } else {
        std::vector<Key> all(40000);
        std::iota(all.begin(), all.end(), Key{0});
        std::shuffle(all.begin(), all.end(), rng);
        keys.assign(all.begin(), all.begin() + 4000);
        keys.insert(keys.begin() + 100, keys[10]);
        keys.insert(keys.begin() + 2500, keys[2000]);
        keys.push_back(keys[3999]);
      }
      std::vector<Key> distinct = keys;
      std::sort(distinct.begin(), distinct.end());
      distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
      const uint64_t before = rows_pulled();
      auto r = client->Pull("emb", keys).get();
      ASSERT_TRUE(r.ok()) << r.status();
      ASSERT_EQ(r->values.size(), keys.size() * 3);
      int wrong = 0;
      for (size_t i = 0; i < keys.size(); ++i) {
        for (int d = 0; d < 3; ++d) wrong += r->values[i * 3 + d] != expect(keys[i]);
      }
      EXPECT_EQ(wrong, 0);
      EXPECT_EQ(rows_pulled() - before, many ? distinct.size() : keys.size());
      if (!many) {  // the option asks for the dedupe all the same
        ClientOptions strict;
        strict.dedupe_every_pull = true;
        auto strict_client = job.Client(strict, nullptr);
        const uint64_t at = rows_pulled();
        auto again = strict_client->Pull("emb", keys).get();
        ASSERT_TRUE(again.ok()) << again.status();
        EXPECT_EQ(again->ToVector(), r->ToVector());
        EXPECT_EQ(rows_pulled() - at, distinct.size());
      }
    }
  }
}

// Nobody waits on the push: the client's background thread still resends it past its deadline,
// so it reaches the server once the link heals, and its future then reports the server's answer.
TEST(ClientTest, ARequestNobodyWaitsOnIsRetriedAndCompletedInTheBackground) {
  InprocJob job(1);
  FaultTransport* link = nullptr;
  std::atomic<int> retries{0};
  auto client = job.Client(
      ClientOptions{.request_timeout_ms = 20, .max_retries = 1000,
                    .on_retry = [&](int32_t, const Status&, uint32_t) { ++retries; }},
      &link);
  std::vector<Key> keys = {11};
  link->SetPartitioned(true);
  auto push = client->Push("emb", keys, std::vector<float>{1, 1, 1});
  for (int i = 0; i < 500 && retries.load() < 3; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_GE(retries.load(), 3) << "no retry while nobody waited";
  link->SetPartitioned(false);
  // Another client sees the push land (the first client's caller still does not wait).
  auto observer = job.Client();
  std::vector<float> row;
  for (int i = 0; i < 500; ++i) {
    auto r = observer->Pull("emb", keys).get();
    ASSERT_TRUE(r.ok()) << r.status();
    row = r->ToVector();
    if (row[0] != 0.f) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(row, (std::vector<float>{-1, -1, -1}));
  EXPECT_TRUE(push.get().ok());
}

// Stop() while a thread is blocked receiving for its own request: that thread lets go, every
// request fails with Cancelled, and futures taken before Stop still answer after the client is gone.
TEST(ClientTest, StopReleasesAWaitingThreadAndFuturesOutliveTheClient) {
  auto net = std::make_shared<InprocNetwork>();
  InprocTransport silent(net);
  auto ep = silent.Bind("inproc://silent");
  ASSERT_TRUE(ep.ok());
  auto client = std::make_unique<PsClient>(ClientOptions{.request_timeout_ms = 60000},
                                           std::make_unique<InprocTransport>(net), ShardMap{0, {*ep}});
  ASSERT_TRUE(client->Start().ok());
  std::vector<Key> keys = {1, 2};
  std::atomic<bool> entered{false};
  Status waited;
  std::thread waiter([&] {
    auto f = client->Pull("emb", keys);
    entered = true;
    waited = f.get().status();
  });
  auto later = client->Push("emb", keys, std::vector<float>(6, 1.f));
  auto stats = client->Stats();
  while (!entered) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let it block receiving
  client.reset();  // Stop() and destroy
  waiter.join();
  EXPECT_EQ(waited.code(), StatusCode::kCancelled) << waited;
  EXPECT_EQ(later.get().code(), StatusCode::kCancelled);
  EXPECT_EQ(stats.get().status().code(), StatusCode::kCancelled);
}

}  // namespace
}  // namespace metaps::ps

namespace metaps::ps {
namespace {

// A server over a RocksDB store in `dir` that, when dropped, leaves the directory as kill -9
// would (no final write-back).
std::unique_ptr<Server> CrashableServer(const std::string& dir, std::shared_ptr<InprocNetwork> net) {
  auto cfg = Config::ParseString(R"(
    [[tables]]
    name = "emb"
    dim = 3
    optimizer = "sgd"
    lr = 1.0
    init = "zeros"
    [[tables]]
    name = "w"
    dim = 2
    dense = true
    optimizer = "sgd"
    lr = 1.0
    init = "zeros"
  )");
  auto tables = ParseTableSpecs(*cfg);
  EXPECT_TRUE(tables.ok()) << tables.status();
  StoreOptions o;
  o.data_dir = dir;
  o.final_flush_on_close = false;
  o.writeback_interval_ms = 3600 * 1000;  // cuts only when the test asks
  auto storage = RocksDbStorage::Open(dir, RocksDbOptions{});
  EXPECT_TRUE(storage.ok()) << storage.status();
  auto store = ParamStore::Open(o, *tables, std::move(storage).value());
  EXPECT_TRUE(store.ok()) << store.status();
  if (!store.ok()) return nullptr;
  return std::make_unique<Server>(ServerOptions{}, std::make_unique<InprocTransport>(net), std::move(store).value(),
                                  MakeLogger("crashable", "", "warn"));
}

Message PushMessage(uint64_t request_id) {
  Message m;
  m.header = Header{.type = MsgType::kPush, .sender = "worker-0#1f2e", .request_id = request_id, .table = "emb",
                    .num_keys = 1, .dim = 3};
  m.payload.push_back(Bytes::FromVector(std::vector<uint64_t>{42}));
  m.payload.push_back(Bytes::FromVector(std::vector<float>{1, 2, 3}));
  return m;
}

Message PushDenseMessage(uint64_t request_id) {
  Message m;
  m.header = Header{.type = MsgType::kPushDense, .sender = "worker-0#1f2e", .request_id = request_id, .table = "w",
                    .dim = 2};
  m.payload.push_back(Bytes::FromVector(std::vector<float>{1, 1}));
  return m;
}

MsgType Answer(Server& server, Message m) {
  bool reply_needed = false, shutdown = false;
  return server.Handle(m, &reply_needed, &shutdown).header.type;
}

// The push was applied and durable, the server died before its ack left, the client retries
// after the restart: the retry is acknowledged and not applied again, whether the push's log
// record is still there (replayed) or a write-back cut already dropped it.
class ServerRestartTest : public ::testing::TestWithParam<bool> {};

TEST_P(ServerRestartTest, ARetryAfterACrashAndRestartIsNotAppliedAgain) {
  const bool cut_before_crash = GetParam();
  const std::string dir = ::testing::TempDir() + "/server_restart_" + std::to_string(getpid()) +
                          (cut_before_crash ? "_cut" : "_log");
  std::filesystem::remove_all(dir);
  auto net = std::make_shared<InprocNetwork>();
  {
    auto server = CrashableServer(dir, net);
    ASSERT_NE(server, nullptr);
    ASSERT_EQ(Answer(*server, PushMessage(7)), MsgType::kPushAck);
    ASSERT_EQ(Answer(*server, PushDenseMessage(8)), MsgType::kPushAck);
    if (cut_before_crash) {
      ASSERT_TRUE(server->store().Flush().ok());
    }
  }  // crash: the acks are lost
  auto server = CrashableServer(dir, net);
  ASSERT_NE(server, nullptr);
  EXPECT_EQ(Answer(*server, PushMessage(7)), MsgType::kPushAck);
  EXPECT_EQ(Answer(*server, PushDenseMessage(8)), MsgType::kPushAck);
  EXPECT_EQ(server->counters().duplicate_pushes, 2u);
  auto row = server->store().GetRow("emb", 42);
  ASSERT_TRUE(row.ok());
  EXPECT_EQ(row->update_count, 1u);
  EXPECT_EQ(row->value, (std::vector<float>{-1, -2, -3}));
  auto dense = server->store().GetRow("w", 0);
  ASSERT_TRUE(dense.ok());
  EXPECT_EQ(dense->update_count, 1u);
  // A new request id is a new push.
  EXPECT_EQ(Answer(*server, PushMessage(9)), MsgType::kPushAck);
  EXPECT_EQ(server->store().GetRow("emb", 42)->update_count, 2u);
  server.reset();
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(LogOrCut, ServerRestartTest, ::testing::Bool());

}  // namespace
}  // namespace metaps::ps
