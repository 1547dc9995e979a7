#include "ps/param_store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <set>
#include <thread>

#include "common/config.h"
#include "common/memory_storage.h"
#include "common/rocksdb_storage.h"
#include "ps/initializer.h"
#include "ps/table_spec.h"

namespace metaps::ps {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> Spaces() { return {"rows", "log", "meta"}; }

std::vector<TableSpec> Tables() {
  auto cfg = Config::ParseString(R"(
[[tables]]
name = "emb"
dim = 4
optimizer = "adam"
lr = 0.01
init = "normal"
init_scale = 0.1

[[tables]]
name = "wide"
dim = 3
optimizer = "ftrl"
lr = 0.1
l1 = 0.01
l2 = 0.001
init = "zeros"

[[tables]]
name = "lin"
dim = 2
optimizer = "sgd"
lr = 0.5
init = "zeros"

[[tables]]
name = "mlp"
dim = 10
dense = true
optimizer = "adagrad"
lr = 0.1
init = "uniform"
init_scale = 0.5
)");
  EXPECT_TRUE(cfg.ok()) << cfg.status();
  auto t = ParseTableSpecs(*cfg);
  EXPECT_TRUE(t.ok()) << t.status();
  return *t;
}

StoreOptions Quiet() {
  StoreOptions o;
  o.writeback_interval_ms = 3600 * 1000;  // no timed write-backs unless a test asks
  return o;
}

std::unique_ptr<ParamStore> OpenOrDie(StoreOptions o, std::unique_ptr<Storage> s, std::vector<TableSpec> t = Tables()) {
  auto store = ParamStore::Open(std::move(o), std::move(t), std::move(s));
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(store).value() : nullptr;
}

class TempDir {
 public:
  TempDir() {
    static int n = 0;
    path_ = fs::path(testing::TempDir()) /
            ("param_store_test_" + std::to_string(getpid()) + "_" + std::to_string(n++));
    fs::remove_all(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string path(const std::string& sub = "") const { return sub.empty() ? path_.string() : (path_ / sub).string(); }

 private:
  fs::path path_;
};

std::unique_ptr<RocksDbStorage> OpenRocks(const std::string& dir) {
  auto s = RocksDbStorage::Open(dir, RocksDbOptions{});
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(s).value() : nullptr;
}

// A store over RocksDB in `dir` with the file log, closed the way kill -9 leaves it: no final
// write-back, so a reopen recovers from the rows on disk plus the log.
// For SCOPED_TRACE in the tests that run over both ways of writing the file log.
const char* LogWrites(bool direct) { return direct ? "direct writes" : "buffered writes"; }

StoreOptions FileLogOptions(const TempDir& dir, bool direct = false) {
  StoreOptions o = Quiet();
  o.data_dir = dir.path();
  o.final_flush_on_close = false;
  o.log_io = direct ? LogIo::kDirect : LogIo::kBuffered;
  return o;
}

// A deterministic workload: pushes with duplicate keys to "emb", "wide", "lin" and the dense "mlp".
struct Workload {
  std::mt19937_64 rng{42};
  uint64_t key_space = 200;
  uint64_t step = 0;

  void Round(ParamStore* a, ParamStore* b, size_t n = 40) {
    ++step;
    for (const char* table : {"emb", "wide", "lin"}) {
      const uint32_t dim = a->FindTable(table)->dim;
      std::vector<Key> keys(n);
      std::vector<float> grads(n * dim);
      for (auto& k : keys) k = rng() % key_space;
      std::normal_distribution<float> g(0.0f, 1.0f);
      for (auto& x : grads) x = g(rng);
      ASSERT_TRUE(a->Push(table, keys, grads, step).ok());
      if (b) {
        ASSERT_TRUE(b->Push(table, keys, grads, step).ok());
      }
    }
    std::vector<float> dg(10);
    for (auto& x : dg) x = static_cast<float>(static_cast<int64_t>(rng() % 200) - 100) / 100.0f;
    ASSERT_TRUE(a->PushDense("mlp", dg, step).ok());
    if (b) {
      ASSERT_TRUE(b->PushDense("mlp", dg, step).ok());
    }
  }
};

// A push's keys with their repeats summed by hand, the reference for the store's own summing:
// the distinct keys in first-occurrence order, each with its gradients added in push order.
struct HandSummed {
  std::vector<Key> keys;
  std::vector<float> grads;
};
HandSummed SumPerKey(std::span<const Key> keys, std::span<const float> grads, size_t dim) {
  HandSummed out;
  std::map<Key, size_t> at;
  for (size_t i = 0; i < keys.size(); ++i) {
    auto [it, fresh] = at.try_emplace(keys[i], out.keys.size());
    if (fresh) {
      out.keys.push_back(keys[i]);
      out.grads.insert(out.grads.end(), grads.begin() + i * dim, grads.begin() + (i + 1) * dim);
    } else {
      for (size_t d = 0; d < dim; ++d) out.grads[it->second * dim + d] += grads[i * dim + d];
    }
  }
  return out;
}

// Every row of every table, bitwise, plus counts and steps.
void ExpectSameState(ParamStore* got, ParamStore* want, uint64_t key_space) {
  for (const char* table : {"emb", "wide", "lin"}) {
    for (Key k = 0; k < key_space; ++k) {
      auto a = got->GetRow(table, k);
      auto b = want->GetRow(table, k);
      ASSERT_TRUE(a.ok() && b.ok());
      ASSERT_EQ(a->update_count, b->update_count) << table << " key " << k;
      ASSERT_EQ(a->last_step, b->last_step) << table << " key " << k;
      ASSERT_EQ(a->value.size(), b->value.size());
      ASSERT_EQ(0, std::memcmp(a->value.data(), b->value.data(), a->value.size() * 4)) << table << " key " << k;
    }
  }
  auto a = got->GetRow("mlp", 0);
  auto b = want->GetRow("mlp", 0);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->update_count, b->update_count);
  EXPECT_EQ(0, std::memcmp(a->value.data(), b->value.data(), a->value.size() * 4));
}

// Slot layout: weights and state, then the 40-byte header at an 8-byte boundary; the stride is a
// multiple of 64 when that pads by at most an eighth of the slot.
TEST(ParamStoreTest, SlotBytesFollowTheLayoutRule) {
  EXPECT_EQ(ParamStore::SlotBytes(96), 448u);  // dim 32 adam: 384 + 40 = 424 -> 448 (24 <= 53)
  EXPECT_EQ(ParamStore::SlotBytes(3), 56u);    // 12 -> 16 + 40 = 56; 64 would pad 8 > 7
  EXPECT_EQ(ParamStore::SlotBytes(32), 168u);  // dim 32 sgd: 128 + 40 = 168; 192 would pad 24 > 21
}

TEST(ParamStoreTest, PullOfUnseenKeysReturnsInitialValuesAndWritesNothing) {
  auto mem = std::make_unique<MemoryStorage>(Spaces());
  MemoryStorage* raw = mem.get();
  auto store = OpenOrDie(Quiet(), std::move(mem));
  const uint64_t writes = raw->writes();
  std::vector<Key> keys = {1, 99, 1, 123456789};
  std::vector<float> out(keys.size() * 4);
  ASSERT_TRUE(store->Pull("emb", keys, out.data()).ok());
  const TableSpec* spec = store->FindTable("emb");
  for (size_t i = 0; i < keys.size(); ++i) {
    float want[4];
    InitializeRow(spec->init, Hash64("emb"), keys[i], want, 4);
    EXPECT_EQ(0, std::memcmp(want, out.data() + i * 4, sizeof(want)));
  }
  // Pulling again (now cached) gives the same values.
  std::vector<float> again(out.size());
  ASSERT_TRUE(store->Pull("emb", keys, again.data()).ok());
  EXPECT_EQ(out, again);
  ASSERT_TRUE(store->Flush().ok());
  EXPECT_EQ(raw->writes(), writes);
  EXPECT_EQ(raw->Count(*raw->FindSpace("rows")), 0u);
  auto row = store->GetRow("emb", 99);
  ASSERT_TRUE(row.ok());
  EXPECT_EQ(row->update_count, 0u);
}

// Pulls take a specialized path for rows of whole cache lines (dim 16, 32, 64, 128) and a general
// one for every other width. Each width: a big pull (resident rows, rows only in storage after
// eviction, never-seen keys, repeats) must give, at every position, the row GetRow reads.
TEST(ParamStoreTest, PullsOfEveryRowWidthGiveTheStoredRows) {
  const std::vector<uint32_t> dims = {1, 3, 15, 16, 17, 32, 48, 64, 100, 128};
  std::vector<TableSpec> tables;
  for (uint32_t d : dims) {
    TableSpec t;
    t.name = "t" + std::to_string(d);
    t.dim = d;
    t.optimizer = DefaultOptimizerSpec(OptimizerKind::kAdagrad);
    t.init.kind = InitKind::kNormal;
    t.init.scale = 0.1f;
    tables.push_back(t);
  }
  StoreOptions o = Quiet();
  o.cache_bytes = 1 << 20;  // far fewer rows than are pushed: some rows are read back from storage
  auto store = OpenOrDie(o, std::make_unique<MemoryStorage>(Spaces()), tables);
  ASSERT_NE(store, nullptr);
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<float> g(-1.0f, 1.0f);
  for (uint32_t d : dims) {
    SCOPED_TRACE("dim " + std::to_string(d));
    const std::string name = "t" + std::to_string(d);
    std::vector<Key> pushed(3000);
    std::iota(pushed.begin(), pushed.end(), Key{1000});
    std::vector<float> grads(pushed.size() * d);
    for (auto& x : grads) x = g(rng);
    ASSERT_TRUE(store->Push(name, pushed, grads, 1).ok());
    ASSERT_TRUE(store->Flush().ok());
    // 4000 positions: pushed keys, keys never seen, and repeats of both.
    std::vector<Key> keys;
    for (int i = 0; i < 4000; ++i) {
      const Key k = rng() % 3 == 0 ? Key{100000} + rng() % 500 : Key{1000} + rng() % 3000;
      keys.push_back(k);
    }
    std::vector<float> out(keys.size() * d, -7.0f);
    ASSERT_TRUE(store->Pull(name, keys, out.data()).ok());
    // Pull again: now the rows are resident where the first pull loaded them.
    std::vector<float> again(keys.size() * d, -8.0f);
    ASSERT_TRUE(store->Pull(name, keys, again.data()).ok());
    for (size_t i = 0; i < keys.size(); ++i) {
      auto row = store->GetRow(name, keys[i]);
      ASSERT_TRUE(row.ok()) << row.status();
      ASSERT_EQ(row->value.size(), d);
      ASSERT_EQ(0, std::memcmp(row->value.data(), out.data() + i * d, d * sizeof(float))) << "position " << i;
      ASSERT_EQ(0, std::memcmp(row->value.data(), again.data() + i * d, d * sizeof(float))) << "position " << i;
      ASSERT_EQ(row->update_count, keys[i] < 100000 ? 1u : 0u) << "position " << i;
    }
  }
}

TEST(ParamStoreTest, DuplicateKeysInOnePushAreSummed) {
  auto a = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  auto b = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  std::vector<float> g1 = {1, 2, 3, 4}, g2 = {-1, 0.5f, 0, 2}, g3 = {0.25f, 0.25f, -3, 1};
  std::vector<float> grads;
  for (auto* g : {&g1, &g2, &g3}) grads.insert(grads.end(), g->begin(), g->end());
  ASSERT_TRUE(a->Push("emb", std::vector<Key>{5, 7, 5}, grads, 3).ok());
  std::vector<float> summed;
  for (int i = 0; i < 4; ++i) summed.push_back(g1[i] + g3[i]);
  summed.insert(summed.end(), g2.begin(), g2.end());
  ASSERT_TRUE(b->Push("emb", std::vector<Key>{5, 7}, summed, 3).ok());
  // Both rows equal in the two stores, with `updates` updates (a push with a repeat is one).
  auto expect_same = [&](uint64_t updates, uint64_t step) {
    for (Key k : {5, 7}) {
      auto ra = a->GetRow("emb", k);
      auto rb = b->GetRow("emb", k);
      ASSERT_TRUE(ra.ok() && rb.ok());
      EXPECT_EQ(ra->update_count, updates) << "key " << k;
      EXPECT_EQ(ra->last_step, step) << "key " << k;
      EXPECT_EQ(0, std::memcmp(ra->value.data(), rb->value.data(), 16)) << "key " << k;
    }
  };
  expect_same(1, 3);
  // Again, now that the rows are resident (the repeats are found from the rows' slots), after a
  // push of distinct keys that includes both.
  grads = g2;
  grads.insert(grads.end(), g1.begin(), g1.end());
  ASSERT_TRUE(a->Push("emb", std::vector<Key>{7, 5}, grads, 4).ok());
  ASSERT_TRUE(b->Push("emb", std::vector<Key>{7, 5}, grads, 4).ok());
  grads.clear();
  for (auto* g : {&g3, &g1, &g2}) grads.insert(grads.end(), g->begin(), g->end());
  ASSERT_TRUE(a->Push("emb", std::vector<Key>{7, 5, 7}, grads, 5).ok());
  summed.clear();
  for (int i = 0; i < 4; ++i) summed.push_back(g3[i] + g2[i]);
  summed.insert(summed.end(), g1.begin(), g1.end());
  ASSERT_TRUE(b->Push("emb", std::vector<Key>{7, 5}, summed, 5).ok());
  expect_same(3, 5);
}

// A big push with many repeats (several per key, scattered) equals one push of the per-key sums,
// added in the order the repeats come, with one update per row.
TEST(ParamStoreTest, ManyScatteredDuplicatesInOnePushAreSummedInOrder) {
  auto a = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  auto b = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  std::mt19937_64 rng(3);
  std::vector<Key> keys(6000);
  std::vector<float> grads(keys.size() * 4);
  for (size_t i = 0; i < keys.size(); ++i) {
    // The first 1000 positions are all distinct (the first repeat comes late), then repeats.
    keys[i] = i < 1000 ? Key{i} * 7919 : Key{rng() % 1500} * 7919;
    for (int d = 0; d < 4; ++d) grads[i * 4 + d] = std::uniform_real_distribution<float>(-1, 1)(rng);
  }
  const auto [uniq, summed] = SumPerKey(keys, grads, 4);
  ASSERT_TRUE(a->Push("emb", keys, grads, 5).ok());
  ASSERT_TRUE(b->Push("emb", uniq, summed, 5).ok());
  std::vector<float> va(uniq.size() * 4), vb(uniq.size() * 4);
  ASSERT_TRUE(a->Pull("emb", uniq, va.data()).ok());
  ASSERT_TRUE(b->Pull("emb", uniq, vb.data()).ok());
  EXPECT_EQ(va, vb);
  for (Key k : {uniq.front(), uniq[1200], uniq.back()}) {
    auto r = a->GetRow("emb", k);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r->update_count, 1u);
  }
}

// Repeats among rows that are not resident: a cache far smaller than the table, whose rows were
// written back and evicted, so that the push reads most of its rows back from RocksDB (and may
// evict others to make room) before it finds and sums its repeats. The rows must equal those of a
// reference pushed the per-key sums by hand, and the push counts each distinct key once, as a
// hit or as a miss.
TEST(ParamStoreTest, RepeatsAmongRowsReadBackFromStorageAreSummedAndCountedOnce) {
  TempDir dir;
  StoreOptions o = Quiet();
  o.data_dir = dir.path();
  o.cache_bytes = 40 << 10;  // "emb" rows cost ~104 bytes: ~400 of the 2000 fit
  o.writeback_dirty_bytes = 8 << 10;
  auto a = OpenOrDie(o, OpenRocks(dir.path()));
  auto b = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  constexpr size_t kKeys = 2000, kDim = 4;
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<Key> all(kKeys);
  std::vector<float> g0(kKeys * kDim);
  for (size_t i = 0; i < kKeys; ++i) all[i] = Key{i} * 104729;
  for (auto& x : g0) x = u(rng);
  // Every row stored, 200 at a time, written back after each: the first ones are evicted.
  for (size_t at = 0; at < kKeys; at += 200) {
    const std::span<const Key> k(all.data() + at, 200);
    const std::span<const float> g(g0.data() + at * kDim, 200 * kDim);
    ASSERT_TRUE(a->Push("emb", k, g, 1).ok());
    ASSERT_TRUE(b->Push("emb", k, g, 1).ok());
    ASSERT_TRUE(a->Flush().ok());
  }
  for (int round = 0; round < 3; ++round) {
    std::vector<Key> keys(1500);
    std::vector<float> grads(keys.size() * kDim);
    for (auto& k : keys) k = all[rng() % 600];  // ~2.5 positions per key
    for (auto& x : grads) x = u(rng);
    const auto [uniq, summed] = SumPerKey(keys, grads, kDim);
    const StoreStats before = a->Stats();
    ASSERT_TRUE(a->Push("emb", keys, grads, 2 + round).ok());
    const StoreStats after = a->Stats();
    ASSERT_TRUE(b->Push("emb", uniq, summed, 2 + round).ok());
    EXPECT_GT(after.cache_misses, before.cache_misses) << "round " << round << ": no row was read back";
    EXPECT_EQ((after.cache_hits - before.cache_hits) + (after.cache_misses - before.cache_misses), uniq.size())
        << "round " << round;
  }
  for (Key k : all) {
    auto ra = a->GetRow("emb", k);
    auto rb = b->GetRow("emb", k);
    ASSERT_TRUE(ra.ok() && rb.ok());
    ASSERT_EQ(ra->update_count, rb->update_count) << "key " << k;
    ASSERT_EQ(ra->last_step, rb->last_step) << "key " << k;
    ASSERT_EQ(0, std::memcmp(ra->value.data(), rb->value.data(), kDim * 4)) << "key " << k;
  }
}

TEST(ParamStoreTest, OptimizerIsAppliedPerRow) {
  auto store = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  // "lin": sgd, lr 0.5, zero init. Key 3 pushed twice, key 4 once: w = -0.5 * sum(g).
  ASSERT_TRUE(store->Push("lin", std::vector<Key>{3, 4}, std::vector<float>{1, -2, 4, 8}, 1).ok());
  ASSERT_TRUE(store->Push("lin", std::vector<Key>{3}, std::vector<float>{0.5f, 0.5f}, 2).ok());
  std::vector<float> out(4);
  ASSERT_TRUE(store->Pull("lin", std::vector<Key>{3, 4}, out.data()).ok());
  EXPECT_EQ(out, (std::vector<float>{-0.75f, 0.75f, -2.0f, -4.0f}));
  auto r = store->GetRow("lin", 3);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->update_count, 2u);
  EXPECT_EQ(r->last_step, 2u);
  // Adam's bias correction counts this row's updates: a first update moves each coordinate by lr.
  ASSERT_TRUE(store->Push("emb", std::vector<Key>{11}, std::vector<float>{3, -3, 0.5f, -0.5f}, 9).ok());
  float init[4];
  InitializeRow(store->FindTable("emb")->init, Hash64("emb"), 11, init, 4);
  auto e = store->GetRow("emb", 11);
  ASSERT_TRUE(e.ok());
  EXPECT_NEAR(e->value[0], init[0] - 0.01f, 1e-6f);
  EXPECT_NEAR(e->value[1], init[1] + 0.01f, 1e-6f);
}

