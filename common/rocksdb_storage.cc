#include "common/rocksdb_storage.h"

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <mutex>

#include <unistd.h>

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_writer.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/checkpoint.h>
#include <rocksdb/write_batch.h>

#include "common/internal/rocksdb_util.h"

namespace metaps {

namespace {

using internal::FromRocks;
using internal::ToSlice;
using internal::ToView;

}  // namespace

struct RocksDbStorage::Impl {
  std::unique_ptr<rocksdb::DB> db;
  std::vector<std::string> names;                    // by space index
  std::vector<rocksdb::ColumnFamilyHandle*> handles;  // by space index
  rocksdb::ColumnFamilyHandle* default_handle = nullptr;
  std::mutex close_mu;
  bool sync = false;
  bool closed = false;
  std::string ingest_dir;            // where sorted runs are written before ingestion
  std::atomic<uint64_t> next_run{0};

  Status CheckSpace(StorageSpace space) const {
    if (closed) return FailedPrecondition("rocksdb storage is closed");
    if (space >= handles.size()) return InvalidArgument("storage space " + std::to_string(space) + " out of range");
    return Status::Ok();
  }

  Status DoClose() {
    std::lock_guard<std::mutex> lock(close_mu);
    if (closed || !db) return Status::Ok();
    closed = true;
    Status first;
    for (auto* h : handles) {
      Status s = FromRocks(db->DestroyColumnFamilyHandle(h), "close");
      if (first.ok()) first = s;
    }
    handles.clear();
    if (default_handle) {
      (void)db->DestroyColumnFamilyHandle(default_handle);
      default_handle = nullptr;
    }
    Status s = FromRocks(db->Close(), "close");
    if (first.ok()) first = s;
    db.reset();
    return first;
  }
};

RocksDbStorage::RocksDbStorage(std::string dir, std::unique_ptr<Impl> impl)
    : dir_(std::move(dir)), impl_(std::move(impl)) {}

RocksDbStorage::~RocksDbStorage() { (void)Close(); }

Result<std::unique_ptr<RocksDbStorage>> RocksDbStorage::Open(const std::string& dir, const RocksDbOptions& options) {
  for (const auto& l : options.log_spaces) {
    if (std::find(options.spaces.begin(), options.spaces.end(), l) == options.spaces.end()) {
      return InvalidArgument("rocksdb: log space \"" + l + "\" is not among the spaces");
    }
  }
  if (options.create_if_missing && !options.read_only) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return Internal("rocksdb: cannot create " + dir + ": " + ec.message());
  }
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.create_missing_column_families = options.create_if_missing;
  db_options.max_background_jobs = std::max(1, options.background_jobs);
  db_options.max_total_wal_size = 8 * options.write_buffer_bytes;
  db_options.keep_log_file_num = 4;
  db_options.info_log_level = rocksdb::InfoLogLevel::WARN_LEVEL;
  db_options.max_file_opening_threads = 1;
  // Point reads of uncompressed blocks straight from mapped files: no read syscall, copy or
  // block-cache insertion per miss (the misses of a cache 10x smaller than its table).
  db_options.allow_mmap_reads = true;

