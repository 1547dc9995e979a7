// RocksDbStorage: Storage on one RocksDB database, one column family per space.
//
// rocksdb::Status is converted to metaps Status here and never escapes (NotFound -> kNotFound,
// Corruption -> kDataLoss, Busy/TimedOut/TryAgain -> kUnavailable, IOError -> kInternal, ...).
// Write always uses the WAL: a Write that returned OK survives a killed process; `sync` adds fsync.
// NewSortedWriter writes a run into a table file under dir/ingest and ingests it (see the .cc).
// A directory made by Checkpoint is itself a RocksDB database: Open it to read or restore it.
//
// Thread-safety: as Storage (RocksDB is internally synchronized).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/storage.h"

namespace metaps {

struct RocksDbOptions {
  // Spaces (column families) to open, created when missing. The "default" family always exists
  // and is not a space. Default: the spaces a ps::ParamStore uses.
  std::vector<std::string> spaces = {"rows", "log", "meta"};
  // Spaces written append-only and read back only in full (a log): bigger memtables, no
  // compression, no bloom filter. Must be a subset of `spaces`.
  std::vector<std::string> log_spaces = {"log"};
  // Every Write fsyncs (as if called with sync = true). Default: false.
  bool sync = false;
  bool create_if_missing = true;
  // Open without writing anything to `dir` (e.g. to read a checkpoint); Write fails.
  bool read_only = false;
  // Default: 64 MiB per space; log spaces get 2x with up to 4 memtables.
  uint64_t write_buffer_bytes = 64ull << 20;
  // Block cache shared by the spaces. Default: 64 MiB.
  uint64_t block_cache_bytes = 64ull << 20;
  // Background flush/compaction threads. Default: 2.
  int background_jobs = 2;
};

class RocksDbStorage final : public Storage {
 public:
  static Result<std::unique_ptr<RocksDbStorage>> Open(const std::string& dir, const RocksDbOptions& options);
  ~RocksDbStorage() override;

  Result<StorageSpace> FindSpace(std::string_view name) const override;
  Status Get(StorageSpace space, std::string_view key, std::string* value) override;
  Status MultiGet(StorageSpace space, std::span<const std::string_view> keys,
                  const std::function<void(size_t index, std::string_view value)>& found) override;
  Status Write(const StorageBatch& batch, bool sync) override;
  Result<std::unique_ptr<SortedWriter>> NewSortedWriter(StorageSpace space) override;
  Status Scan(StorageSpace space, std::string_view begin, std::string_view end,
              const std::function<bool(std::string_view key, std::string_view value)>& f) override;
  Status Checkpoint(const std::string& dir) override;
  Status Close() override;

  // Adds the entries of the SST files at `paths` (e.g. written by metaps::SstFileWriter) to `space`,
  // in order: a key in a later file, or in a later call, replaces the same key from earlier ones, and
  // a later Write replaces them in turn. Each file is copied into the database (its blocks verified
  // first) and never moved or modified; one ingestion per file, so overlapping files are fine.
  // Durable once it returns OK, as a committed sorted run. An empty list changes nothing.
  // Errors: FailedPrecondition when read-only or closed; NotFound naming the first missing path
  // (checked before anything is ingested); DataLoss for a file that is not a valid SST. A failure
  // part-way leaves the files before the failing one ingested.
  Status IngestFiles(StorageSpace space, const std::vector<std::string>& paths);

  const std::string& dir() const { return dir_; }

  struct Impl;

 private:
  RocksDbStorage(std::string dir, std::unique_ptr<Impl> impl);
  std::string dir_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace metaps