TEST(ParamStoreTest, DenseTensorsArePulledAndPushedWhole) {
  auto store = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  std::vector<float> w(10);
  ASSERT_TRUE(store->PullDense("mlp", w.data()).ok());
  float init[10];
  InitializeRow(store->FindTable("mlp")->init, Hash64("mlp"), 0, init, 10);
  EXPECT_EQ(0, std::memcmp(init, w.data(), sizeof(init)));
  for (float x : w) EXPECT_LE(std::fabs(x), 0.5f);
  std::vector<float> g(10, 1.0f);
  ASSERT_TRUE(store->PushDense("mlp", g, 1).ok());
  ASSERT_TRUE(store->PullDense("mlp", w.data()).ok());
  // adagrad lr 0.1, n = 0.1 + 1: w = init - 0.1 / sqrt(1.1)
  for (int i = 0; i < 10; ++i) EXPECT_NEAR(w[i], init[i] - 0.1f / std::sqrt(1.1f), 1e-6f);
}

TEST(ParamStoreTest, ArgumentErrorsAreTyped) {
  auto store = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  std::vector<float> out(8);
  EXPECT_EQ(store->Pull("nope", std::vector<Key>{1}, out.data()).code(), StatusCode::kNotFound);
  EXPECT_EQ(store->Push("nope", std::vector<Key>{1}, out, 1).code(), StatusCode::kNotFound);
  Status s = store->Push("emb", std::vector<Key>{1, 2}, std::vector<float>(7), 1);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("8 gradient floats"), std::string::npos) << s;
  EXPECT_EQ(store->PushDense("mlp", std::vector<float>(9), 1).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->PullDense("emb", out.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->Pull("mlp", std::vector<Key>{0}, out.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store->GetRow("nope", 1).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(store->FindTable("nope"), nullptr);
  // Nothing was logged by the failed calls.
  EXPECT_EQ(store->Stats().log_records, 0u);
}

TEST(ParamStoreTest, WriteBackTruncatesTheLog) {
  auto mem = std::make_unique<MemoryStorage>(Spaces());
  MemoryStorage* raw = mem.get();
  auto store = OpenOrDie(Quiet(), std::move(mem));
  const StorageSpace log = *raw->FindSpace("log"), rows = *raw->FindSpace("rows");
  ASSERT_TRUE(store->Push("lin", std::vector<Key>{1, 2}, std::vector<float>(4, 1.0f), 1).ok());
  ASSERT_TRUE(store->Push("lin", std::vector<Key>{2, 3}, std::vector<float>(4, 1.0f), 2).ok());
  // One log record per push, no row writes yet.
  EXPECT_EQ(raw->Count(log), 2u);
  EXPECT_EQ(raw->Count(rows), 0u);
  EXPECT_EQ(store->Stats().rows_dirty, 3u);
  ASSERT_TRUE(store->Flush().ok());
  EXPECT_EQ(raw->Count(log), 0u);
  EXPECT_EQ(raw->Count(rows), 3u);
  StoreStats st = store->Stats();
  EXPECT_EQ(st.rows_dirty, 0u);
  EXPECT_EQ(st.writebacks, 1u);
  EXPECT_EQ(st.rows_written, 3u);
  EXPECT_EQ(st.log_records_pending, 0u);
}

TEST(ParamStoreTest, BackgroundWriterWritesBackOnItsOwn) {
  auto mem = std::make_unique<MemoryStorage>(Spaces());
  MemoryStorage* raw = mem.get();
  StoreOptions o;
  o.writeback_interval_ms = 10;
  auto store = OpenOrDie(o, std::move(mem));
  ASSERT_TRUE(store->Push("lin", std::vector<Key>{1}, std::vector<float>(2, 1.0f), 1).ok());
  for (int i = 0; i < 500 && store->Stats().writebacks == 0; ++i) usleep(2000);
  EXPECT_GE(store->Stats().writebacks, 1u);
  EXPECT_EQ(raw->Count(*raw->FindSpace("log")), 0u);
}

// Destroying a store without its final write-back leaves exactly what a killed process leaves.
TEST(ParamStoreTest, RecoveryReplaysTheLogExactly) {
  auto mem = std::make_unique<MemoryStorage>(Spaces());
  auto handle = mem->Share();
  StoreOptions o = Quiet();
  o.final_flush_on_close = false;
  auto ref = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  Workload w;
  {
    auto store = OpenOrDie(o, std::move(mem));
    for (int r = 0; r < 10; ++r) w.Round(store.get(), ref.get());
    ASSERT_TRUE(store->Flush().ok());  // part of the history in rows, the rest only in the log
    for (int r = 0; r < 10; ++r) w.Round(store.get(), ref.get());
  }
  auto store = OpenOrDie(o, handle->Share());
  EXPECT_EQ(store->Stats().replayed_records, 40u);  // 10 rounds x 4 pushes
  ExpectSameState(store.get(), ref.get(), w.key_space);
  // And it goes on from there: more pushes, another crash, same result.
  for (int r = 0; r < 5; ++r) w.Round(store.get(), ref.get());
  store.reset();
  store = OpenOrDie(o, handle->Share());
  ExpectSameState(store.get(), ref.get(), w.key_space);
}

TEST(ParamStoreTest, RecoveryAfterAFailedWriteBack) {
  auto mem = std::make_unique<MemoryStorage>(Spaces());
  auto handle = mem->Share();
  StoreOptions o = Quiet();
  o.final_flush_on_close = false;
  auto ref = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  Workload w;
  {
    auto store = OpenOrDie(o, std::move(mem));
    for (int r = 0; r < 5; ++r) w.Round(store.get(), ref.get());
    handle->FailNthWrite(1);
    Status s = store->Flush();
    EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s;
    EXPECT_EQ(store->Stats().writeback_errors, 1u);
    EXPECT_GT(store->Stats().rows_dirty, 0u);  // still dirty, still served
    ExpectSameState(store.get(), ref.get(), w.key_space);
    // A failed log append fails the push and changes nothing.
    handle->FailNthWrite(1);
    EXPECT_FALSE(store->Push("lin", std::vector<Key>{1}, std::vector<float>{100, 100}, 99).ok());
    ExpectSameState(store.get(), ref.get(), w.key_space);
    for (int r = 0; r < 5; ++r) w.Round(store.get(), ref.get());
  }
  auto store = OpenOrDie(o, handle->Share());
  ExpectSameState(store.get(), ref.get(), w.key_space);
}

// A write-back in sorted runs whose second run fails: the first run's rows are stored, the rest
// stay dirty and are written by the next write-back, and nothing is lost across a crash after it.
TEST(ParamStoreTest, RecoveryAfterAFailedRunOfAWriteBack) {
  auto mem = std::make_unique<MemoryStorage>(Spaces());
  auto handle = mem->Share();
  StoreOptions o = Quiet();
  o.final_flush_on_close = false;
  o.writeback_ingest_bytes = 0;
  o.writeback_run_bytes = 1 << 10;
  auto ref = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  Workload w;
  {
    auto store = OpenOrDie(o, std::move(mem));
    for (int r = 0; r < 5; ++r) w.Round(store.get(), ref.get());
    const uint64_t dirty = store->Stats().rows_dirty;
    handle->FailNthWrite(2);
    Status s = store->Flush();
    EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s;
    StoreStats st = store->Stats();
    EXPECT_EQ(st.writeback_errors, 1u);
    EXPECT_GT(st.rows_written, 0u);     // the first run
    EXPECT_GT(st.rows_dirty, 0u);       // the failed run's rows and the ones after it
    EXPECT_LT(st.rows_dirty, dirty);
    ExpectSameState(store.get(), ref.get(), w.key_space);
    for (int r = 0; r < 3; ++r) w.Round(store.get(), ref.get());
    ASSERT_TRUE(store->Flush().ok());  // records a cut: the log before it is gone
    EXPECT_EQ(store->Stats().rows_dirty, 0u);
    for (int r = 0; r < 2; ++r) w.Round(store.get(), ref.get());
  }
  auto store = OpenOrDie(o, handle->Share());
  ExpectSameState(store.get(), ref.get(), w.key_space);
}

TEST(ParamStoreTest, TableTenTimesTheCacheStaysCorrect) {
  auto ref = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  TempDir dir;
  StoreOptions o = Quiet();
  o.data_dir = dir.path();
  // "emb" rows cost ~104 bytes with bookkeeping; 2000 keys x 3 tables ~ 500 KB: budget 40 KB.
  o.cache_bytes = 40 << 10;
  o.writeback_dirty_bytes = 8 << 10;
  Workload w;
  w.key_space = 2000;
  auto store = OpenOrDie(o, OpenRocks(dir.path()));
  for (int r = 0; r < 30; ++r) w.Round(store.get(), ref.get(), 300);
  StoreStats st = store->Stats();
  EXPECT_GT(st.writebacks, 0u);
  EXPECT_GT(st.cache_misses, 0u);
  EXPECT_LE(st.cache_bytes, o.cache_bytes * 2) << "cache far over budget";
  // Pulls of evicted rows read them back from RocksDB.
  std::vector<Key> keys(w.key_space);
  for (Key k = 0; k < w.key_space; ++k) keys[k] = k;
  std::vector<float> a(keys.size() * 4), b(keys.size() * 4);
  ASSERT_TRUE(store->Pull("emb", keys, a.data()).ok());
  ASSERT_TRUE(ref->Pull("emb", keys, b.data()).ok());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4));
  ExpectSameState(store.get(), ref.get(), w.key_space);
  EXPECT_LE(store->Stats().cache_bytes, o.cache_bytes * 2);
}