  auto cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  rocksdb::BlockBasedTableOptions data_table;
  data_table.block_cache = cache;
  data_table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  data_table.block_size = 4 * 1024;
  // XXH3 block checksums: this RocksDB build's CRC32c is the portable (slow) one, and every
  // block read from the OS page cache is verified.
  data_table.checksum = rocksdb::kXXH3;
  rocksdb::ColumnFamilyOptions data_cf;
  data_cf.write_buffer_size = options.write_buffer_bytes;
  data_cf.max_write_buffer_number = 3;
  // A whole-key Bloom filter per memtable: a point read of a row that is not in a memtable (most
  // misses of a cache much smaller than its table: the memtables hold only the latest write-backs)
  // skips the skiplist search instead of walking ~18 levels of cache misses in each memtable.
  // 2% of the write buffer is ~60 bits per 400-byte row.
  data_cf.memtable_whole_key_filtering = true;
  data_cf.memtable_prefix_bloom_size_ratio = 0.02;
  data_cf.compression = rocksdb::kNoCompression;  // float rows barely compress
  data_cf.target_file_size_base = 64ull << 20;
  data_cf.max_bytes_for_level_base = 256ull << 20;
  data_cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(data_table));
  // L0 -> L1 compaction after 8 flushed files rather than RocksDB's 4. A write-back rewrites
  // every row dirtied since the last (for a uniformly updated table: all of them), so each L0 ->
  // L1 compaction rewrites about the whole of L1; merging twice the L0 files per compaction halves
  // that. Measured on `bench ps` uniform_resident (8-s push phases): the compaction thread's CPU
  // 76-87 against 139-142 ticks, ~0.07 ms less CPU per 10k-row push; point reads of the over-cache
  // cases check a few more L0 Bloom filters and were not slower. The slowdown (20) and stop (36)
  // triggers keep their defaults.
  data_cf.level0_file_num_compaction_trigger = 8;
  // Levels sized from the last one up: a run ingested over rows it replaces is placed in the
  // lowest level it does not overlap, and with static level sizes a small database kept one stale
  // copy of a rewritten table in each of L2..L6 (below their targets, never compacted). Measured
  // with 48 ingested runs of 200k 408-byte rows: 490 MB on disk against 82 MB of rows; with
  // dynamic sizes one copy, and the same CPU.
  data_cf.level_compaction_dynamic_level_bytes = true;

  rocksdb::BlockBasedTableOptions log_table;
  log_table.block_cache = cache;
  log_table.block_size = 256 * 1024;
  log_table.checksum = rocksdb::kXXH3;
  rocksdb::ColumnFamilyOptions log_cf;
  log_cf.write_buffer_size = 2 * options.write_buffer_bytes;
  log_cf.max_write_buffer_number = 4;
  log_cf.compression = rocksdb::kNoCompression;
  log_cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(log_table));

  std::vector<rocksdb::ColumnFamilyDescriptor> descs;
  descs.emplace_back(rocksdb::kDefaultColumnFamilyName, data_cf);
  for (const auto& name : options.spaces) {
    if (name == rocksdb::kDefaultColumnFamilyName) return InvalidArgument("rocksdb: \"default\" cannot be a space");
    bool is_log = std::find(options.log_spaces.begin(), options.log_spaces.end(), name) != options.log_spaces.end();
    descs.emplace_back(name, is_log ? log_cf : data_cf);
  }
  // Families already in the database but not asked for must still be opened.
  std::vector<std::string> existing;
  if (rocksdb::DB::ListColumnFamilies(db_options, dir, &existing).ok()) {
    for (const auto& e : existing) {
      bool listed = false;
      for (const auto& d : descs) listed |= d.name == e;
      if (!listed) descs.emplace_back(e, data_cf);
    }
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  if (options.read_only) {
    db_options.create_if_missing = false;
    db_options.create_missing_column_families = false;
  }
  // Ordered writes (no unordered_write): a batch's memtable inserts then go through the skiplist's
  // sequential-insert hint, which makes a write-back's key-sorted rows cheap to insert; the
  // concurrent insertion that unordered_write forces searches the skiplist from the top for
  // every key (measured: most of the write-back's CPU).
  db_options.unordered_write = false;
  rocksdb::Status s = options.read_only
                          ? rocksdb::DB::OpenForReadOnly(db_options, dir, descs, &handles, &raw)
                          : rocksdb::DB::Open(db_options, dir, descs, &handles, &raw);
  if (!s.ok()) return FromRocks(s, "open " + dir);
  auto impl = std::make_unique<Impl>();
  impl->db.reset(raw);
  impl->default_handle = handles[0];
  for (size_t i = 1; i < handles.size(); ++i) {
    if (i <= options.spaces.size()) {
      impl->names.push_back(options.spaces[i - 1]);
      impl->handles.push_back(handles[i]);
    } else {
      // Unrequested families: keep the handle alive but unreachable as a space.
      impl->names.push_back("");
      impl->handles.push_back(handles[i]);
    }
  }
  impl->sync = options.sync;
  if (!options.read_only) {
    // Runs left by a writer that never committed (a crash) hold nothing anyone needs.
    impl->ingest_dir = dir + "/ingest";
    std::error_code ec;
    std::filesystem::remove_all(impl->ingest_dir, ec);
    std::filesystem::create_directories(impl->ingest_dir, ec);
    if (ec) return Internal("rocksdb: cannot create " + impl->ingest_dir + ": " + ec.message());
  }
  return std::unique_ptr<RocksDbStorage>(new RocksDbStorage(dir, std::move(impl)));
}

Result<StorageSpace> RocksDbStorage::FindSpace(std::string_view name) const {
  for (size_t i = 0; i < impl_->names.size(); ++i) {
    if (!name.empty() && impl_->names[i] == name) return static_cast<StorageSpace>(i);
  }
  return NotFound("storage has no space \"" + std::string(name) + "\"");
}

