// RocksDB SST files outside a database: writing one from sorted entries and reading one back.
//
// An SST file written here is a block-based table with RocksDB's default options for it (bytewise
// key order, the default block size, checksums and compression); RocksDbStorage::IngestFiles adds
// such files to a database. rocksdb::Status is converted here and never escapes.
//
// Thread-safety: an SstFileWriter is used by one thread at a time; ScanSstFile is thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace metaps {

// Writes one SST file of keys added in strictly increasing bytewise order. The file is complete
// (and synced) only once Finish returned OK; a writer destroyed before that removes its partial file.
class SstFileWriter {
 public:
  // Creates (or truncates) the file at `path`. Internal/NotFound (e.g. a missing directory) with
  // the path on failure.
  static Result<std::unique_ptr<SstFileWriter>> Create(const std::string& path);
  ~SstFileWriter();

  SstFileWriter(const SstFileWriter&) = delete;
  SstFileWriter& operator=(const SstFileWriter&) = delete;

  // Appends one entry. InvalidArgument (and nothing added) unless `key` is bytewise greater than
  // every earlier key; FailedPrecondition after Finish. Keys and values may hold any bytes.
  Status Add(std::string_view key, std::string_view value);

  // Finishes the file. With no entries RocksDB cannot write a file: then nothing is created (the
  // partial file is removed) and OK is returned. On failure the partial file is removed too.
  // FailedPrecondition when called twice.
  Status Finish();

  // Entries added so far.
  uint64_t entries() const { return entries_; }
  // After a successful Finish: the file's size in bytes (0 when no file was written). Before: 0.
  uint64_t file_bytes() const { return file_bytes_; }
  const std::string& path() const { return path_; }

 private:
  struct Rep;
  SstFileWriter(std::string path, std::unique_ptr<Rep> rep);

  std::string path_;
  std::unique_ptr<Rep> rep_;
  std::string last_key_;
  uint64_t entries_ = 0;
  uint64_t file_bytes_ = 0;
  bool finished_ = false;
};

// Calls f(key, value) for every entry of the SST file at `path` in key order until f returns false.
// The views are valid only during the call. NotFound when the file is missing; DataLoss when it is
// not a valid SST file (bad magic, truncated, a block failing its checksum), naming the path;
// Internal for other I/O errors. Entries already passed to f stay passed when a later block fails.
Status ScanSstFile(const std::string& path, const std::function<bool(std::string_view, std::string_view)>& f);

}  // namespace metaps