void ReopenKeepsEveryPush(bool log_in_storage, bool ingested_writebacks = false) {
  TempDir dir;
  auto ref = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  Workload w;
  StoreOptions o = FileLogOptions(dir);
  o.log_in_storage = log_in_storage;
  if (ingested_writebacks) {
    o.writeback_ingest_bytes = 0;
    o.writeback_run_bytes = 2 << 10;  // several runs per write-back
  }
  {
    auto store = OpenOrDie(o, OpenRocks(dir.path()));
    for (int r = 0; r < 6; ++r) w.Round(store.get(), ref.get());
    ASSERT_TRUE(store->Flush().ok());
    for (int r = 0; r < 6; ++r) w.Round(store.get(), ref.get());
  }
  {
    auto store = OpenOrDie(o, OpenRocks(dir.path()));
    EXPECT_EQ(store->Stats().replayed_records, 24u);
    ExpectSameState(store.get(), ref.get(), w.key_space);
    for (int r = 0; r < 3; ++r) w.Round(store.get(), ref.get());
  }
  o.final_flush_on_close = true;
  { auto store = OpenOrDie(o, OpenRocks(dir.path())); }  // replays, then a final flush
  auto store = OpenOrDie(o, OpenRocks(dir.path()));
  EXPECT_EQ(store->Stats().replayed_records, 0u);
  ExpectSameState(store.get(), ref.get(), w.key_space);
  if (!log_in_storage) {
    // The final write-back deleted every segment but the current (empty) one.
    size_t segments = 0;
    for (const auto& e : fs::directory_iterator(dir.path("pushlog"))) segments += e.path().extension() == ".seg";
    EXPECT_EQ(segments, 1u);
  }
}

