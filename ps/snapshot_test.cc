#include "ps/snapshot.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "common/config.h"
#include "common/files.h"
#include "common/internal/test_dirs.h"
#include "common/rocksdb_storage.h"
#include "common/sst_file.h"
#include "ps/param_store.h"
#include "ps/table_spec.h"

namespace metaps::ps {
namespace {

namespace fs = std::filesystem;

struct TempDir : test::TempDir {
  TempDir() : test::TempDir("snapshot_test") {}
};

std::vector<TableSpec> Tables() {
  auto cfg = Config::ParseString(R"(
[[tables]]
name = "emb4"
dim = 4
optimizer = "adam"
lr = 0.05
init = "normal"
init_scale = 0.1

[[tables]]
name = "emb2"
dim = 2
optimizer = "sgd"
lr = 0.5
init = "uniform"
init_scale = 0.3

[[tables]]
name = "mlp"
dim = 6
dense = true
optimizer = "sgd"
lr = 0.1
init = "zeros"
)");
  EXPECT_TRUE(cfg.ok()) << cfg.status();
  return *ParseTableSpecs(*cfg);
}

std::unique_ptr<ParamStore> OpenStore(const std::string& dir) {
  StoreOptions o;
  o.data_dir = dir;
  o.writeback_interval_ms = 3600 * 1000;
  auto storage = RocksDbStorage::Open(dir, RocksDbOptions{});
  EXPECT_TRUE(storage.ok()) << storage.status();
  auto store = ParamStore::Open(o, Tables(), std::move(storage).value());
  EXPECT_TRUE(store.ok()) << store.status();
  return std::move(store).value();
}

void PushKeys(ParamStore& store, const std::string& table, uint32_t dim, const std::vector<Key>& keys,
              float g) {
  std::vector<float> grads(keys.size() * dim);
  for (size_t i = 0; i < grads.size(); ++i) grads[i] = g * static_cast<float>((i % 7) + 1) / 7.f;
  ASSERT_TRUE(store.Push(table, keys, grads, 1).ok());
}

std::map<Key, std::vector<float>> ReadSst(const std::string& path, uint32_t dim) {
  std::map<Key, std::vector<float>> out;
  Status s = ScanSstFile(path, [&](std::string_view k, std::string_view v) {
    EXPECT_EQ(k.size(), 8u);
    Key key = 0;
    for (char c : k) key = (key << 8) | static_cast<uint8_t>(c);
    EXPECT_EQ(v.size(), dim * 4u);
    std::vector<float> row(dim);
    std::memcpy(row.data(), v.data(), dim * 4);
    out[key] = row;
    return true;
  });
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

std::vector<SnapshotTable> TablesOf(const ShardExport& e) {
  std::vector<SnapshotTable> out;
  for (const auto& spec : Tables()) {
    if (spec.dense) continue;
    SnapshotTable t;
    t.name = spec.name;
    t.dim = spec.dim;
    t.init = spec.init;
    auto it = e.files.find(spec.name);
    if (it != e.files.end()) t.files.push_back(it->second);
    out.push_back(t);
  }
  return out;
}

// A full export holds exactly the stored rows (weights only, as the store has them) and the dense
// tensor; a delta only the rows pushed since; base + delta looked up give the newer rows, and keys
// in no file their initial value, the same a pull of an unseen key returns.
TEST(SnapshotTest, FullAndDeltaExportsRoundTripThroughServingLookups) {
  TempDir dir;
  auto store = OpenStore(dir.path("live"));
  std::vector<Key> keys;
  std::mt19937_64 rng(3);
  for (int i = 0; i < 3000; ++i) keys.push_back(rng());
  PushKeys(*store, "emb4", 4, keys, 1.f);
  PushKeys(*store, "emb2", 2, {keys.begin(), keys.begin() + 50}, -1.f);
  ASSERT_TRUE(store->PushDense("mlp", std::vector<float>{1, 2, 3, 4, 5, 6}, 1).ok());
  ASSERT_TRUE(store->Checkpoint(dir.path("ck1")).ok());

  auto full = ExportCheckpointShard(dir.path("ck1"), 0, nullptr, dir.path("snap1"));
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(full->rows_exported, 3050u);
  EXPECT_EQ(full->rows_unchanged, 0u);
  ASSERT_EQ(full->files.count("emb4"), 1u);
  EXPECT_EQ(full->files.at("emb4").path, "rows/emb4/shard-0.sst");
  EXPECT_EQ(full->files.at("emb4").rows, 3000u);
  EXPECT_EQ(full->files.at("emb2").rows, 50u);
  ASSERT_EQ(full->dense.count("mlp"), 1u);
  std::vector<float> mlp(6);
  ASSERT_TRUE(store->PullDense("mlp", mlp.data()).ok());
  EXPECT_EQ(full->dense.at("mlp"), mlp);
  auto rows = ReadSst(dir.path("snap1/rows/emb4/shard-0.sst"), 4);
  ASSERT_EQ(rows.size(), 3000u);
  for (Key k : {keys[0], keys[1234], keys[2999]}) {
    auto row = store->GetRow("emb4", k);
    ASSERT_TRUE(row.ok());
    EXPECT_EQ(rows.at(k), row->value) << k;
  }
  auto sum = FileXxh3(dir.path("snap1/rows/emb4/shard-0.sst"));
  ASSERT_TRUE(sum.ok());
  EXPECT_EQ(*sum, full->files.at("emb4").xxh3);
  EXPECT_EQ(full->files.at("emb4").bytes, fs::file_size(dir.path("snap1/rows/emb4/shard-0.sst")));

  // Ten old keys and five new ones change; emb2 does not.
  std::vector<Key> changed(keys.begin(), keys.begin() + 10);
  for (Key k = 1; k <= 5; ++k) changed.push_back(k);
  PushKeys(*store, "emb4", 4, changed, 2.f);
  ASSERT_TRUE(store->Checkpoint(dir.path("ck2")).ok());
  const ShardBase base{full->applied_seq, full->lineage};
  auto delta = ExportCheckpointShard(dir.path("ck2"), 0, &base, dir.path("snap2"));
  ASSERT_TRUE(delta.ok()) << delta.status();
  EXPECT_EQ(delta->rows_exported, 15u);
  EXPECT_EQ(delta->rows_unchanged, 3040u);
  EXPECT_EQ(delta->files.count("emb2"), 0u);  // no row to write: no file
  EXPECT_EQ(ReadSst(dir.path("snap2/rows/emb4/shard-0.sst"), 4).size(), 15u);

  auto served = SnapshotRows::Open({dir.path("snap1"), dir.path("snap2")},
                                   {TablesOf(*full), TablesOf(*delta)}, dir.path("work"));
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_EQ((*served)->rows_ingested(), 3050u + 15u);
  const Key unseen = 0xfeedfacecafebeefull;
  std::vector<Key> probe = {keys[0], keys[9], keys[10], keys[2500], 3, unseen};
  std::vector<float> got(probe.size() * 4), want(probe.size() * 4);
  uint64_t stored = 0;
  ASSERT_TRUE((*served)->Lookup("emb4", probe, got.data(), &stored).ok());
  EXPECT_EQ(stored, probe.size() - 1);
  ASSERT_TRUE(store->Pull("emb4", probe, want.data()).ok());
  EXPECT_EQ(got, want);  // changed, unchanged, new and unseen keys alike
  std::vector<float> two(2 * 2), two_want(2 * 2);
  std::vector<Key> probe2 = {keys[7], unseen};
  ASSERT_TRUE((*served)->Lookup("emb2", probe2, two.data()).ok());
  ASSERT_TRUE(store->Pull("emb2", probe2, two_want.data()).ok());
  EXPECT_EQ(two, two_want);
  EXPECT_EQ((*served)->Lookup("nope", probe2, two.data()).code(), StatusCode::kNotFound);

  // Without the delta the base's (older) rows are served.
  auto base_only = SnapshotRows::Open({dir.path("snap1")}, {TablesOf(*full)}, dir.path("work-base"));
  ASSERT_TRUE(base_only.ok()) << base_only.status();
  std::vector<float> old(4);
  ASSERT_TRUE((*base_only)->Lookup("emb4", std::vector<Key>{keys[0]}, old.data()).ok());
  EXPECT_EQ(old, rows.at(keys[0]));
  EXPECT_NE(old, std::vector<float>(got.begin(), got.begin() + 4));

  // The chain grown by the delta, on top of the base's loaded rows: only the delta's file is read
  // (the base's is broken now, and a load from scratch refuses it), and it serves what the
  // whole chain serves while the base goes on serving its own rows.
  {
    std::ofstream f(dir.path("snap1/rows/emb4/shard-0.sst"), std::ios::app | std::ios::binary);
    f << "x";
  }
  EXPECT_EQ(SnapshotRows::Open({dir.path("snap1"), dir.path("snap2")}, {TablesOf(*full), TablesOf(*delta)},
                               dir.path("work-scratch"))
                .status()
                .code(),
            StatusCode::kDataLoss);
  auto grown = SnapshotRows::Open({dir.path("snap1"), dir.path("snap2")}, {TablesOf(*full), TablesOf(*delta)},
                                  dir.path("work-grown"), base_only->get(), 1);
  ASSERT_TRUE(grown.ok()) << grown.status();
  EXPECT_EQ((*grown)->rows_ingested(), 3050u + 15u);
  EXPECT_EQ((*grown)->rows_taken_from_base(), 3050u);
  std::vector<float> grown_got(probe.size() * 4);
  stored = 0;
  ASSERT_TRUE((*grown)->Lookup("emb4", probe, grown_got.data(), &stored).ok());
  EXPECT_EQ(grown_got, want);
  EXPECT_EQ(stored, probe.size() - 1);
  ASSERT_TRUE((*grown)->Lookup("emb2", probe2, two.data()).ok());
  EXPECT_EQ(two, two_want);
  ASSERT_TRUE((*base_only)->Lookup("emb4", std::vector<Key>{keys[0]}, old.data()).ok());
  EXPECT_EQ(old, rows.at(keys[0]));  // the base is untouched
}

TEST(SnapshotTest, ACorruptedFileIsRefusedBeforeAnythingIsServed) {
  TempDir dir;
  auto store = OpenStore(dir.path("live"));
  PushKeys(*store, "emb4", 4, {1, 2, 3}, 1.f);
  ASSERT_TRUE(store->Checkpoint(dir.path("ck")).ok());
  auto e = ExportCheckpointShard(dir.path("ck"), 0, nullptr, dir.path("snap"));
  ASSERT_TRUE(e.ok()) << e.status();
  const std::string file = dir.path("snap/rows/emb4/shard-0.sst");
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(10);
    char c = 0;
    f.read(&c, 1);
    f.seekp(10);
    c ^= 0x40;
    f.write(&c, 1);
  }
  // A used work directory is refused: its rows would be served as this snapshot's.
  fs::create_directories(dir.path("used"));
  ASSERT_TRUE(WriteFileAtomically(dir.path("used/x"), "x").ok());
  EXPECT_EQ(SnapshotRows::Open({dir.path("snap")}, {TablesOf(*e)}, dir.path("used")).status().code(),
            StatusCode::kInvalidArgument);
  auto served = SnapshotRows::Open({dir.path("snap")}, {TablesOf(*e)}, dir.path("work"));
  ASSERT_FALSE(served.ok());
  EXPECT_EQ(served.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(served.status().message().find("checksum"), std::string::npos) << served.status();
  fs::remove(file);
  served = SnapshotRows::Open({dir.path("snap")}, {TablesOf(*e)}, dir.path("work2"));
  EXPECT_EQ(served.status().code(), StatusCode::kNotFound) << served.status();
}

TEST(SnapshotTest, ADeltaOnABaseNewerThanTheCheckpointIsRefused) {
  TempDir dir;
  auto store = OpenStore(dir.path("live"));
  PushKeys(*store, "emb4", 4, {1, 2, 3}, 1.f);
  ASSERT_TRUE(store->Checkpoint(dir.path("ck")).ok());
  auto lineage = ExportCheckpointShard(dir.path("ck"), 0, nullptr, dir.path("full"));
  ASSERT_TRUE(lineage.ok()) << lineage.status();
  const ShardBase newer{1000, lineage->lineage};
  auto e = ExportCheckpointShard(dir.path("ck"), 0, &newer, dir.path("snap"));
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.status().code(), StatusCode::kFailedPrecondition) << e.status();
  EXPECT_FALSE(fs::exists(dir.path("snap/rows/emb4/shard-0.sst")));
  EXPECT_EQ(ExportCheckpointShard(dir.path("nothing"), 0, nullptr, dir.path("snap")).status().code(),
            StatusCode::kNotFound);
}

// Sequence numbers alone cannot tell a rolled-back history: a store restored from an older
// checkpoint numbers its next pushes from there. The lineage does: a delta is written only on top
// of a state the checkpoint descends from.
TEST(SnapshotTest, ADeltaIsRefusedOnABaseTheHistoryDoesNotDescendFrom) {
  TempDir dir;
  auto export_full = [&](const std::string& ck, const std::string& out) {
    auto e = ExportCheckpointShard(dir.path(ck), 0, nullptr, dir.path(out));
    EXPECT_TRUE(e.ok()) << e.status();
    return ShardBase{e->applied_seq, e->lineage};
  };
  auto delta_on = [&](const std::string& ck, const ShardBase& base, const std::string& out) {
    return ExportCheckpointShard(dir.path(ck), 0, &base, dir.path(out)).status();
  };
  ShardBase at_ck1, at_ck2;
  {
    auto store = OpenStore(dir.path("live"));
    PushKeys(*store, "emb4", 4, {1, 2, 3}, 1.f);
    ASSERT_TRUE(store->Checkpoint(dir.path("ck1")).ok());
    PushKeys(*store, "emb4", 4, {4, 5}, 1.f);
    PushKeys(*store, "emb4", 4, {6}, 1.f);
    ASSERT_TRUE(store->Checkpoint(dir.path("ck2")).ok());
    at_ck1 = export_full("ck1", "full1");
    at_ck2 = export_full("ck2", "full2");
  }
  ASSERT_EQ(at_ck1.lineage.size(), 1u);
  ASSERT_LT(at_ck1.applied_seq, at_ck2.applied_seq);
  {
    // A restart over the same data goes on from where it was: deltas on both bases are fine.
    auto store = OpenStore(dir.path("live"));
    PushKeys(*store, "emb4", 4, {7}, 1.f);
    ASSERT_TRUE(store->Checkpoint(dir.path("ck3")).ok());
  }
  Status on2 = delta_on("ck3", at_ck2, "d3on2");
  EXPECT_TRUE(on2.ok()) << on2;
  EXPECT_TRUE(delta_on("ck3", at_ck1, "d3on1").ok());
  {
    // Restored from ck1 (a rollback), then pushed past ck2's sequence number.
    StoreOptions o;
    o.data_dir = dir.path("restored");
    o.restore_from = dir.path("ck1");
    ASSERT_TRUE(ParamStore::PrepareDataDir(o).ok());
    auto store = OpenStore(dir.path("restored"));
    for (Key k = 10; k < 14; ++k) PushKeys(*store, "emb4", 4, {k}, -1.f);
    ASSERT_TRUE(store->Checkpoint(dir.path("ck4")).ok());
  }
  Status stale = delta_on("ck4", at_ck2, "d4on2");
  EXPECT_EQ(stale.code(), StatusCode::kFailedPrecondition) << stale;
  EXPECT_NE(stale.message().find("rolled back"), std::string::npos) << stale;
  EXPECT_FALSE(fs::exists(dir.path("d4on2/rows/emb4/shard-0.sst")));
  EXPECT_TRUE(delta_on("ck4", at_ck1, "d4on1").ok());  // ck1 is where it went on from
  {
    // Another store altogether: the histories part at once.
    auto store = OpenStore(dir.path("other"));
    for (Key k = 20; k < 30; ++k) PushKeys(*store, "emb4", 4, {k}, 1.f);
    ASSERT_TRUE(store->Checkpoint(dir.path("ck5")).ok());
  }
  Status other = delta_on("ck5", at_ck1, "d5on1");
  EXPECT_EQ(other.code(), StatusCode::kFailedPrecondition) << other;
  EXPECT_NE(other.message().find("does not descend"), std::string::npos) << other;
  // A base recorded without a lineage cannot be checked.
  EXPECT_EQ(delta_on("ck3", ShardBase{at_ck1.applied_seq, {}}, "d3on_none").code(),
            StatusCode::kFailedPrecondition);
}

TEST(SnapshotTest, LineageJsonRoundTripsAndRefusesNonsense) {
  Lineage l = {{"00000000000000aa", 0}, {"00000000000000bb", 17}};
  auto back = LineageFromJson(LineageToJson(l), "x");
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, l);
  EXPECT_EQ(
      LineageFromJson(nlohmann::json::parse(R"([{"id": "a", "from_seq": 5}, {"id": "b", "from_seq": 2}])"),
                      "m.lineage")
          .status()
          .code(),
      StatusCode::kDataLoss);
  auto bad = LineageFromJson(nlohmann::json::parse(R"([{"id": 3}])"), "m.lineage");
  EXPECT_NE(bad.status().message().find("m.lineage[0]"), std::string::npos) << bad.status();
  EXPECT_TRUE(CheckDescends(l, 20, l, 20).ok());
  EXPECT_FALSE(CheckDescends(l, 20, l, 19).ok());
  Lineage restarted = l;
  restarted.push_back({"00000000000000cc", 20});
  EXPECT_TRUE(CheckDescends(l, 20, restarted, 25).ok());
  Lineage rolled_back = l;
  rolled_back.push_back({"00000000000000dd", 19});
  EXPECT_FALSE(CheckDescends(l, 20, rolled_back, 25).ok());
}

TEST(SnapshotTest, TablesJsonRoundTripsAndNamesWhatIsWrong) {
  SnapshotTable t;
  t.name = "emb8";
  t.dim = 8;
  t.init.kind = InitKind::kUniform;
  t.init.scale = 0.25f;
  t.init.seed = 99;
  t.files.push_back({"rows/emb8/shard-1.sst", 10, 1234, "0123456789abcdef"});
  auto back = SnapshotTablesFromJson(SnapshotTablesToJson({t}));
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), 1u);
  EXPECT_EQ((*back)[0].name, "emb8");
  EXPECT_EQ((*back)[0].init.kind, InitKind::kUniform);
  EXPECT_EQ((*back)[0].init.seed, 99u);
  EXPECT_EQ((*back)[0].files[0].xxh3, "0123456789abcdef");
  nlohmann::json j = SnapshotTablesToJson({t});
  j[0]["files"][0]["path"] = "../../etc/passwd";
  auto bad = SnapshotTablesFromJson(j);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("tables[0].files[0].path"), std::string::npos) << bad.status();
  j = SnapshotTablesToJson({t});
  j[0].erase("dim");
  bad = SnapshotTablesFromJson(j);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("tables[0]"), std::string::npos) << bad.status();
}

}  // namespace
}  // namespace metaps::ps
