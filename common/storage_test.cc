// The Storage contract, run against both implementations.
#include "common/storage.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include "common/files.h"
#include "common/memory_storage.h"
#include "common/rocksdb_storage.h"
#include "common/sst_file.h"

#include "common/internal/test_dirs.h"

namespace metaps {
namespace {

namespace fs = std::filesystem;

std::string TempPath(const std::string& name) { return test::TempPath("storage_test", name); }


enum class Kind { kMemory, kRocksDb };

class StorageTest : public testing::TestWithParam<Kind> {
 protected:
  void SetUp() override {
    dir_ = TempPath("db");
    storage_ = Open(dir_);
    ASSERT_NE(storage_, nullptr);
  }
  void TearDown() override {
    storage_.reset();
    fs::remove_all(dir_);
  }
  std::unique_ptr<Storage> Open(const std::string& dir) {
    if (GetParam() == Kind::kMemory) return std::make_unique<MemoryStorage>(std::vector<std::string>{"a", "b"});
    RocksDbOptions o;
    o.spaces = {"a", "b"};
    o.log_spaces = {"b"};
    auto s = RocksDbStorage::Open(dir, o);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(s).value() : nullptr;
  }
  std::map<std::string, std::string> All(Storage* s, StorageSpace space) {
    std::map<std::string, std::string> out;
    EXPECT_TRUE(s->Scan(space, "", "", [&](std::string_view k, std::string_view v) {
                   out.emplace(k, v);
                   return true;
                 }).ok());
    return out;
  }
  std::string dir_;
  std::unique_ptr<Storage> storage_;
};

TEST_P(StorageTest, SpacesAreNamedAndSeparate) {
  auto a = storage_->FindSpace("a");
  auto b = storage_->FindSpace("b");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
  EXPECT_EQ(storage_->FindSpace("zzz").status().code(), StatusCode::kNotFound);
  StorageBatch batch;
  batch.Put(*a, "k", "in a");
  batch.Put(*b, "k", "in b");
  ASSERT_TRUE(storage_->Write(batch, false).ok());
  std::string v;
  ASSERT_TRUE(storage_->Get(*a, "k", &v).ok());
  EXPECT_EQ(v, "in a");
  ASSERT_TRUE(storage_->Get(*b, "k", &v).ok());
  EXPECT_EQ(v, "in b");
  EXPECT_EQ(storage_->Get(*a, "missing", &v).code(), StatusCode::kNotFound);
}

TEST_P(StorageTest, BatchesApplyInOrderWithDeletesAndRanges) {
  StorageSpace a = *storage_->FindSpace("a");
  StorageBatch batch;
  for (char c = 'a'; c <= 'h'; ++c) batch.Put(a, std::string(1, c), std::string(3, c));
  batch.Delete(a, "b");
  batch.DeleteRange(a, "d", "f");  // d, e
  batch.Put(a, "e", "again");      // after the range delete: present
  ASSERT_TRUE(storage_->Write(batch, true).ok());
  auto all = All(storage_.get(), a);
  std::map<std::string, std::string> want = {{"a", "aaa"}, {"c", "ccc"}, {"e", "again"},
                                             {"f", "fff"}, {"g", "ggg"}, {"h", "hhh"}};
  EXPECT_EQ(all, want);
  // Range scans stop at `end` and when the callback says so.
  std::vector<std::string> keys;
  ASSERT_TRUE(storage_->Scan(a, "c", "g", [&](std::string_view k, std::string_view) {
                keys.emplace_back(k);
                return true;
              }).ok());
  EXPECT_EQ(keys, (std::vector<std::string>{"c", "e", "f"}));
  keys.clear();
  ASSERT_TRUE(storage_->Scan(a, "", "", [&](std::string_view k, std::string_view) {
                keys.emplace_back(k);
                return keys.size() < 2;
              }).ok());
  EXPECT_EQ(keys.size(), 2u);
}

TEST_P(StorageTest, MultiGetReportsOnlyFoundKeys) {
  StorageSpace a = *storage_->FindSpace("a");
  StorageBatch batch;
  batch.Put(a, "x", "1");
  batch.Put(a, "z", "3");
  ASSERT_TRUE(storage_->Write(batch, false).ok());
  std::vector<std::string_view> keys = {"z", "y", "x", "z"};
  std::map<size_t, std::string> got;
  ASSERT_TRUE(storage_->MultiGet(a, keys, [&](size_t i, std::string_view v) { got[i] = std::string(v); }).ok());
  EXPECT_EQ(got, (std::map<size_t, std::string>{{0, "3"}, {2, "1"}, {3, "3"}}));
}

TEST_P(StorageTest, CheckpointIsAnOpenableCopy) {
  StorageSpace a = *storage_->FindSpace("a");
  StorageBatch batch;
  batch.Put(a, "k1", "v1");
  ASSERT_TRUE(storage_->Write(batch, false).ok());
  const std::string ckpt = TempPath("ckpt");
  ASSERT_TRUE(storage_->Checkpoint(ckpt).ok());
  batch.Clear();
  batch.Put(a, "k2", "after");
  ASSERT_TRUE(storage_->Write(batch, false).ok());
  std::unique_ptr<Storage> copy;
  if (GetParam() == Kind::kMemory) {
    auto m = MemoryStorage::Load(ckpt);
    ASSERT_TRUE(m.ok()) << m.status();
    copy = std::move(m).value();
  } else {
    copy = Open(ckpt);
  }
  ASSERT_NE(copy, nullptr);
  StorageSpace ca = *copy->FindSpace("a");
  EXPECT_EQ(All(copy.get(), ca), (std::map<std::string, std::string>{{"k1", "v1"}}));
  copy.reset();
  fs::remove_all(ckpt);
}

TEST_P(StorageTest, ClosedStorageRefusesCalls) {
  StorageSpace a = *storage_->FindSpace("a");
  ASSERT_TRUE(storage_->Close().ok());
  ASSERT_TRUE(storage_->Close().ok());  // idempotent
  std::string v;
  EXPECT_FALSE(storage_->Get(a, "k", &v).ok());
  EXPECT_EQ(storage_->Write(StorageBatch(), false).code(), StatusCode::kFailedPrecondition);
}

INSTANTIATE_TEST_SUITE_P(Both, StorageTest, testing::Values(Kind::kMemory, Kind::kRocksDb),
                         [](const auto& info) { return info.param == Kind::kMemory ? "Memory" : "RocksDb"; });

TEST(RocksDbStorageTest, DataSurvivesReopen) {
  const std::string dir = TempPath("reopen");
  {
    auto s = RocksDbStorage::Open(dir, RocksDbOptions{});
    ASSERT_TRUE(s.ok()) << s.status();
    StorageBatch b;
    b.Put(*(*s)->FindSpace("rows"), "r", "1");
    ASSERT_TRUE((*s)->Write(b, false).ok());
  }
  auto s = RocksDbStorage::Open(dir, RocksDbOptions{});
  ASSERT_TRUE(s.ok());
  std::string v;
  ASSERT_TRUE((*s)->Get(*(*s)->FindSpace("rows"), "r", &v).ok());
  EXPECT_EQ(v, "1");
  s = Status(StatusCode::kCancelled, "close");
  fs::remove_all(dir);
}

TEST_P(StorageTest, SortedRunsAreInvisibleUntilCommittedAndThenReplaceValues) {
  const StorageSpace a = *storage_->FindSpace("a");
  const StorageSpace b = *storage_->FindSpace("b");
  StorageBatch batch;
  batch.Put(a, "k1", "old");
  batch.Put(a, "k9", "kept");
  ASSERT_TRUE(storage_->Write(batch, false).ok());
  auto run = storage_->NewSortedWriter(a);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_TRUE((*run)->Add("k1", "new").ok());
  ASSERT_TRUE((*run)->Add("k2", "v2").ok());
  // Out of order, or repeated: refused, and the run goes on.
  EXPECT_EQ((*run)->Add("k2", "again").code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*run)->Add("k0", "early").code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE((*run)->Add("k3", "v3").ok());
  EXPECT_EQ((*run)->count(), 3u);
  EXPECT_EQ((*run)->bytes(), 13u);  // "k1" "new", "k2" "v2", "k3" "v3"
  std::string v;
  EXPECT_EQ(storage_->Get(a, "k2", &v).code(), StatusCode::kNotFound);
  ASSERT_TRUE(storage_->Get(a, "k1", &v).ok());
  EXPECT_EQ(v, "old");
  ASSERT_TRUE((*run)->Commit().ok());
  EXPECT_EQ((*run)->Add("k4", "late").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(All(storage_.get(), a),
            (std::map<std::string, std::string>{{"k1", "new"}, {"k2", "v2"}, {"k3", "v3"}, {"k9", "kept"}}));
  EXPECT_TRUE(All(storage_.get(), b).empty());
  // A later write replaces a run's value as usual.
  batch.Clear();
  batch.Put(a, "k2", "written");
  ASSERT_TRUE(storage_->Write(batch, false).ok());
  ASSERT_TRUE(storage_->Get(a, "k2", &v).ok());
  EXPECT_EQ(v, "written");
  // An abandoned run leaves nothing; an empty one commits.
  {
    auto dropped = storage_->NewSortedWriter(a);
    ASSERT_TRUE(dropped.ok());
    ASSERT_TRUE((*dropped)->Add("k5", "never").ok());
  }
  auto empty = storage_->NewSortedWriter(b);
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE((*empty)->Commit().ok());
  EXPECT_EQ(All(storage_.get(), a).size(), 4u);
  EXPECT_TRUE(All(storage_.get(), b).empty());
  EXPECT_FALSE(storage_->NewSortedWriter(99).ok());
}

TEST(RocksDbStorageTest, CommittedRunsSurviveReopenAndAbandonedOnesLeaveNoFiles) {
  const std::string dir = TempPath("runs");
  {
    auto s = RocksDbStorage::Open(dir, RocksDbOptions{});
    ASSERT_TRUE(s.ok()) << s.status();
    const StorageSpace rows = *(*s)->FindSpace("rows");
    for (int round = 0; round < 3; ++round) {  // runs over the same keys: the newest wins
      auto run = (*s)->NewSortedWriter(rows);
      ASSERT_TRUE(run.ok()) << run.status();
      for (int k = 0; k < 1000; ++k) {
        char key[8];
        std::snprintf(key, sizeof(key), "r%05d", k);
        ASSERT_TRUE((*run)->Add(key, std::to_string(round * 10000 + k)).ok());
      }
      ASSERT_TRUE((*run)->Commit().ok());
    }
    auto abandoned = (*s)->NewSortedWriter(rows);
    ASSERT_TRUE(abandoned.ok());
    ASSERT_TRUE((*abandoned)->Add("r99999", "x").ok());
    EXPECT_FALSE(fs::is_empty(dir + "/ingest"));  // the run's file is being written
  }
  EXPECT_TRUE(fs::is_empty(dir + "/ingest"));
  // A file left by a crash mid-run is removed on open.
  { std::ofstream(dir + "/ingest/run-7.sst") << "partial"; }
  auto s = RocksDbStorage::Open(dir, RocksDbOptions{});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(fs::is_empty(dir + "/ingest"));
  const StorageSpace rows = *(*s)->FindSpace("rows");
  std::string v;
  ASSERT_TRUE((*s)->Get(rows, "r00007", &v).ok());
  EXPECT_EQ(v, "20007");
  EXPECT_EQ((*s)->Get(rows, "r99999", &v).code(), StatusCode::kNotFound);
  size_t n = 0;
  ASSERT_TRUE((*s)->Scan(rows, "", "", [&](std::string_view, std::string_view) { return ++n > 0; }).ok());
  EXPECT_EQ(n, 1000u);
  s = Status(StatusCode::kCancelled, "close");
  fs::remove_all(dir);
}

TEST(RocksDbStorageTest, IngestedFilesApplyInOrderAndSurviveReopen) {
  const std::string dir = TempPath("ingest");
  const std::string files = TempPath("files");
  fs::create_directories(files);
  // Writes an SST file of keys [from, to) with values "<tag><i>".
  auto write_file = [&](const std::string& name, int from, int to, const std::string& tag) {
    const std::string path = files + "/" + name;
    auto w = SstFileWriter::Create(path);
    EXPECT_TRUE(w.ok()) << w.status();
    for (int i = from; i < to; ++i) {
      char key[8];
      std::snprintf(key, sizeof(key), "r%05d", i);
      EXPECT_TRUE((*w)->Add(key, tag + std::to_string(i)).ok());
    }
    EXPECT_TRUE((*w)->Finish().ok());
    return path;
  };
  const std::string first = write_file("first.sst", 0, 600, "first");        // r00000..r00599
  const std::string second = write_file("second.sst", 400, 1000, "second");  // overlaps r00400..r00599
  const std::string third = write_file("third.sst", 500, 550, "third");
  const auto first_size = fs::file_size(first);
  std::string first_bytes;
  ASSERT_TRUE(ReadFileInto(first, &first_bytes).ok());
  {
    auto s = RocksDbStorage::Open(dir, RocksDbOptions{});
    ASSERT_TRUE(s.ok()) << s.status();
    const StorageSpace rows = *(*s)->FindSpace("rows");
    const StorageSpace meta = *(*s)->FindSpace("meta");
    StorageBatch b;
    b.Put(rows, "r00000", "written before");
    b.Put(rows, "r99999", "kept");
    ASSERT_TRUE((*s)->Write(b, false).ok());
    ASSERT_TRUE((*s)->IngestFiles(rows, {first, second}).ok());
    // A later call wins over earlier ones, and a Write after it wins over both.
    ASSERT_TRUE((*s)->IngestFiles(rows, {third}).ok());
    ASSERT_TRUE((*s)->IngestFiles(rows, {}).ok());
    b.Clear();
    b.Put(rows, "r00999", "written after");
    ASSERT_TRUE((*s)->Write(b, false).ok());
    std::string v;
    ASSERT_TRUE((*s)->Get(rows, "r00000", &v).ok());
    EXPECT_EQ(v, "first0");
    ASSERT_TRUE((*s)->Get(rows, "r00450", &v).ok());
    EXPECT_EQ(v, "second450");
    ASSERT_TRUE((*s)->Get(rows, "r00520", &v).ok());
    EXPECT_EQ(v, "third520");
    EXPECT_EQ((*s)->Get(meta, "r00520", &v).code(), StatusCode::kNotFound);  // only the given space
    // The files were copied, not moved or changed.
    ASSERT_TRUE(fs::exists(first) && fs::exists(second) && fs::exists(third));
    EXPECT_EQ(fs::file_size(first), first_size);
    std::string now;
    ASSERT_TRUE(ReadFileInto(first, &now).ok());
    EXPECT_TRUE(now == first_bytes);
    // Errors: a missing file (nothing ingested, even from the good file before it), a non-SST file.
    const std::string fourth = write_file("fourth.sst", 2000, 2001, "fourth");
    Status missing = (*s)->IngestFiles(rows, {fourth, files + "/nope.sst"});
    EXPECT_EQ(missing.code(), StatusCode::kNotFound) << missing;
    EXPECT_EQ((*s)->Get(rows, "r02000", &v).code(), StatusCode::kNotFound);
    { std::ofstream(files + "/junk.sst") << std::string(5000, 'j'); }
    EXPECT_EQ((*s)->IngestFiles(rows, {files + "/junk.sst"}).code(), StatusCode::kDataLoss);
    EXPECT_EQ((*s)->IngestFiles(99, {first}).code(), StatusCode::kInvalidArgument);
  }
  auto check = [&](RocksDbStorage* s) {
    const StorageSpace rows = *s->FindSpace("rows");
    std::map<std::string, std::string> all;
    ASSERT_TRUE(s->Scan(rows, "", "", [&](std::string_view k, std::string_view v) {
                   all.emplace(k, v);
                   return true;
                 }).ok());
    ASSERT_EQ(all.size(), 1001u);
    EXPECT_EQ(all["r00000"], "first0");
    EXPECT_EQ(all["r00399"], "first399");
    EXPECT_EQ(all["r00400"], "second400");
    EXPECT_EQ(all["r00499"], "second499");
    EXPECT_EQ(all["r00500"], "third500");
    EXPECT_EQ(all["r00549"], "third549");
    EXPECT_EQ(all["r00550"], "second550");
    EXPECT_EQ(all["r00998"], "second998");
    EXPECT_EQ(all["r00999"], "written after");
    EXPECT_EQ(all["r99999"], "kept");
  };
  auto reopened = RocksDbStorage::Open(dir, RocksDbOptions{});
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  check(reopened->get());
  ASSERT_TRUE((*reopened)->Close().ok());
  // The ingested data does not depend on the caller's files.
  fs::remove_all(files);
  RocksDbOptions ro;
  ro.read_only = true;
  auto read_only = RocksDbStorage::Open(dir, ro);
  ASSERT_TRUE(read_only.ok()) << read_only.status();
  check(read_only->get());
  EXPECT_EQ((*read_only)->IngestFiles(*(*read_only)->FindSpace("rows"), {}).code(),
            StatusCode::kFailedPrecondition);
  read_only = Status(StatusCode::kCancelled, "close");
  fs::remove_all(dir);
}

TEST(MemoryStorageTest, AFailedRunCommitChangesNothing) {
  MemoryStorage m({"a"});
  auto run = m.NewSortedWriter(0);
  ASSERT_TRUE(run.ok());
  ASSERT_TRUE((*run)->Add("k1", "v1").ok());
  ASSERT_TRUE((*run)->Add("k2", "v2").ok());
  m.FailNthWrite(1);
  EXPECT_EQ((*run)->Commit().code(), StatusCode::kUnavailable);
  EXPECT_EQ(m.Count(0), 0u);
}

TEST(MemoryStorageTest, InjectedWriteFailuresChangeNothing) {
  MemoryStorage m({"a"});
  StorageBatch b;
  b.Put(0, "k", "v");
  m.FailNthWrite(2);
  ASSERT_TRUE(m.Write(b, false).ok());
  b.Clear();
  b.Put(0, "k2", "v2");
  EXPECT_EQ(m.Write(b, false).code(), StatusCode::kUnavailable);
  EXPECT_EQ(m.Count(0), 1u);
  EXPECT_TRUE(m.Write(b, false).ok());  // only the nth
  m.FailAllWrites(true);
  EXPECT_FALSE(m.Write(b, false).ok());
  m.FailAllWrites(false);
  // A shared handle sees the same data and outlives this handle's Close.
  auto shared = m.Share();
  ASSERT_TRUE(m.Close().ok());
  std::string v;
  EXPECT_TRUE(shared->Get(0, "k2", &v).ok());
}

}  // namespace
}  // namespace metaps