TEST(ParamStoreTest, RocksDbReopenKeepsEveryPushWithTheFileLog) { ReopenKeepsEveryPush(false); }
TEST(ParamStoreTest, RocksDbReopenKeepsEveryPushWithTheLogInRocksDb) { ReopenKeepsEveryPush(true); }
TEST(ParamStoreTest, RocksDbReopenKeepsEveryPushWithIngestedWriteBacks) { ReopenKeepsEveryPush(false, true); }
TEST(ParamStoreTest, RocksDbReopenKeepsEveryPushWithIngestedWriteBacksAndTheLogInRocksDb) {
  ReopenKeepsEveryPush(true, true);
}

// Exactly-once across a crash: the origin of each push rides in its log record, and the window
// of applied pushes is stored with each write-back cut. final_flush_on_close = false leaves the
// directory as kill -9 would.
void AppliedPushIdsSurviveACrash(bool log_in_storage) {
  TempDir dir;
  StoreOptions o = FileLogOptions(dir);
  o.log_in_storage = log_in_storage;
  const PushOrigin r7{"worker-0#abc", 7}, r8{"worker-0#abc", 8}, dense9{"worker-0#abc", 9};
  {
    auto store = OpenOrDie(o, OpenRocks(dir.path()));
    ASSERT_TRUE(store->Push("lin", std::vector<Key>{1, 2}, std::vector<float>{1, 1, 1, 1}, 1, &r7).ok());
    ASSERT_TRUE(store->PushDense("mlp", std::vector<float>(10, 1.f), 1, &dense9).ok());
    EXPECT_TRUE(store->PushApplied(r7.sender, r7.request_id));
    EXPECT_FALSE(store->PushApplied(r8.sender, r8.request_id));
  }
  {  // R7's record is replayed; R7 is known as applied.
    auto store = OpenOrDie(o, OpenRocks(dir.path()));
    EXPECT_EQ(store->Stats().replayed_records, 2u);
    EXPECT_TRUE(store->PushApplied(r7.sender, r7.request_id));
    EXPECT_TRUE(store->PushApplied(dense9.sender, dense9.request_id));
    EXPECT_FALSE(store->PushApplied(r7.sender, 8));
    EXPECT_FALSE(store->PushApplied("worker-1#def", 7));
    EXPECT_EQ(store->GetRow("lin", 1)->update_count, 1u);
    EXPECT_EQ(store->GetRow("mlp", 0)->update_count, 1u);
    // A write-back cut drops R7's record; R8 is logged after the cut.
    ASSERT_TRUE(store->Flush().ok());
    ASSERT_TRUE(store->Push("lin", std::vector<Key>{1}, std::vector<float>{1, 1}, 2, &r8).ok());
  }
  {  // Only R8's record is left to replay; R7 is known from the window stored with the cut.
    auto store = OpenOrDie(o, OpenRocks(dir.path()));
    EXPECT_EQ(store->Stats().replayed_records, 1u);
    EXPECT_TRUE(store->PushApplied(r7.sender, r7.request_id));
    EXPECT_TRUE(store->PushApplied(r8.sender, r8.request_id));
    EXPECT_TRUE(store->PushApplied(dense9.sender, dense9.request_id));
    EXPECT_EQ(store->GetRow("lin", 1)->update_count, 2u);
    EXPECT_EQ(store->GetRow("lin", 2)->update_count, 1u);
    // Cut again (R8's record dropped too), then crash with nothing in the log.
    ASSERT_TRUE(store->Flush().ok());
  }
  auto store = OpenOrDie(o, OpenRocks(dir.path()));
  EXPECT_EQ(store->Stats().replayed_records, 0u);
  EXPECT_TRUE(store->PushApplied(r7.sender, r7.request_id));
  EXPECT_TRUE(store->PushApplied(r8.sender, r8.request_id));
  EXPECT_EQ(store->GetRow("lin", 1)->update_count, 2u);
}

TEST(ParamStoreTest, AppliedPushIdsSurviveACrashWithTheFileLog) { AppliedPushIdsSurviveACrash(false); }
TEST(ParamStoreTest, AppliedPushIdsSurviveACrashWithTheLogInRocksDb) { AppliedPushIdsSurviveACrash(true); }

TEST(ParamStoreTest, TheStoredWindowKeepsItsBounds) {
  TempDir dir;
  StoreOptions o = FileLogOptions(dir);
  o.dedupe_senders = 2;
  o.dedupe_ids_per_sender = 2;
  {
    auto store = OpenOrDie(o, OpenRocks(dir.path()));
    for (uint64_t id = 1; id <= 3; ++id) {
      const PushOrigin origin{"a", id};
      ASSERT_TRUE(store->Push("lin", std::vector<Key>{1}, std::vector<float>{1, 1}, id, &origin).ok());
      if (id == 2) {
        ASSERT_TRUE(store->Flush().ok());  // ids 1, 2 stored with the cut; 3 in the log
      }
    }
    for (const char* sender : {"b", "c"}) {
      const PushOrigin origin{sender, 1};
      ASSERT_TRUE(store->Push("lin", std::vector<Key>{2}, std::vector<float>{1, 1}, 1, &origin).ok());
    }
  }
  auto store = OpenOrDie(o, OpenRocks(dir.path()));
  EXPECT_FALSE(store->PushApplied("a", 1));  // "a" was the least recently active sender
  EXPECT_FALSE(store->PushApplied("a", 3));
  EXPECT_TRUE(store->PushApplied("b", 1));
  EXPECT_TRUE(store->PushApplied("c", 1));
  EXPECT_EQ(store->GetRow("lin", 1)->update_count, 3u);
}

TEST(ParamStoreTest, ACheckpointCarriesTheWindowOfAppliedPushes) {
  TempDir dir;
  StoreOptions o = Quiet();
  o.data_dir = dir.path("live");
  const PushOrigin before{"w#1", 1}, after{"w#1", 2};
  auto store = OpenOrDie(o, OpenRocks(o.data_dir));
  ASSERT_TRUE(store->Push("lin", std::vector<Key>{5}, std::vector<float>{1, 1}, 1, &before).ok());
  ASSERT_TRUE(store->Checkpoint(dir.path("ckpt")).ok());
  ASSERT_TRUE(store->Push("lin", std::vector<Key>{5}, std::vector<float>{1, 1}, 2, &after).ok());
  StoreOptions r = Quiet();
  r.data_dir = dir.path("restored");
  r.restore_from = dir.path("ckpt");
  ASSERT_TRUE(ParamStore::PrepareDataDir(r).ok());
  auto restored = OpenOrDie(r, OpenRocks(r.data_dir));
  EXPECT_TRUE(restored->PushApplied(before.sender, before.request_id));
  EXPECT_FALSE(restored->PushApplied(after.sender, after.request_id));  // after the checkpoint
  EXPECT_EQ(restored->GetRow("lin", 5)->update_count, 1u);
}

// A store written before pushes carried their origin (format metaps-ps-1, PLG1 records only)
// opens, replays and is upgraded; an unknown format is refused by name.
TEST(ParamStoreTest, AnOlderFormatOpensAndAnUnknownOneIsRefused) {
  TempDir dir;
  StoreOptions o = FileLogOptions(dir);
  {
    auto store = OpenOrDie(o, OpenRocks(dir.path()));
    ASSERT_TRUE(store->Push("lin", std::vector<Key>{1}, std::vector<float>{1, 1}, 1).ok());  // no origin: PLG1
  }
  auto set_format = [&](const std::string& v) {
    auto s = OpenRocks(dir.path());
    StorageBatch b;
    b.Put(*s->FindSpace("meta"), "format", v);
    ASSERT_TRUE(s->Write(b, true).ok());
    ASSERT_TRUE(s->Close().ok());
  };
  set_format("metaps-ps-1");
  {
    auto store = OpenOrDie(o, OpenRocks(dir.path()));
    EXPECT_EQ(store->Stats().replayed_records, 1u);
    EXPECT_EQ(store->GetRow("lin", 1)->update_count, 1u);
  }
  {
    auto s = OpenRocks(dir.path());
    std::string v;
    ASSERT_TRUE(s->Get(*s->FindSpace("meta"), "format", &v).ok());
    EXPECT_EQ(v, "metaps-ps-2");
    ASSERT_TRUE(s->Close().ok());
  }
  set_format("metaps-ps-9");
  auto refused = ParamStore::Open(o, Tables(), OpenRocks(dir.path()));
  EXPECT_EQ(refused.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.status().ToString().find("metaps-ps-9"), std::string::npos) << refused.status();
}

TEST(ParamStoreTest, PendingFileLogIsNotSilentlyIgnored) {
  TempDir dir;
  StoreOptions o = FileLogOptions(dir);
  {
    auto store = OpenOrDie(o, OpenRocks(dir.path()));
    ASSERT_TRUE(store->Push("lin", std::vector<Key>{1}, std::vector<float>{1, 1}, 1).ok());
  }
  // Opening the same database without data_dir would not see data_dir/pushlog.
  auto s = ParamStore::Open(Quiet(), Tables(), OpenRocks(dir.path()));
  EXPECT_EQ(s.status().code(), StatusCode::kFailedPrecondition) << s.status();
  // Switching to the log in storage is allowed once nothing is pending.
  { auto store = OpenOrDie(o, OpenRocks(dir.path())); ASSERT_TRUE(store->Flush().ok()); }
  o.log_in_storage = true;
  auto store = OpenOrDie(o, OpenRocks(dir.path()));
  EXPECT_EQ(store->GetRow("lin", 1)->update_count, 1u);
}

// The push log's segment files, oldest first, and its spare (retired, kept for reuse) files.
std::vector<fs::path> Segments(const std::string& log_dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(log_dir)) {
    if (e.path().extension() == ".seg") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}
std::vector<fs::path> Spares(const std::string& log_dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(log_dir)) {
    if (e.path().filename().string().starts_with("spare-")) out.push_back(e.path());
  }
  return out;
}
ino_t Inode(const fs::path& p) {
  struct stat st {};
  EXPECT_EQ(0, ::stat(p.c_str(), &st)) << p;
  return st.st_ino;
}