Status RocksDbStorage::Get(StorageSpace space, std::string_view key, std::string* value) {
  METAPS_RETURN_IF_ERROR(impl_->CheckSpace(space));
  return FromRocks(impl_->db->Get(rocksdb::ReadOptions(), impl_->handles[space], ToSlice(key), value), "get");
}

Status RocksDbStorage::MultiGet(StorageSpace space, std::span<const std::string_view> keys,
                                const std::function<void(size_t, std::string_view)>& found) {
  METAPS_RETURN_IF_ERROR(impl_->CheckSpace(space));
  constexpr size_t kChunk = 1024;  // bounds the pinned memory of one call
  std::vector<rocksdb::Slice> slices(std::min(keys.size(), kChunk));
  std::vector<rocksdb::PinnableSlice> values(slices.size());
  std::vector<rocksdb::Status> statuses(slices.size());
  rocksdb::ReadOptions ro;
  for (size_t base = 0; base < keys.size(); base += kChunk) {
    const size_t n = std::min(kChunk, keys.size() - base);
    for (size_t i = 0; i < n; ++i) slices[i] = ToSlice(keys[base + i]);
    impl_->db->MultiGet(ro, impl_->handles[space], n, slices.data(), values.data(), statuses.data());
    for (size_t i = 0; i < n; ++i) {
      if (statuses[i].ok()) {
        found(base + i, ToView(values[i]));
      } else if (!statuses[i].IsNotFound()) {
        return FromRocks(statuses[i], "multiget");
      }
      values[i].Reset();
    }
  }
  return Status::Ok();
}

namespace {

Status ToWriteBatch(const StorageBatch& batch, const std::vector<rocksdb::ColumnFamilyHandle*>& handles,
                   rocksdb::WriteBatch* wb) {
  Status bad;
  batch.ForEach([&](StorageBatch::Op op, StorageSpace space, std::string_view key, std::string_view value) {
    if (space >= handles.size()) {
      bad = InvalidArgument("storage space " + std::to_string(space) + " out of range");
      return;
    }
    auto* h = handles[space];
    rocksdb::Status s;
    switch (op) {
      case StorageBatch::Op::kPut: s = wb->Put(h, ToSlice(key), ToSlice(value)); break;
      case StorageBatch::Op::kDelete: s = wb->Delete(h, ToSlice(key)); break;
      case StorageBatch::Op::kDeleteRange: s = wb->DeleteRange(h, ToSlice(key), ToSlice(value)); break;
    }
    if (!s.ok() && bad.ok()) bad = FromRocks(s, "batch");
  });
  return bad;
}

}  // namespace

Status RocksDbStorage::Write(const StorageBatch& batch, bool sync) {
  if (impl_->closed) return FailedPrecondition("rocksdb storage is closed");
  rocksdb::WriteBatch wb(batch.ByteSize() + 64);
  METAPS_RETURN_IF_ERROR(ToWriteBatch(batch, impl_->handles, &wb));
  rocksdb::WriteOptions wo;
  wo.sync = sync || impl_->sync;
  return FromRocks(impl_->db->Write(wo, &wb), "write");
}

namespace {

// A table file written with rocksdb::SstFileWriter under ingest/, then ingested (moved into the
// database by a hard link). SstFileWriter::Finish syncs the file and ingestion syncs the link and
// records the file in the (synced) MANIFEST, so a committed run is durable; it gets a sequence
// number above every earlier write, so its rows replace older values. When its key range overlaps
// a memtable, ingestion flushes the memtable first.
class RocksSortedWriter final : public SortedWriter {
 public:
  RocksSortedWriter(RocksDbStorage::Impl* impl, rocksdb::ColumnFamilyHandle* handle, std::string path,
                    const rocksdb::Options& options)
      : impl_(impl),
        handle_(handle),
        path_(std::move(path)),
        // invalidate_page_cache = false: the rows are read back through mmap (misses of a small
        // cache), so dropping the file's pages from the OS cache would turn those reads into disk reads.
        writer_(rocksdb::EnvOptions(), options, handle, false) {}
  ~RocksSortedWriter() override {
    if (opened_ && !ingested_) ::unlink(path_.c_str());
  }

