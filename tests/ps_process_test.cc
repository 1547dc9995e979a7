// Parameter servers as real processes on loopback, driven by PsClient over ZeroMQ, persisting to
// real RocksDB directories.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/keys.h"
#include "common/memory_storage.h"
#include "common/rocksdb_storage.h"
#include "common/wire.h"
#include "common/zmq_transport.h"
#include "ps/client.h"
#include "ps/param_store.h"
#include "ps/table_spec.h"
#include "tests/test_util.h"

namespace metaps {
namespace {

using metaps::testing::ScratchDir;
using metaps::testing::ServerProcess;
using ps::PsClient;

constexpr const char* kTables = R"(
[[tables]]
name = "sgd_emb"
dim = 8
optimizer = "sgd"
lr = 0.1
init = "uniform"
init_scale = 0.05

[[tables]]
name = "adam_emb"
dim = 8
optimizer = "adam"
lr = 0.01

[[tables]]
name = "mlp"
dim = 100
dense = true
optimizer = "adam"
lr = 0.01
)";

std::unique_ptr<PsClient> Connect(const std::vector<std::string>& endpoints) {
  auto c = std::make_unique<PsClient>(ps::ClientOptions{.sender = "test"}, std::make_unique<ZmqTransport>(),
                                      ShardMap{1, endpoints});
  EXPECT_TRUE(c->Start().ok());
  return c;
}

// Polls shard 0's stats (JSON) until `done` holds for them; false when it never did within
// `tries` polls 10 ms apart or a stats request failed. No timing assertions: only a bound.
bool WaitForShardStats(PsClient& client, const std::function<bool(const nlohmann::json&)>& done, int tries,
                       nlohmann::json* last) {
  for (int i = 0; i < tries; ++i) {
    auto stats = client.Stats().get();
    if (!stats.ok()) {
      *last = {{"error", stats.status().ToString()}};
      return false;
    }
    *last = nlohmann::json::parse((*stats)[0]);
    if (done(*last)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// An in-process store with the same tables: the single-process reference.
std::unique_ptr<ps::ParamStore> ReferenceStore(const std::string& config_text) {
  auto cfg = Config::ParseString(config_text);
  auto tables = ps::ParseTableSpecs(*cfg);
  EXPECT_TRUE(tables.ok()) << tables.status();
  auto store = ps::ParamStore::Open(ps::StoreOptions{}, *tables, std::make_unique<MemoryStorage>(std::vector<std::string>{"rows", "log", "meta"}));
  EXPECT_TRUE(store.ok()) << store.status();
  return std::move(store).value();
}

// Opens a (stopped) server's data directory in-process, as recovery sees it.
Result<std::unique_ptr<ps::ParamStore>> OpenDataDir(const std::string& config, const std::string& data_dir) {
  METAPS_ASSIGN_OR_RETURN(Config parsed, Config::ParseString(config));
  METAPS_ASSIGN_OR_RETURN(std::vector<ps::TableSpec> tables, ps::ParseTableSpecs(parsed));
  ps::StoreOptions o;
  o.data_dir = data_dir;
  METAPS_ASSIGN_OR_RETURN(std::unique_ptr<Storage> storage, RocksDbStorage::Open(o.data_dir, RocksDbOptions{}));
  return ps::ParamStore::Open(o, std::move(tables), std::move(storage));
}

std::vector<Key> Keys(int n, int offset = 0) {
  std::vector<Key> k(n);
  for (int i = 0; i < n; ++i) k[i] = FeatureKey("item", std::to_string(i + offset));
  return k;
}

// Deterministic gradient for (client, round, key index, element).
float Grad(int client, int round, int i, int d) {
  return 0.01f * static_cast<float>(((client * 7 + round * 13 + i * 31 + d * 17) % 41) - 20);
}

TEST(PsProcessTest, TwoServersTwoClientsMatchASingleProcessReference) {
  ScratchDir dir("ps-2x2");
  std::string config = std::string(kTables);
  auto s0 = ServerProcess::Start(dir / "s0", config, {"--shard-id", "0"});
  auto s1 = ServerProcess::Start(dir / "s1", config, {"--shard-id", "1"});
  const int kKeys = 100000, kBatch = 10000, kRounds = 2, kDim = 8;
  std::vector<Key> keys = Keys(kKeys);

  // Client c pushes every key of sgd_emb (sums commute) and its own half of adam_emb (each row
  // then sees one client's pushes in order, so the result is exact).
  auto run_client = [&](int c) {
    auto client = Connect({s0.endpoint, s1.endpoint});
    for (int r = 0; r < kRounds; ++r) {
      for (int b = 0; b < kKeys; b += kBatch) {
        std::span<const Key> k(&keys[b], kBatch);
        std::vector<float> g(kBatch * kDim);
        for (int i = 0; i < kBatch; ++i)
          for (int d = 0; d < kDim; ++d) g[i * kDim + d] = Grad(c, r, b + i, d);
        auto f1 = client->Push("sgd_emb", k, g, r);
        std::vector<Key> mine;
        std::vector<float> mg;
        for (int i = 0; i < kBatch; ++i) {
          if ((b + i) % 2 != c) continue;
          mine.push_back(k[i]);
          mg.insert(mg.end(), &g[i * kDim], &g[i * kDim] + kDim);
        }
        auto f2 = client->Push("adam_emb", mine, mg, r);
        auto pulled = client->Pull("sgd_emb", k);  // concurrent reads while pushing
        ASSERT_TRUE(f1.get().ok());
        ASSERT_TRUE(f2.get().ok());
        ASSERT_TRUE(pulled.get().ok());
      }
    }
  };
  std::thread t0(run_client, 0), t1(run_client, 1);
  t0.join();
  t1.join();

  auto ref = ReferenceStore(config);
  for (int c = 0; c < 2; ++c) {
    for (int r = 0; r < kRounds; ++r) {
      for (int b = 0; b < kKeys; b += kBatch) {
        std::vector<float> g(kBatch * kDim);
        for (int i = 0; i < kBatch; ++i)
          for (int d = 0; d < kDim; ++d) g[i * kDim + d] = Grad(c, r, b + i, d);
        ASSERT_TRUE(ref->Push("sgd_emb", std::span<const Key>(&keys[b], kBatch), g, r).ok());
      }
    }
  }
  // adam rows: replay each client's half in that client's order.
  for (int r = 0; r < kRounds; ++r) {
    for (int c = 0; c < 2; ++c) {
      for (int b = 0; b < kKeys; b += kBatch) {
        std::vector<Key> mine;
        std::vector<float> mg;
        for (int i = 0; i < kBatch; ++i) {
          if ((b + i) % 2 != c) continue;
          mine.push_back(keys[b + i]);
          for (int d = 0; d < kDim; ++d) mg.push_back(Grad(c, r, b + i, d));
        }
        ASSERT_TRUE(ref->Push("adam_emb", mine, mg, r).ok());
      }
    }
  }
  auto client = Connect({s0.endpoint, s1.endpoint});
  auto sgd = client->Pull("sgd_emb", keys).get();
  auto adam = client->Pull("adam_emb", keys).get();
  ASSERT_TRUE(sgd.ok()) << sgd.status();
  ASSERT_TRUE(adam.ok()) << adam.status();
  std::vector<float> want_sgd(kKeys * kDim), want_adam(kKeys * kDim);
  ASSERT_TRUE(ref->Pull("sgd_emb", keys, want_sgd.data()).ok());
  ASSERT_TRUE(ref->Pull("adam_emb", keys, want_adam.data()).ok());
  int bad_sgd = 0, bad_adam = 0;
  for (size_t i = 0; i < want_sgd.size(); ++i) {
    bad_sgd += std::fabs(sgd->values[i] - want_sgd[i]) > 1e-5f;
    bad_adam += adam->values[i] != want_adam[i];
  }
  EXPECT_EQ(bad_sgd, 0);
  EXPECT_EQ(bad_adam, 0);
  // Both shards took part.
  auto stats = client->Stats().get();
  ASSERT_TRUE(stats.ok());
  for (const auto& s : *stats) EXPECT_NE(s.find("\"rows_pushed\":"), std::string::npos);
}

// kill -9 right after acknowledged pushes; the restarted server has all of them. Runs with the
// write-back effectively off (recovery from the log alone) and very frequent (rows + log tail).
// Log segments of 256 KiB: each big push gets a segment of its own, so the log spans many
// segments, and with frequent write-backs they are retired and recycled (spares overwritten).
class KillRecoveryTest : public ::testing::TestWithParam<int> {};

TEST_P(KillRecoveryTest, KillNineAfterAcknowledgedPushesLosesNothing) {
  ScratchDir dir("ps-kill");
  std::string config = std::string(kTables) + "\n[server]\nwriteback_interval_ms = " + std::to_string(GetParam()) +
                       "\nlog_segment_bytes = 262144\n";
  auto server = ServerProcess::Start(dir / "s", config);
  const int kKeys = 30000, kDim = 8;
  std::vector<Key> keys = Keys(kKeys);
  std::vector<float> dense_before;
  {
    auto client = Connect({server.endpoint});
    for (int r = 0; r < 5; ++r) {
      std::vector<float> g(kKeys * kDim);
      for (int i = 0; i < kKeys; ++i)
        for (int d = 0; d < kDim; ++d) g[i * kDim + d] = Grad(0, r, i, d);
      ASSERT_TRUE(client->Push("adam_emb", keys, g, r).get().ok());
      std::vector<float> dg(100, 0.1f * (r + 1));
      ASSERT_TRUE(client->PushDense("mlp", dg, r).get().ok());
      if (GetParam() < 100) std::this_thread::sleep_for(std::chrono::milliseconds(60));
    }
    auto before = client->Pull("adam_emb", keys).get();
    ASSERT_TRUE(before.ok());
    auto dense = client->PullDense("mlp").get();
    ASSERT_TRUE(dense.ok());
    dense_before = *dense;
    auto stats = client->Stats().get();
    ASSERT_TRUE(stats.ok()) << stats.status();
    const uint64_t pending = nlohmann::json::parse((*stats)[0])["log_records_pending"].get<uint64_t>();
    ASSERT_TRUE(server.proc.Signal(SIGKILL).ok());
    ASSERT_EQ(server.proc.Wait(std::chrono::seconds(10)).value_or(-1), 128 + SIGKILL);

    auto restarted = ServerProcess::Start(dir / "s", config);
    ASSERT_TRUE(restarted.started()) << ServerProcess::ReadFile(restarted.log);
    auto client2 = Connect({restarted.endpoint});
    // What the log held uncovered is what the restart replays: all 10 pushes (5 sparse, 5 dense)
    // without a write-back in between; with write-backs every 20 ms, at most what was pending
    // when the stats were taken (a write-back may have covered more before the kill).
    auto restarted_stats = client2->Stats().get();
    ASSERT_TRUE(restarted_stats.ok()) << restarted_stats.status();
    auto rj = nlohmann::json::parse((*restarted_stats)[0]);
    EXPECT_LE(rj["replayed_records"].get<uint64_t>(), pending) << rj.dump();
    if (GetParam() > 100000) {
      EXPECT_EQ(pending, 10u);
      EXPECT_EQ(rj["replayed_records"].get<uint64_t>(), pending) << rj.dump();
    }
    EXPECT_EQ(rj["writeback_errors"].get<uint64_t>(), 0u) << rj.dump();
    auto after = client2->Pull("adam_emb", keys).get();
    ASSERT_TRUE(after.ok()) << after.status();
    EXPECT_EQ(after->ToVector(), before->ToVector());
    auto dense_after = client2->PullDense("mlp").get();
    ASSERT_TRUE(dense_after.ok());
    EXPECT_EQ(*dense_after, dense_before);
  }
}

INSTANTIATE_TEST_SUITE_P(WriteBack, KillRecoveryTest, ::testing::Values(600000, 20));

// Exactly once across kill -9: a push is applied and durable, the server is killed before the
// client sees the ack (raw frames over a DEALER socket: the test plays a client whose ack was
// lost), the server restarts on its directory and the client retries with the same request id.
// The retry is acknowledged and not applied again, whether the push's record is still in the log
// (write-back off) or a write-back cut has already dropped it (write-back every 20 ms).
class KillRetryTest : public ::testing::TestWithParam<int> {};

TEST_P(KillRetryTest, ARetryAcrossKillNineAndRestartIsAppliedExactlyOnce) {
  ScratchDir dir("ps-kill-retry");
  const int interval_ms = GetParam();
  std::string config = std::string(kTables) + "\n[server]\nwriteback_interval_ms = " + std::to_string(interval_ms) + "\n";
  const int kKeys = 1000, kDim = 8;
  const std::vector<Key> keys = Keys(kKeys);
  std::vector<float> grads(kKeys * kDim);
  for (int i = 0; i < kKeys; ++i)
    for (int d = 0; d < kDim; ++d) grads[i * kDim + d] = Grad(3, 0, i, d);
  auto frames = [&] {
    Header h{.type = MsgType::kPush, .sender = "raw-worker#5eed", .request_id = 4242, .table = "sgd_emb",
             .num_keys = static_cast<uint64_t>(kKeys), .dim = kDim, .step = 1};
    return std::vector<Bytes>{EncodeHeader(h), Bytes::FromVector(std::vector<uint64_t>(keys.begin(), keys.end())),
                              Bytes::FromVector(grads)};
  };
  // Sends the push, returns the type of the reply.
  auto push_once = [&](const std::string& endpoint) -> MsgType {
    ZmqTransport t;
    EXPECT_TRUE(t.Connect("srv", endpoint).ok());
    EXPECT_TRUE(t.Send({"srv", frames()}).ok());
    auto env = t.Recv(std::chrono::seconds(30));
    EXPECT_TRUE(env.ok()) << env.status();
    if (!env.ok()) return MsgType::kUnknown;
    auto m = FromFrames(std::move(env->frames));
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? m->header.type : MsgType::kUnknown;
  };

  auto server = ServerProcess::Start(dir / "s", config);
  ASSERT_TRUE(server.started());
  ASSERT_EQ(push_once(server.endpoint), MsgType::kPushAck);  // acknowledged: durable
  if (interval_ms < 100) {
    // Wait (without timing assertions) until a write-back has cut the log after the push.
    auto client = Connect({server.endpoint});
    nlohmann::json last;
    ASSERT_TRUE(WaitForShardStats(
        *client, [](const nlohmann::json& j) { return j["writebacks"].get<uint64_t>() > 0; }, 3000, &last))
        << "no write-back happened: " << last.dump();
  }
  ASSERT_TRUE(server.proc.Signal(SIGKILL).ok());
  ASSERT_EQ(server.proc.Wait(std::chrono::seconds(10)).value_or(-1), 128 + SIGKILL);

  auto restarted = ServerProcess::Start(dir / "s", config);
  ASSERT_TRUE(restarted.started()) << ServerProcess::ReadFile(restarted.log);
  EXPECT_EQ(push_once(restarted.endpoint), MsgType::kPushAck);  // the retry
  {
    auto client = Connect({restarted.endpoint});
    auto stats = client->Stats().get();
    ASSERT_TRUE(stats.ok()) << stats.status();
    EXPECT_EQ(nlohmann::json::parse((*stats)[0])["duplicate_pushes"].get<uint64_t>(), 1u);
    auto got = client->Pull("sgd_emb", keys).get();
    ASSERT_TRUE(got.ok()) << got.status();
    auto ref = ReferenceStore(config);
    ASSERT_TRUE(ref->Push("sgd_emb", keys, grads, 1).ok());  // applied once
    std::vector<float> want(kKeys * kDim);
    ASSERT_TRUE(ref->Pull("sgd_emb", keys, want.data()).ok());
    EXPECT_EQ(got->ToVector(), want);
  }
  // The directory itself shows one application per row (opened in-process after another kill,
  // so what is checked is what recovery makes of the data dir).
  ASSERT_TRUE(restarted.proc.Signal(SIGKILL).ok());
  ASSERT_EQ(restarted.proc.Wait(std::chrono::seconds(10)).value_or(-1), 128 + SIGKILL);
  auto store = OpenDataDir(config, dir / "s/db");
  ASSERT_TRUE(store.ok()) << store.status();
  for (Key k : {keys.front(), keys[kKeys / 2], keys.back()}) {
    auto row = (*store)->GetRow("sgd_emb", k);
    ASSERT_TRUE(row.ok()) << row.status();
    EXPECT_EQ(row->update_count, 1u);
  }
  EXPECT_TRUE((*store)->PushApplied("raw-worker#5eed", 4242));
}

INSTANTIATE_TEST_SUITE_P(LogOrCut, KillRetryTest, ::testing::Values(600000, 20));

// SIGTERM stops a server cleanly, whichever of its threads the kernel hands the signal to: exit
// code 0 and every row written back, so a reopened directory has nothing left to replay. (Until
// the signals were blocked before the first thread started, RocksDB's or ZeroMQ's threads could
// take SIGTERM with its default action: exit 143, no write-back.) Several rounds, since which
// thread gets the signal varies.
TEST(PsProcessTest, SigtermWritesEverythingBackAndExitsZero) {
  ScratchDir dir("ps-sigterm");
  std::string config = std::string(kTables) + "\n[server]\nwriteback_interval_ms = 600000\n";
  const int kKeys = 2000, kDim = 8;
  const std::vector<Key> keys = Keys(kKeys);
  std::vector<float> last;
  for (int round = 0; round < 4; ++round) {
    auto server = ServerProcess::Start(dir / "s", config);
    ASSERT_TRUE(server.started());
    {
      auto client = Connect({server.endpoint});
      std::vector<float> g(kKeys * kDim, 0.01f * (round + 1));
      ASSERT_TRUE(client->Push("adam_emb", keys, g, round).get().ok());
      auto pulled = client->Pull("adam_emb", keys).get();
      ASSERT_TRUE(pulled.ok()) << pulled.status();
      last = pulled->ToVector();
    }
    ASSERT_TRUE(server.proc.Signal(SIGTERM).ok());
    EXPECT_EQ(server.proc.Wait(std::chrono::seconds(30)).value_or(-1), 0) << ServerProcess::ReadFile(server.log);
  }
  auto store = OpenDataDir(config, dir / "s/db");
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->Stats().replayed_records, 0u);  // the last stop wrote everything back
  auto row = (*store)->GetRow("adam_emb", keys[7]);
  ASSERT_TRUE(row.ok()) << row.status();
  EXPECT_EQ(row->update_count, 4u);
  EXPECT_EQ(row->value, std::vector<float>(last.begin() + 7 * kDim, last.begin() + 8 * kDim));
}

// A push whose log append fails after the optimizer has changed its rows (pushes of 1024+ rows
// overlap the two) gets an error, and the server stops (exit 1, the reason in its log) instead of
// serving rows its log does not hold. Restarted on its directory, it has every acknowledged push
// and nothing of the failed one. The append fails because of a file-size limit (prlimit --fsize).
TEST(PsProcessTest, AFailedLogAppendStopsTheServerAndARestartRecovers) {
  if (!std::filesystem::exists("/usr/bin/prlimit")) GTEST_SKIP() << "needs /usr/bin/prlimit (util-linux)";
  ScratchDir dir("ps-failstop");
  std::string config = std::string(kTables) + "\n[server]\nwriteback_interval_ms = 600000\n";
  const int kDim = 8;
  const std::vector<Key> small = Keys(100), big = Keys(20000, 1000);  // big: an 800 KB record
  std::vector<float> acked;
  {
    auto server = ServerProcess::Start(dir / "s", config, {}, {"/usr/bin/prlimit", "--fsize=262144", "--"});
    ASSERT_TRUE(server.started());
    auto client = Connect({server.endpoint});
    ASSERT_TRUE(client->Push("adam_emb", small, std::vector<float>(small.size() * kDim, 0.5f), 1).get().ok());
    auto pulled = client->Pull("adam_emb", small).get();
    ASSERT_TRUE(pulled.ok()) << pulled.status();
    acked = pulled->ToVector();
    auto initial = client->Pull("adam_emb", big).get();  // never pushed: initial values
    ASSERT_TRUE(initial.ok()) << initial.status();
    // The big push's record is appended on the server's log thread while its rows change and
    // the server may take the next request: this pull, which would see those rows. Either the
    // failure is known by then (the store answers the pull with it), or the pull's reply is
    // held behind the push's and answered with the push's error: never with the rows.
    ps::ClientOptions quick{.sender = "test-quick"};
    quick.request_timeout_ms = 3000;
    quick.max_retries = 0;
    PsClient second(quick, std::make_unique<ZmqTransport>(), ShardMap{1, {server.endpoint}});
    ASSERT_TRUE(second.Start().ok());
    auto push = second.Push("adam_emb", big, std::vector<float>(big.size() * kDim, 0.5f), 2);
    auto after = second.Pull("adam_emb", big);
    Status failed = push.get();
    EXPECT_FALSE(failed.ok());
    EXPECT_NE(failed.message().find("log"), std::string::npos) << failed;
    auto seen = after.get();
    EXPECT_TRUE(!seen.ok() || seen->ToVector() == initial->ToVector())
        << "a pull answered with the rows of a push that never became durable";
    EXPECT_EQ(server.proc.Wait(std::chrono::seconds(30)).value_or(-1), 1);
    EXPECT_NE(ServerProcess::ReadFile(server.log).find("store failed"), std::string::npos)
        << ServerProcess::ReadFile(server.log);
  }
  {
    auto server = ServerProcess::Start(dir / "s", config);
    ASSERT_TRUE(server.started());
    auto client = Connect({server.endpoint});
    auto pulled = client->Pull("adam_emb", small).get();
    ASSERT_TRUE(pulled.ok()) << pulled.status();
    EXPECT_EQ(pulled->ToVector(), acked);
    ASSERT_TRUE(server.proc.Signal(SIGTERM).ok());
    EXPECT_EQ(server.proc.Wait(std::chrono::seconds(30)).value_or(-1), 0) << ServerProcess::ReadFile(server.log);
  }
  auto store = OpenDataDir(config, dir / "s/db");
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->GetRow("adam_emb", small[3])->update_count, 1u);
  EXPECT_EQ((*store)->GetRow("adam_emb", big[3])->update_count, 0u);
}

TEST(PsProcessTest, TableTenTimesTheCacheBudgetStaysCorrect) {
  ScratchDir dir("ps-cache");
  std::string config = std::string(kTables);
  // adam rows of dim 8: 8 weights + 16 moments + metadata, ~120 bytes; 40k rows ~ 4.8 MB.
  auto server = ServerProcess::Start(dir / "s", config, {"--cache-bytes", "480000"});
  const int kKeys = 40000, kDim = 8;
  std::vector<Key> keys = Keys(kKeys);
  auto client = Connect({server.endpoint});
  auto ref = ReferenceStore(config);
  for (int r = 0; r < 3; ++r) {
    for (int b = 0; b < kKeys; b += 5000) {
      std::span<const Key> k(&keys[b], 5000);
      std::vector<float> g(5000 * kDim);
      for (int i = 0; i < 5000; ++i)
        for (int d = 0; d < kDim; ++d) g[i * kDim + d] = Grad(1, r, b + i, d);
      ASSERT_TRUE(client->Push("adam_emb", k, g, r).get().ok());
      ASSERT_TRUE(ref->Push("adam_emb", k, g, r).ok());
    }
  }
  // The last push's 5000 rows (more than the budget holds) stay cached until the write-back has
  // written them (dirty, then in flight); a write-back thread that gets no CPU (a loaded CI
  // machine) can be late past the whole read-back below, so the bound is checked from a store
  // whose pushes are all written back: no dirty rows and no log record left uncovered.
  nlohmann::json last;
  ASSERT_TRUE(WaitForShardStats(
      *client,
      [](const nlohmann::json& j) {
        return j["rows_dirty"].get<uint64_t>() == 0 && j["log_records_pending"].get<uint64_t>() == 0;
      },
      6000, &last))
      << "the write-back never caught up: " << last.dump();
  // Read back in requests of 1000 keys: the rows of the request being served stay resident, so the
  // cache may exceed its budget by at most one request's rows (documented in docs/storage.md).
  const int kChunk = 1000;
  std::vector<float> got;
  for (int b = 0; b < kKeys; b += kChunk) {
    auto r = client->Pull("adam_emb", std::span<const Key>(&keys[b], kChunk)).get();
    ASSERT_TRUE(r.ok()) << r.status();
    got.insert(got.end(), r->values.begin(), r->values.end());
  }
  std::vector<float> want(kKeys * kDim);
  ASSERT_TRUE(ref->Pull("adam_emb", keys, want.data()).ok());
  EXPECT_EQ(got, want);
  auto stats = client->Stats().get();
  ASSERT_TRUE(stats.ok());
  auto j = nlohmann::json::parse((*stats)[0]);
  uint64_t row_bytes = j["cache_bytes"].get<uint64_t>() / std::max<uint64_t>(1, j["rows_cached"].get<uint64_t>());
  EXPECT_LE(j["cache_bytes"].get<uint64_t>(), 480000u + kChunk * row_bytes) << j.dump();
  EXPECT_LT(j["rows_cached"].get<uint64_t>(), static_cast<uint64_t>(kKeys) / 5) << j.dump();
  EXPECT_GT(j["cache_misses"].get<uint64_t>(), 0u) << j.dump();
}

TEST(PsProcessTest, CheckpointRestoresIntoANewServer) {
  ScratchDir dir("ps-ckpt");
  std::string config = std::string(kTables);
  auto server = ServerProcess::Start(dir / "s", config);
  std::vector<Key> keys = Keys(5000);
  auto client = Connect({server.endpoint});
  std::vector<float> g(5000 * 8, 0.25f);
  ASSERT_TRUE(client->Push("adam_emb", keys, g, 1).get().ok());
  ASSERT_TRUE(client->Checkpoint(dir / "ckpt").get().ok());
  auto at_checkpoint = client->Pull("adam_emb", keys).get();
  ASSERT_TRUE(client->Push("adam_emb", keys, g, 2).get().ok());  // after the checkpoint: not restored

  auto restored = ServerProcess::Start(dir / "r", config, {"--restore-from", dir / "ckpt/shard-0"});
  ASSERT_TRUE(restored.started()) << ServerProcess::ReadFile(restored.log);
  auto client2 = Connect({restored.endpoint});
  auto got = client2->Pull("adam_emb", keys).get();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->ToVector(), at_checkpoint->ToVector());
}

// `metaps bench ps` end to end on a small table: it exits 0 and its last line is the JSON the
// issue names, with the minimal client's figures. The minimal client checks every reply of the
// real server (an error reply fails the bench), so this also catches a header it sends that the
// server refuses. Rates are only checked to be positive: no timing is asserted.
TEST(PsProcessTest, BenchPsReportsEveryFigureAndItsMinimalClientGetsRealReplies) {
  ScratchDir dir("bench-ps");
  std::string out = dir / "bench.out";
  auto p = Subprocess::Spawn({testing::MetapsBin(), "bench", "ps", "--json", "--cases", "uniform_resident",
                              "--rounds", "1", "--seconds", "0.3", "--warmup-seconds", "0", "--resident-keys",
                              "20000", "--batch", "2000", "--work-dir", dir / "work"},
                             out);
  ASSERT_TRUE(p.ok()) << p.status();
  auto code = p->Wait(std::chrono::minutes(3));
  std::string text = ServerProcess::ReadFile(out);
  ASSERT_TRUE(code.ok()) << code.status() << text;
  ASSERT_EQ(*code, 0) << text;
  auto j = nlohmann::json::parse(text.substr(text.rfind("\n{") + 1), nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << text;
  for (const char* k : {"pull_rows_per_s", "push_rows_per_s", "raw_zmq_rows_per_s", "raw_rocksdb_rows_per_s",
                        "pull_ratio_to_raw_zmq", "push_ratio_to_raw_zmq", "minimal_client_pull_ratio_to_raw_zmq",
                        "minimal_client_push_ratio_to_raw_zmq"}) {
    ASSERT_TRUE(j.contains(k) && j[k].is_number()) << k << " in " << j.dump();
    EXPECT_GT(j[k].get<double>(), 0) << k;
  }
  const auto& m = j["uniform_resident"]["minimal_client"];
  EXPECT_GT(m["pull_rows_per_s"].get<double>(), 0);
  EXPECT_GT(m["push_rows_per_s"].get<double>(), 0);
  // Each of the minimal client's pushes carried a fresh request id: none was answered as a retry.
  const auto& stats = j["uniform_resident"]["server_stats"];
  ASSERT_TRUE(stats.is_object() && stats.contains("duplicate_pushes")) << j["uniform_resident"].dump();
  EXPECT_EQ(stats["duplicate_pushes"].get<int64_t>(), 0);
}

}  // namespace
}  // namespace metaps