// Runs `f` with the process's file-size limit (RLIMIT_FSIZE) at `limit` bytes and SIGXFSZ
// ignored, so that a write past it fails with EFBIG; restores both. Returns what f returned.
Status WithFileSizeLimit(rlim_t limit, const std::function<Status()>& f) {
  rlimit old{};
  if (getrlimit(RLIMIT_FSIZE, &old) != 0) return Internal("getrlimit failed");
  auto old_handler = signal(SIGXFSZ, SIG_IGN);
  rlimit small = old;
  small.rlim_cur = limit;
  if (setrlimit(RLIMIT_FSIZE, &small) != 0) return Internal("setrlimit failed");
  Status st = f();
  const bool restored = setrlimit(RLIMIT_FSIZE, &old) == 0;
  signal(SIGXFSZ, old_handler);
  if (!restored) return Internal("cannot restore RLIMIT_FSIZE");
  return st;
}

TEST(ParamStoreTest, TornLogTailIsCutOff) {
  for (bool direct : {true, false}) {
    SCOPED_TRACE(LogWrites(direct));
    TempDir dir;
    auto ref = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
    Workload w;
    StoreOptions o = FileLogOptions(dir, direct);
    {
      auto store = OpenOrDie(o, OpenRocks(dir.path()));
      for (int r = 0; r < 4; ++r) w.Round(store.get(), ref.get());
    }
    // A write that never completed: half a record header and some garbage at the end.
    const fs::path last = Segments(dir.path("pushlog")).back();
    {
      std::ofstream out(last, std::ios::binary | std::ios::app);
      out.write("PSLR\x10\x00\x00\x00garbage", 15);
    }
    {
      auto store = OpenOrDie(o, OpenRocks(dir.path()));
      EXPECT_EQ(store->Stats().replayed_records, 16u);
      ExpectSameState(store.get(), ref.get(), w.key_space);
      for (int r = 0; r < 2; ++r) w.Round(store.get(), ref.get());  // appends after the cut-off point
    }
    auto store = OpenOrDie(o, OpenRocks(dir.path()));
    ExpectSameState(store.get(), ref.get(), w.key_space);
  }
}

// Segments retired by a write-back are reused for the next ones (same files, overwritten from
// the start). A reused file still holds records of its previous life after the new ones; with
// pushes of one size (the usual case: fixed batches) they begin right where the new records
// end and are intact records in themselves. A replay after a crash takes exactly the records of
// the current life, also across a second restart over the segments the first one left. With
// `sync` (fdatasync per record, the spare's header synced before its rename, the directory after)
// the same holds.
void RecycledLogSegmentsReplayOnlyTheirOwnRecords(bool sync, bool direct) {
  TempDir dir;
  auto ref = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  StoreOptions o = Quiet();
  o.data_dir = dir.path();
  o.sync = sync;
  o.log_io = direct ? LogIo::kDirect : LogIo::kBuffered;
  o.final_flush_on_close = false;
  o.log_segment_bytes = 4096;  // four of the pushes below
  std::mt19937_64 rng(5);
  uint64_t step = 0;
  auto push = [&](ParamStore* store, int n) {
    for (int i = 0; i < n; ++i) {
      ++step;
      std::vector<Key> keys(40);
      for (size_t k = 0; k < keys.size(); ++k) keys[k] = (rng() % 5) * 40 + k;  // 40 distinct keys
      std::vector<float> grads(keys.size() * 4);
      std::normal_distribution<float> g(0.0f, 1.0f);
      for (auto& x : grads) x = g(rng);
      ASSERT_TRUE(store->Push("emb", keys, grads, step).ok());
      ASSERT_TRUE(ref->Push("emb", keys, grads, step).ok());
    }
  };
  std::set<ino_t> retired;
  {
    auto store = OpenOrDie(o, OpenRocks(dir.path()));
    push(store.get(), 30);
    ASSERT_GE(Segments(dir.path("pushlog")).size(), 7u);
    ASSERT_TRUE(store->Flush().ok());
    for (const auto& p : Spares(dir.path("pushlog"))) retired.insert(Inode(p));
    ASSERT_GE(retired.size(), 6u);
    const StoreStats before = store->Stats();
    EXPECT_EQ(before.log_segments_reused, 0u);  // nothing retired yet when they started
    EXPECT_GE(before.log_segments_created, 7u);
    push(store.get(), 17);  // ends part-way into a reused segment
    // Every segment started since came from a spare (there were enough of them).
    EXPECT_EQ(store->Stats().log_segments_created, before.log_segments_created);
    EXPECT_GE(store->Stats().log_segments_reused, 4u);
  }
  size_t reused = 0;
  for (const auto& p : Segments(dir.path("pushlog"))) reused += retired.count(Inode(p));
  EXPECT_GE(reused, 4u);
  {
    auto store = OpenOrDie(o, OpenRocks(dir.path()));
    EXPECT_EQ(store->Stats().replayed_records, 17u);
    ExpectSameState(store.get(), ref.get(), 200);
    push(store.get(), 10);
  }
  auto store = OpenOrDie(o, OpenRocks(dir.path()));
  EXPECT_EQ(store->Stats().replayed_records, 27u);
  ExpectSameState(store.get(), ref.get(), 200);
}

TEST(ParamStoreTest, RecycledLogSegmentsReplayOnlyTheirOwnRecords) { RecycledLogSegmentsReplayOnlyTheirOwnRecords(false, true); }
TEST(ParamStoreTest, RecycledLogSegmentsReplayOnlyTheirOwnRecordsWithSync) {
  RecycledLogSegmentsReplayOnlyTheirOwnRecords(true, true);
}
TEST(ParamStoreTest, RecycledLogSegmentsReplayOnlyTheirOwnRecordsBuffered) {
  RecycledLogSegmentsReplayOnlyTheirOwnRecords(false, false);
}
TEST(ParamStoreTest, RecycledLogSegmentsReplayOnlyTheirOwnRecordsBufferedWithSync) {
  RecycledLogSegmentsReplayOnlyTheirOwnRecords(true, false);
}

// Retired segments are kept for reuse while the log's files (segments and spares) number at
// most twice its write-back bound plus two (here 2 x 2 + 2 = 6 files of 4 KiB), so a log that
// grows past the bound while a write-back runs does not create and delete files on every cycle;
// beyond that they are deleted: pushes far past the bound leave at most 6 files once flushed,
// and every acknowledged push is still there after a kill.
TEST(ParamStoreTest, TheLogKeepsAtMostTwiceItsWritebackBoundInFiles) {
  TempDir dir;
  Workload w;
  StoreOptions o = FileLogOptions(dir);
  o.log_segment_bytes = 4096;
  o.writeback_log_bytes = 8192;
  auto ref = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  {
    auto store = OpenOrDie(o, OpenRocks(dir.path()));
    // The pushes outrun the background write-backs (each persists a memtable), so the log grows
    // well past 6 segments before the flush retires them.
    for (int r = 0; r < 30; ++r) w.Round(store.get(), ref.get());
    ASSERT_TRUE(store->Flush().ok());
    const size_t files = Segments(dir.path("pushlog")).size() + Spares(dir.path("pushlog")).size();
    EXPECT_GE(files, 1u);
    EXPECT_LE(files, 6u);
    // The flush left retired segments as spares; the next segments reuse them. (Checked after
    // these rounds: a writer thread that got no core during the 30 rounds retired nothing
    // before the flush, and then nothing could have been reused yet.)
    for (int r = 0; r < 10; ++r) w.Round(store.get(), ref.get());
    EXPECT_GT(store->Stats().log_segments_reused, 0u);
  }
  auto store = OpenOrDie(o, OpenRocks(dir.path()));
  ExpectSameState(store.get(), ref.get(), w.key_space);
}

// A damaged record in a segment that is not the last cannot be a torn write: the records after
// it would be lost, so opening the store fails with DataLoss, naming the segment. Damaging the
// first record of the log, or the last of a segment, is found too.
TEST(ParamStoreTest, ADamagedRecordInsideTheLogIsDataLoss) {
  for (bool direct : {true, false})
  for (const char* where : {"first record", "middle record", "last record of the first segment"}) {
    SCOPED_TRACE(std::string(where) + ", " + LogWrites(direct));
    TempDir dir;
    Workload w;
    StoreOptions o = FileLogOptions(dir, direct);
    o.log_segment_bytes = 4096;
    {
      auto store = OpenOrDie(o, OpenRocks(dir.path()));
      for (int r = 0; r < 6; ++r) w.Round(store.get(), nullptr);
    }
    const auto segments = Segments(dir.path("pushlog"));
    ASSERT_GE(segments.size(), 3u);
    // Walk the first segment's records: {u32 magic, u32 bytes, u64 seq, u64 checksum} payload,
    // after the 24-byte segment header.
    std::string bytes;
    {
      std::ifstream in(segments[0], std::ios::binary);
      bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    // (Direct writes leave the segment's last block zero-filled after its last record.)
    std::vector<size_t> records;
    for (size_t pos = 24; pos + 24 <= bytes.size();) {
      uint32_t magic = 0, len = 0;
      std::memcpy(&magic, bytes.data() + pos, 4);
      std::memcpy(&len, bytes.data() + pos + 4, 4);
      if (magic != 0x524c5350) break;  // "PSLR"
      records.push_back(pos);
      pos += 24 + len;
    }
    ASSERT_GE(records.size(), 3u);
    const size_t at = std::string(where) == "first record" ? records[0]
                      : std::string(where) == "middle record" ? records[records.size() / 2]
                                                               : records.back();
    {
      std::fstream f(segments[0], std::ios::binary | std::ios::in | std::ios::out);
      f.seekp(static_cast<std::streamoff>(at + 24 + 3));
      f.put(static_cast<char>(bytes[at + 24 + 3] ^ 0x5a));
    }
    auto s = ParamStore::Open(o, Tables(), OpenRocks(dir.path()));
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.status().code(), StatusCode::kDataLoss) << s.status();
  }
}

std::string SourceDir() {
  const char* src = std::getenv("METAPS_SOURCE");
  return src != nullptr ? src : METAPS_SOURCE_DIR;
}