  Status Open() {
    METAPS_RETURN_IF_ERROR(FromRocks(writer_.Open(path_), "sorted run " + path_));
    opened_ = true;
    return Status::Ok();
  }
  Status Add(std::string_view key, std::string_view value) override {
    if (committed_) return FailedPrecondition("sorted run already committed");
    METAPS_RETURN_IF_ERROR(FromRocks(writer_.Put(ToSlice(key), ToSlice(value)), "sorted run"));
    ++count_;
    bytes_ += key.size() + value.size();
    return Status::Ok();
  }
  Status Commit() override {
    if (committed_) return FailedPrecondition("sorted run already committed");
    committed_ = true;
    if (count_ == 0) return Status::Ok();
    if (impl_->closed) return FailedPrecondition("rocksdb storage is closed");
    METAPS_RETURN_IF_ERROR(FromRocks(writer_.Finish(), "sorted run " + path_));
    rocksdb::IngestExternalFileOptions o;
    o.move_files = true;
    METAPS_RETURN_IF_ERROR(FromRocks(impl_->db->IngestExternalFile(handle_, {path_}, o), "ingesting " + path_));
    ingested_ = true;
    ::unlink(path_.c_str());  // moved: normally gone already
    return Status::Ok();
  }
  uint64_t count() const override { return count_; }
  uint64_t bytes() const override { return bytes_; }

 private:
  RocksDbStorage::Impl* impl_;
  rocksdb::ColumnFamilyHandle* handle_;
  std::string path_;
  rocksdb::SstFileWriter writer_;
  uint64_t count_ = 0, bytes_ = 0;
  bool opened_ = false, committed_ = false, ingested_ = false;
};

}  // namespace

Result<std::unique_ptr<SortedWriter>> RocksDbStorage::NewSortedWriter(StorageSpace space) {
  METAPS_RETURN_IF_ERROR(impl_->CheckSpace(space));
  if (impl_->ingest_dir.empty()) return FailedPrecondition("rocksdb storage is read-only");
  rocksdb::ColumnFamilyHandle* h = impl_->handles[space];
  const std::string path = impl_->ingest_dir + "/run-" + std::to_string(impl_->next_run.fetch_add(1)) + ".sst";
  auto w = std::make_unique<RocksSortedWriter>(impl_.get(), h, path, impl_->db->GetOptions(h));
  METAPS_RETURN_IF_ERROR(w->Open());
  return std::unique_ptr<SortedWriter>(std::move(w));
}

Status RocksDbStorage::IngestFiles(StorageSpace space, const std::vector<std::string>& paths) {
  METAPS_RETURN_IF_ERROR(impl_->CheckSpace(space));
  if (impl_->ingest_dir.empty()) return FailedPrecondition("rocksdb storage is read-only");
  for (const auto& path : paths) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) return NotFound("rocksdb ingest: no file " + path);
  }
  rocksdb::IngestExternalFileOptions o;
  o.move_files = false;  // copied: the caller's files stay as they are
  // The sequence number goes into the MANIFEST only, not into the copied file's footer.
  o.write_global_seqno = false;
  o.verify_checksums_before_ingest = true;  // a damaged file is refused, not found later by a read
  for (const auto& path : paths) {
    // One file per call: each call's file gets a sequence number above everything before it, so
    // later files win by construction. (RocksDB 7.8 also orders one call's overlapping files by
    // their place in the list, but its documentation does not promise that.)
    METAPS_RETURN_IF_ERROR(
        FromRocks(impl_->db->IngestExternalFile(impl_->handles[space], {path}, o), "ingesting " + path));
  }
  return Status::Ok();
}

Status RocksDbStorage::Scan(StorageSpace space, std::string_view begin, std::string_view end,
                            const std::function<bool(std::string_view, std::string_view)>& f) {
  METAPS_RETURN_IF_ERROR(impl_->CheckSpace(space));
  rocksdb::ReadOptions ro;
  rocksdb::Slice upper;
  if (!end.empty()) {
    upper = ToSlice(end);
    ro.iterate_upper_bound = &upper;
  }
  std::unique_ptr<rocksdb::Iterator> it(impl_->db->NewIterator(ro, impl_->handles[space]));
  for (it->Seek(ToSlice(begin)); it->Valid(); it->Next()) {
    if (!f(ToView(it->key()), ToView(it->value()))) break;
  }
  return FromRocks(it->status(), "scan");
}

Status RocksDbStorage::Checkpoint(const std::string& dir) {
  if (impl_->closed) return FailedPrecondition("rocksdb storage is closed");
  rocksdb::Checkpoint* raw = nullptr;
  METAPS_RETURN_IF_ERROR(FromRocks(rocksdb::Checkpoint::Create(impl_->db.get(), &raw), "checkpoint"));
  std::unique_ptr<rocksdb::Checkpoint> cp(raw);
  // log_size_for_flush = 0: flush memtables first so the checkpoint needs no WAL replay.
  return FromRocks(cp->CreateCheckpoint(dir, 0), "checkpoint " + dir);
}

Status RocksDbStorage::Close() { return impl_ ? impl_->DoClose() : Status::Ok(); }

}  // namespace metaps