// A push log written by the build before XXH3 record checksums (segment format version 1:
// ps/testdata/pushlog-v1, the first 6 rounds of Workload on 4096-byte segments, left as a killed
// process leaves it) is replayed by this build, which then writes version 2 segments after it. An
// unknown version is refused by name.
TEST(ParamStoreTest, APushLogOfSegmentVersionOneIsReplayed) {
  TempDir dir;
  fs::create_directories(dir.path());
  fs::copy(SourceDir() + "/ps/testdata/pushlog-v1", dir.path("pushlog"), fs::copy_options::recursive);
  for (const auto& p : Segments(dir.path("pushlog"))) {
    uint32_t version = 0;
    std::ifstream(p, std::ios::binary).seekg(4).read(reinterpret_cast<char*>(&version), 4);
    ASSERT_EQ(version, 1u) << p;
  }
  ASSERT_GE(Segments(dir.path("pushlog")).size(), 3u);
  auto ref = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  Workload w;
  StoreOptions o = Quiet();
  o.data_dir = dir.path();
  o.final_flush_on_close = false;
  o.log_segment_bytes = 4096;
  auto mem = std::make_unique<MemoryStorage>(Spaces());
  auto handle = mem->Share();
  {
    auto store = OpenOrDie(o, std::move(mem));
    ASSERT_NE(store, nullptr);
    for (int r = 0; r < 6; ++r) w.Round(ref.get(), nullptr);
    EXPECT_EQ(store->Stats().replayed_records, 24u);  // 6 rounds x 4 pushes
    ExpectSameState(store.get(), ref.get(), w.key_space);
    for (int r = 0; r < 3; ++r) w.Round(store.get(), ref.get());  // in version 2 segments
  }
  const auto segments = Segments(dir.path("pushlog"));
  {
    auto store = OpenOrDie(o, handle->Share());
    EXPECT_EQ(store->Stats().replayed_records, 36u);
    ExpectSameState(store.get(), ref.get(), w.key_space);
  }
  uint32_t version = 3;
  std::fstream(segments.front(), std::ios::binary | std::ios::in | std::ios::out)
      .seekp(4)
      .write(reinterpret_cast<const char*>(&version), 4);
  auto s = ParamStore::Open(o, Tables(), handle->Share());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), StatusCode::kDataLoss) << s.status();
  EXPECT_NE(s.status().message().find("format version 3"), std::string::npos) << s.status();
}

// A small push whose log append fails part-way (here: the file-size limit) is not applied, and
// the bytes it left in the segment do not hide the pushes after it: the next record is written
// where the failed one began, and a replay after a crash has every acknowledged push.
TEST(ParamStoreTest, APartlyWrittenFailedAppendDoesNotHideLaterPushes) {
  for (bool direct : {true, false}) {
    SCOPED_TRACE(LogWrites(direct));
    TempDir dir;
    auto ref = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
    Workload w;
    StoreOptions o = FileLogOptions(dir, direct);
    {
      auto store = OpenOrDie(o, OpenRocks(dir.path()));
      ASSERT_EQ(store->Stats().log_direct_io, direct);
      for (int r = 0; r < 3; ++r) w.Round(store.get(), ref.get());
      const auto size = fs::file_size(Segments(dir.path("pushlog")).back());
      // Buffered: the record's first 100 bytes fit. Direct writes are cut at a block boundary,
      // so there the limit is one block past the end and the record spans several blocks.
      const uint64_t limit = direct ? (size + 4095) / 4096 * 4096 + 4096 : size + 100;
      std::vector<Key> keys(direct ? 1000 : 100);
      for (size_t i = 0; i < keys.size(); ++i) keys[i] = 1000 + i;
      const std::vector<float> grads(keys.size() * 2, 1.0f);
      Status failed = WithFileSizeLimit(limit, [&] { return store->Push("lin", keys, grads, 99); });
      ASSERT_FALSE(failed.ok());
      EXPECT_GE(fs::file_size(Segments(dir.path("pushlog")).back()), limit);  // part of it is there
      EXPECT_EQ(store->GetRow("lin", 1000)->update_count, 0u);
      for (int r = 0; r < 3; ++r) w.Round(store.get(), ref.get());
      ExpectSameState(store.get(), ref.get(), w.key_space);
    }
    auto store = OpenOrDie(o, OpenRocks(dir.path()));
    EXPECT_EQ(store->Stats().replayed_records, 24u);
    ExpectSameState(store.get(), ref.get(), w.key_space);
    EXPECT_EQ(store->GetRow("lin", 1000)->update_count, 0u);
  }
}

// LogIo::kAuto (the default) writes the log directly with `sync` and through the page cache
// without; kDirect and kBuffered hold either way. Each mode's log replays after a crash.
TEST(ParamStoreTest, TheLogIsWrittenDirectlyByDefaultOnlyWithSync) {
  struct Case {
    LogIo io;
    bool sync, direct;
  };
  for (const Case& c : {Case{LogIo::kAuto, true, true}, Case{LogIo::kAuto, false, false},
                        Case{LogIo::kBuffered, true, false}, Case{LogIo::kDirect, false, true}}) {
    SCOPED_TRACE(std::string("log_io ") + std::to_string(static_cast<int>(c.io)) + (c.sync ? ", sync" : ""));
    TempDir dir;
    auto ref = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
    Workload w;
    StoreOptions o = FileLogOptions(dir);
    o.log_io = c.io;
    o.sync = c.sync;
    EXPECT_EQ(o.LogDirect(), c.direct);
    {
      auto store = OpenOrDie(o, OpenRocks(dir.path()));
      EXPECT_EQ(store->Stats().log_direct_io, c.direct);
      for (int r = 0; r < 3; ++r) w.Round(store.get(), ref.get());
    }
    auto store = OpenOrDie(o, OpenRocks(dir.path()));
    EXPECT_GT(store->Stats().replayed_records, 0u);
    ExpectSameState(store.get(), ref.get(), w.key_space);
  }
}

// Pushes of 1024 rows and more append their log record on a side thread while the optimizer
// runs on both threads: live rows, and rows replayed from the log after a crash, are bitwise what
// a store that does it all in one thread (MemoryStorage: the log in storage, no side thread) has.
// Options for a store in `dir` (file log) and a workload whose pushes of 3000 keys reach the
// big-push path (~2600 unique keys each).
StoreOptions BigPushSetup(const TempDir& dir, bool final_flush, Workload* w) {
  w->key_space = 6000;
  StoreOptions o = Quiet();
  o.data_dir = dir.path();
  o.final_flush_on_close = final_flush;
  return o;
}

TEST(ParamStoreTest, BigPushesAppendTheLogAlongsideTheOptimizerAndReplayExactly) {
  TempDir dir;
  auto ref = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  Workload w;
  StoreOptions o = BigPushSetup(dir, false, &w);
  {
    auto store = OpenOrDie(o, OpenRocks(dir.path()));
    for (int r = 0; r < 3; ++r) w.Round(store.get(), ref.get(), 3000);  // ~2600 unique keys each
    ASSERT_TRUE(store->Flush().ok());
    for (int r = 0; r < 3; ++r) w.Round(store.get(), ref.get(), 3000);
    ExpectSameState(store.get(), ref.get(), w.key_space);
  }
  auto store = OpenOrDie(o, OpenRocks(dir.path()));
  EXPECT_EQ(store->Stats().replayed_records, 12u);
  ExpectSameState(store.get(), ref.get(), w.key_space);
}

// What a durable hook saw: DurableSeq() at each call (the hook runs on the store's log thread).
class DurableHookRecorder {
 public:
  explicit DurableHookRecorder(ParamStore* store) : store_(store) {
    store->SetDurableHook([this] {
      std::lock_guard<std::mutex> l(mu_);
      seen_.push_back(store_->DurableSeq());
      cv_.notify_all();
    });
  }
  ~DurableHookRecorder() { store_->SetDurableHook(nullptr); }
  // Waits (up to 20 s) until a call saw DurableSeq() >= seq; the calls seen by then.
  std::vector<uint64_t> WaitFor(uint64_t seq) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::seconds(20), [&] { return !seen_.empty() && seen_.back() >= seq; });
    return seen_;
  }
  size_t calls() {
    std::lock_guard<std::mutex> l(mu_);
    return seen_.size();
  }

 private:
  ParamStore* store_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<uint64_t> seen_;
};

// PushDeferred returns once a big push is applied: the record is appended on the log thread
// from the buffers `hold` keeps alive, the caller's own references already gone (and the memory
// reused for garbage). Several pushes are in flight at once, more than the log thread queues
// (the caller then waits for room). Each is durable once DurableSeq reaches it, and a crash
// (no final write-back) replays them all to the reference's rows. With `sync`, the log thread
// makes the records it took together durable with one fdatasync (group commit). The durable hook
// is called as records become durable, never before: what it sees only grows, up to the last.
void DeferredBigPushesAreDurableFromTheBuffersTheyHold(bool sync, bool direct) {
  TempDir dir;
  auto ref = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  Workload w;
  StoreOptions o = BigPushSetup(dir, false, &w);
  o.sync = sync;
  o.log_io = direct ? LogIo::kDirect : LogIo::kBuffered;
  std::mt19937_64 rng(11);
  const size_t dim = ref->FindTable("emb")->dim;
  {
    auto store = OpenOrDie(o, OpenRocks(dir.path()));
    DurableHookRecorder hook(store.get());
    uint64_t last = 0;
    for (int p = 0; p < 7; ++p) {
      struct Buffers {
        std::vector<Key> keys;
        std::vector<float> grads;
      };
      auto b = std::make_shared<Buffers>();
      for (int i = 0; i < 2000; ++i) b->keys.push_back(rng() % 6000);  // some repeat: summed first
      for (size_t i = 0; i < b->keys.size() * dim; ++i) b->grads.push_back(static_cast<float>(rng() % 1000) / 500.0f - 1.0f);
      ASSERT_TRUE(ref->Push("emb", b->keys, b->grads, p).ok());
      uint64_t at = 0;
      const std::vector<Key> keys = b->keys;
      const std::vector<float> grads = b->grads;
      // Even pushes: summed by hand (unique keys, so the log thread reads the caller's buffers);
      // odd ones as they are (the store sums the repeats into buffers of its own).
      auto [uk, ug] = SumPerKey(keys, grads, dim);
      auto mine = (p % 2 == 0) ? std::make_shared<Buffers>(Buffers{uk, ug}) : b;  // odd: with repeats
      const std::span<const Key> k(mine->keys);
      const std::span<const float> g(mine->grads);
      ASSERT_TRUE(store->PushDeferred("emb", k, g, p, nullptr, mine, &at).ok());
      EXPECT_GT(at, last);
      EXPECT_GE(store->AppliedSeq(), at);
      last = at;
      mine.reset();
      b.reset();
      // Freed memory reused for garbage: a log thread reading freed buffers would log it.
      std::vector<float> garbage(keys.size() * dim, 12345.0f);
      std::vector<Key> garbage_keys(keys.size(), 77);
      ASSERT_EQ(garbage[3] + static_cast<float>(garbage_keys[2]), 12422.0f);
    }
    ASSERT_TRUE(store->WaitDurable(last).ok());
    EXPECT_GE(store->DurableSeq(), last);
    const std::vector<uint64_t> seen = hook.WaitFor(last);
    ASSERT_FALSE(seen.empty());
    EXPECT_EQ(seen.back(), last);
    EXPECT_GE(seen.front(), 1u);
    EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
    EXPECT_LE(seen.size(), 7u);  // at most once per record
    ExpectSameState(store.get(), ref.get(), w.key_space);
    const StoreStats st = store->Stats();
    if (sync) {
      EXPECT_GE(st.log_syncs, 1u);
      EXPECT_LE(st.log_syncs, st.log_records);
    } else {
      EXPECT_EQ(st.log_syncs, 0u);
    }
  }
  auto store = OpenOrDie(o, OpenRocks(dir.path()));
  EXPECT_EQ(store->Stats().replayed_records, 7u);
  ExpectSameState(store.get(), ref.get(), w.key_space);
}

TEST(ParamStoreTest, DeferredBigPushesAreDurableFromTheBuffersTheyHold) {
  DeferredBigPushesAreDurableFromTheBuffersTheyHold(false, true);
}
TEST(ParamStoreTest, DeferredBigPushesAreDurableFromTheBuffersTheyHoldWithSync) {
  DeferredBigPushesAreDurableFromTheBuffersTheyHold(true, true);
}
TEST(ParamStoreTest, DeferredBigPushesAreDurableFromTheBuffersTheyHoldBuffered) {
  DeferredBigPushesAreDurableFromTheBuffersTheyHold(false, false);
}
TEST(ParamStoreTest, DeferredBigPushesAreDurableFromTheBuffersTheyHoldBufferedWithSync) {
  DeferredBigPushesAreDurableFromTheBuffersTheyHold(true, false);
}

// A durable hook that is replaced is not called again once SetDurableHook returns, even while the
// log thread is in the middle of a batch of records it took with the old one. The old hook holds
// the log thread inside such a batch (it blocks in its call for the batch's first record) while
// another thread replaces it; the replacement must not return before the batch is done.
TEST(ParamStoreTest, AReplacedDurableHookIsNotCalledAgain) {
  TempDir dir;
  Workload w;
  // The hooks' state is declared before the store: on an early failure the store (and its log
  // thread) goes first.
  std::mutex mu;
  std::condition_variable cv;
  int calls = 0, released = 0;  // the old hook's calls; how many of them may return
  bool replaced = false, called_after = false;
  auto store = OpenOrDie(BigPushSetup(dir, false, &w), OpenRocks(dir.path()));
  const size_t dim = store->FindTable("emb")->dim;
  std::mt19937_64 rng(5);
  auto push = [&](int p) {
    std::set<Key> distinct;
    while (distinct.size() < 2000) distinct.insert(rng() % 6000);
    auto keys = std::make_shared<std::vector<Key>>(distinct.begin(), distinct.end());
    auto grads = std::make_shared<std::vector<float>>(keys->size() * dim, 0.25f);
    uint64_t at = 0;
    auto hold = std::make_shared<std::pair<decltype(keys), decltype(grads)>>(keys, grads);
    EXPECT_TRUE(store->PushDeferred("emb", *keys, *grads, p, nullptr, hold, &at).ok());
    return at;
  };
  auto wait_calls = [&](int n) {
    std::unique_lock<std::mutex> l(mu);
    return cv.wait_for(l, std::chrono::seconds(20), [&] { return calls >= n; });
  };
  auto release = [&](int n) {
    std::lock_guard<std::mutex> l(mu);
    released = n;
    cv.notify_all();
  };
  store->SetDurableHook([&] {
    std::unique_lock<std::mutex> l(mu);
    if (replaced) called_after = true;
    const int me = ++calls;
    cv.notify_all();
    cv.wait_for(l, std::chrono::seconds(20), [&] { return released >= me; });
  });
  push(0);
  ASSERT_TRUE(wait_calls(1));  // the log thread waits in the call for record 1
  push(1);
  const uint64_t last = push(2);  // records 2 and 3 queue: the next batch takes both
  release(1);
  ASSERT_TRUE(wait_calls(2));  // in the call for record 2, record 3 still to append
  std::thread replacer([&] {
    store->SetDurableHook([] {});
    std::lock_guard<std::mutex> l(mu);
    replaced = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // a replacement that did not wait is done by now
  release(3);
  replacer.join();
  ASSERT_TRUE(store->WaitDurable(last).ok());
  store->SetDurableHook(nullptr);  // before the locals the hooks use go
  std::lock_guard<std::mutex> l(mu);
  EXPECT_FALSE(called_after) << calls << " calls of the old hook";
  EXPECT_EQ(calls, 3);  // one per record, all before the replacement returned
}

// Helper threads share a big pull's gather and a big push's optimizer rows. With a cache that
// holds a fraction of the keys (pulls hit and miss, rows are evicted and reloaded), a store with
// three helpers must pull bitwise what a single-threaded reference pulls, hold the same rows, and
// replay to them.
TEST(ParamStoreTest, HelperThreadsShareBigPullsAndPushesWithTheSameResults) {
  TempDir dir;
  StoreOptions ro = Quiet();
  ro.helper_threads = 0;
  auto ref = OpenOrDie(ro, std::make_unique<MemoryStorage>(Spaces()));
  Workload w;
  StoreOptions o = BigPushSetup(dir, false, &w);
  o.helper_threads = 3;
  o.cache_bytes = 512 << 10;  // a fraction of the rows of 3 tables x 6000 keys
  std::mt19937_64 rng(7);
  auto pull_both = [&](ParamStore* store) {
    std::vector<Key> keys(5000);  // unique keys; some never pushed (initial values)
    std::vector<Key> all(w.key_space + 1000);
    std::iota(all.begin(), all.end(), Key{0});
    std::shuffle(all.begin(), all.end(), rng);
    std::copy_n(all.begin(), keys.size(), keys.begin());
    const size_t dim = store->FindTable("emb")->dim;
    std::vector<float> got(keys.size() * dim, -1.0f), want(keys.size() * dim, -2.0f);
    ASSERT_TRUE(store->Pull("emb", keys, got.data()).ok());
    ASSERT_TRUE(ref->Pull("emb", keys, want.data()).ok());
    ASSERT_EQ(0, std::memcmp(got.data(), want.data(), got.size() * 4));
  };
  {
    auto store = OpenOrDie(o, OpenRocks(dir.path()));
    for (int r = 0; r < 3; ++r) {
      w.Round(store.get(), ref.get(), 3000);
      pull_both(store.get());
    }
    ASSERT_TRUE(store->Flush().ok());
    for (int r = 0; r < 3; ++r) {
      w.Round(store.get(), ref.get(), 3000);
      pull_both(store.get());
    }
    // More misses than distinct rows ever touched (3 tables x 6000 keys, 1000 more only pulled):
    // rows were evicted and loaded again.
    EXPECT_GT(store->Stats().cache_misses, 3u * 6000 + 1000) << store->Stats().rows_cached << " rows cached";
    EXPECT_EQ(store->Stats().helper_threads, 3u);
    ExpectSameState(store.get(), ref.get(), w.key_space);
  }
  auto store = OpenOrDie(o, OpenRocks(dir.path()));
  ExpectSameState(store.get(), ref.get(), w.key_space);
  pull_both(store.get());
}

TEST(ParamStoreTest, HelperThreadsDefaultToNoneBelowEightHardwareThreads) {
  EXPECT_EQ(StoreOptions::ResolveHelperThreads(0), 0);
  EXPECT_EQ(StoreOptions::ResolveHelperThreads(5), 5);
  const int hw = static_cast<int>(std::thread::hardware_concurrency());
  const int want = hw < 8 ? 0 : std::min(7, hw / 4 - 1);
  EXPECT_EQ(StoreOptions::ResolveHelperThreads(-1), want);
}

// A log append that fails after the optimizer has changed rows (the big-push path) stops the
// store: the push and every later call fail, nothing is written back, and reopening the directory
// gives the state before that push. The append is made to fail with RLIMIT_FSIZE (EFBIG).
TEST(ParamStoreTest, AFailedLogAppendStopsTheStoreAndARestartRecovers) {
  TempDir dir;
  auto ref = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  Workload w;
  // A final flush would write the failed push's rows back if it were allowed.
  StoreOptions o = BigPushSetup(dir, true, &w);
  std::vector<Key> keys(2000);
  for (size_t i = 0; i < keys.size(); ++i) keys[i] = 100000 + i;
  std::vector<float> grads(keys.size() * 4, 0.5f);
  {
    auto store = OpenOrDie(o, OpenRocks(dir.path()));
    for (int r = 0; r < 2; ++r) w.Round(store.get(), ref.get(), 3000);
    DurableHookRecorder hook(store.get());
    const uint64_t durable_before = store->DurableSeq();
    // Below the current log segment's size: the next append fails.
    Status failed = WithFileSizeLimit(4096, [&] { return store->Push("emb", keys, grads, 99); });
    ASSERT_FALSE(failed.ok());
    // The log thread called the hook for the failure (a server's loop wakes to answer it), and
    // the failed push never became durable.
    EXPECT_EQ(hook.WaitFor(0), std::vector<uint64_t>{durable_before});
    EXPECT_EQ(hook.calls(), 1u);
    EXPECT_EQ(store->DurableSeq(), durable_before);
    EXPECT_NE(failed.message().find("log"), std::string::npos) << failed;
    std::vector<float> out(4 * 2);
    EXPECT_FALSE(store->Pull("emb", std::vector<Key>{1, 2}, out.data()).ok());
    EXPECT_FALSE(store->Push("lin", std::vector<Key>{1}, std::vector<float>{1, 1}, 100).ok());
    EXPECT_FALSE(store->Flush().ok());
  }
  auto store = OpenOrDie(o, OpenRocks(dir.path()));
  ExpectSameState(store.get(), ref.get(), w.key_space);
  auto row = store->GetRow("emb", keys[0]);
  ASSERT_TRUE(row.ok());
  EXPECT_EQ(row->update_count, 0u);  // the failed push is nowhere
}

// The real thing: a child process pushes to RocksDB and is killed with SIGKILL right after the
// acknowledgements; the parent reopens the directory.
TEST(ParamStoreDeathTest, KilledProcessLosesNoAcknowledgedPush) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // The "threadsafe" style re-runs this body in a fresh child process: the directory name is
  // handed to it through the environment.
  const char* inherited = getenv("METAPS_PARAM_STORE_KILL_DIR");
  TempDir dir;
  const std::string data_dir = inherited ? std::string(inherited) : dir.path();
  if (!inherited) setenv("METAPS_PARAM_STORE_KILL_DIR", data_dir.c_str(), 1);
  StoreOptions o;
  o.data_dir = data_dir;
  o.writeback_interval_ms = 5;  // write-backs race with the kill
  EXPECT_EXIT(
      {
        auto store = ParamStore::Open(o, Tables(), OpenRocks(data_dir));
        if (!store.ok()) _exit(3);
        Workload w;
        for (int r = 0; r < 40; ++r) {
          w.Round(store->get(), nullptr);
          if (r % 7 == 0) usleep(3000);
        }
        raise(SIGKILL);
      },
      testing::KilledBySignal(SIGKILL), "");
  auto ref = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  Workload w;
  for (int r = 0; r < 40; ++r) w.Round(ref.get(), nullptr);
  unsetenv("METAPS_PARAM_STORE_KILL_DIR");
  StoreOptions reopen = Quiet();
  reopen.data_dir = data_dir;
  auto store = OpenOrDie(reopen, OpenRocks(data_dir));
  ExpectSameState(store.get(), ref.get(), w.key_space);
}

TEST(ParamStoreTest, CheckpointRestoresIntoANewStore) {
  TempDir dir;
  auto ref = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  Workload w;
  StoreOptions o = Quiet();
  o.data_dir = dir.path("live");
  auto store = OpenOrDie(o, OpenRocks(o.data_dir));
  for (int r = 0; r < 5; ++r) w.Round(store.get(), ref.get());
  ASSERT_TRUE(store->Checkpoint(dir.path("ckpt")).ok());
  EXPECT_TRUE(fs::exists(dir.path("ckpt/manifest.json")));
  EXPECT_EQ(store->Checkpoint(dir.path("ckpt")).code(), StatusCode::kAlreadyExists);
  // Later pushes are not in the checkpoint.
  Workload later = w;
  for (int r = 0; r < 3; ++r) later.Round(store.get(), nullptr);

  // Fast path: PrepareDataDir links the checkpoint in before the storage opens.
  StoreOptions r1 = Quiet();
  r1.data_dir = dir.path("restored1");
  r1.restore_from = dir.path("ckpt");
  ASSERT_TRUE(ParamStore::PrepareDataDir(r1).ok());
  {
    auto restored = OpenOrDie(r1, OpenRocks(r1.data_dir));
    ExpectSameState(restored.get(), ref.get(), w.key_space);
  }
  // Slow path: storage already open on an empty directory; Open imports the checkpoint.
  StoreOptions r2 = r1;
  r2.data_dir = dir.path("restored2");
  {
    auto restored = OpenOrDie(r2, OpenRocks(r2.data_dir));
    ExpectSameState(restored.get(), ref.get(), w.key_space);
    for (int r = 0; r < 2; ++r) w.Round(restored.get(), ref.get());
  }
  // restore_from is ignored once the data dir has data of its own.
  ASSERT_TRUE(ParamStore::PrepareDataDir(r2).ok());
  auto again = OpenOrDie(r2, OpenRocks(r2.data_dir));
  ExpectSameState(again.get(), ref.get(), w.key_space);
  // A directory without a manifest is not a checkpoint.
  StoreOptions bad = Quiet();
  bad.data_dir = dir.path("restored3");
  bad.restore_from = dir.path("live");
  EXPECT_EQ(ParamStore::PrepareDataDir(bad).code(), StatusCode::kNotFound);
}

TEST(ParamStoreTest, MemoryStorageCheckpointRoundTrips) {
  TempDir dir;
  auto ref = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  auto store = OpenOrDie(Quiet(), std::make_unique<MemoryStorage>(Spaces()));
  Workload w;
  for (int r = 0; r < 3; ++r) w.Round(store.get(), ref.get());
  ASSERT_TRUE(store->Checkpoint(dir.path("ckpt")).ok());
  StoreOptions o = Quiet();
  o.restore_from = dir.path("ckpt");
  auto restored = OpenOrDie(o, std::make_unique<MemoryStorage>(Spaces()));
  ExpectSameState(restored.get(), ref.get(), w.key_space);
}

TEST(ParamStoreTest, ReopenWithAChangedTableIsRefused) {
  auto mem = std::make_unique<MemoryStorage>(Spaces());
  auto handle = mem->Share();
  { auto store = OpenOrDie(Quiet(), std::move(mem)); }
  auto tables = Tables();
  tables[0].dim = 5;
  auto s = ParamStore::Open(Quiet(), tables, handle->Share());
  EXPECT_EQ(s.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.status().message().find("emb"), std::string::npos) << s.status();
  tables = Tables();
  tables[0].optimizer = DefaultOptimizerSpec(OptimizerKind::kFtrl);
  EXPECT_EQ(ParamStore::Open(Quiet(), tables, handle->Share()).status().code(), StatusCode::kFailedPrecondition);
  // Adding a table is fine.
  tables = Tables();
  tables.push_back(tables[2]);
  tables.back().name = "extra";
  EXPECT_TRUE(ParamStore::Open(Quiet(), tables, handle->Share()).ok());
}

TEST(TableSpecTest, ParsesEntriesWithDefaults) {
  auto cfg = Config::ParseString(R"(
[[tables]]
name = "a"
dim = 8
[[tables]]
name = "b"
dim = 2
optimizer = "ftrl"
l1 = 1.5
init = "uniform"
init_scale = 0.2
seed = 7
)");
  ASSERT_TRUE(cfg.ok());
  auto t = ParseTableSpecs(*cfg);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->size(), 2u);
  EXPECT_EQ((*t)[0].optimizer.kind, OptimizerKind::kSgd);
  EXPECT_FALSE((*t)[0].dense);
  EXPECT_EQ((*t)[0].init.kind, InitKind::kNormal);
  EXPECT_EQ((*t)[1].optimizer.kind, OptimizerKind::kFtrl);
  EXPECT_FLOAT_EQ((*t)[1].optimizer.l1, 1.5f);
  EXPECT_FLOAT_EQ((*t)[1].optimizer.lr, 0.05f);
  EXPECT_EQ((*t)[1].init.kind, InitKind::kUniform);
  EXPECT_EQ((*t)[1].init.seed, 7u);
}

TEST(TableSpecTest, ErrorsNameTheKey) {
  auto check = [](const char* text, const char* needle) {
    auto cfg = Config::ParseString(text);
    ASSERT_TRUE(cfg.ok());
    auto t = ParseTableSpecs(*cfg);
    ASSERT_FALSE(t.ok()) << text;
    EXPECT_NE(t.status().message().find(needle), std::string::npos) << t.status();
  };
  check("[[tables]]\nname='a'\ndim=4\nlearning_rate=0.1\n", "tables[0].learning_rate: unknown key");
  check("[[tables]]\nname='a'\n", "tables[0].dim");
  check("[[tables]]\nname='a'\ndim=0\n", "tables[0].dim");
  check("[[tables]]\nname='a'\ndim=4\noptimizer='adamw'\n", "tables[0].optimizer");
  check("[[tables]]\nname='a'\ndim=4\nbeta1=0.5\n", "tables[0].beta1: not a hyperparameter of optimizer \"sgd\"");
  check("[[tables]]\nname='a'\ndim=4\ninit='gauss'\n", "tables[0].init");
  check("[[tables]]\nname='a'\ndim=4\n[[tables]]\nname='a'\ndim=2\n", "duplicate table name");
  check("[[tables]]\nname='a'\ndim=4\noptimizer='adam'\nbeta2=1.0\n", "beta2");
}

TEST(InitializerTest, DeterministicPerKeyAndDistributedAsAsked) {
  InitSpec n{InitKind::kNormal, 0.5f, 3};
  float a[33], b[33];
  InitializeRow(n, 11, 12345, a, 33);
  InitializeRow(n, 11, 12345, b, 33);
  EXPECT_EQ(0, std::memcmp(a, b, sizeof(a)));
  InitializeRow(n, 11, 12346, b, 33);
  EXPECT_NE(0, std::memcmp(a, b, sizeof(a)));
  InitializeRow(n, 12, 12345, b, 33);  // another table
  EXPECT_NE(0, std::memcmp(a, b, sizeof(a)));
  double sum = 0, sq = 0;
  const int kRows = 4000;
  for (Key k = 0; k < kRows; ++k) {
    InitializeRow(n, 11, k, a, 33);
    for (float x : a) {
      sum += x;
      sq += double{x} * x;
    }
  }
  const double count = kRows * 33.0, mean = sum / count;
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(std::sqrt(sq / count - mean * mean), 0.5, 0.01);
  InitSpec u{InitKind::kUniform, 0.25f, 0};
  for (Key k = 0; k < 100; ++k) {
    InitializeRow(u, 1, k, a, 33);
    for (float x : a) EXPECT_LE(std::fabs(x), 0.25f);
  }
  InitSpec z{InitKind::kZeros, 1.0f, 0};
  InitializeRow(z, 1, 5, a, 33);
  for (float x : a) EXPECT_EQ(x, 0.0f);
}

}  // namespace
}  // namespace metaps::ps
